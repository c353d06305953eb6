"""Inference workers on other hosts (`posestream worker --connect`), over tcp with CurveZMQ, tested
on loopback with separate real processes: a worker that joins a running pipeline gets work and the
output is exact; a worker with an unknown key is refused and logged; a remote worker killed
mid-run loses nothing; nothing listens beyond loopback; `posestream keys`."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_ports, make_clip
from test_workers import lines_of, posestream, summary_of

REPO = Path(__file__).resolve().parents[1]
FAST = ["--input-size", "128", "--quiet"]
N = 40


def popen(*args):
    return subprocess.Popen([sys.executable, "-m", "posestream", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("remote") / "clip.mp4", N)


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "w1.jsonl"
    r = posestream("run", "--source", str(clip), "--jsonl", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    return lines_of(out)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys") / "k"
    r = posestream("keys", str(d), "--worker", "gpu1", timeout=60)
    assert r.returncode == 0, r.stderr
    return d


def test_keys_makes_private_pairs_and_authorizes_the_workers(tmp_path):
    d = tmp_path / "k"
    r = posestream("keys", str(d), "--worker", "a", "--worker", "b", timeout=60)
    assert r.returncode == 0, r.stderr
    for name in ("server", "a", "b"):
        assert stat.S_IMODE((d / f"{name}.key_secret").stat().st_mode) == 0o600
        assert 'secret-key = "' in (d / f"{name}.key_secret").read_text()
        assert "secret-key" not in (d / f"{name}.key").read_text()
    assert sorted(p.name for p in (d / "authorized").iterdir()) == ["a.key", "b.key"]
    from posestream.stream.secure import load_public, load_secret

    assert load_public(d / "a.key") == load_secret(d / "a.key_secret")[0] != load_public(d / "b.key")
    server = (d / "server.key_secret").read_text()
    r = posestream("keys", str(d), "--worker", "a", timeout=60)   # never overwrites a pair
    assert r.returncode == 2 and r.stderr.strip() == f"posestream keys: error: {d / 'a.key_secret'}: exists; " \
                                                     f"not overwritten (remove it to make a new pair)"
    assert (d / "server.key_secret").read_text() == server


def _tcp_listeners(pids) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket the processes ``pids`` hold (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    out = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] != "0A" or f[9] not in inodes:   # 0A: LISTEN
                continue
            host, port = f[1].split(":")
            if v6:
                addr = "::1" if host == "0" * 24 + "01000000" else ("::" if set(host) == {"0"} else host)
            else:
                addr = socket.inet_ntoa(bytes.fromhex(host)[::-1])
            out.add((addr, int(port, 16)))
    return out


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(d))
    return pids


def _wait_lines(path: Path, n: int, timeout=90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < n):
        time.sleep(0.05)


def test_a_worker_joining_mid_run_gets_work_and_the_output_is_exact(clip, reference, keys, tmp_path):
    """Lossless, one local worker; a remote worker (a separate process, tcp on loopback, CurveZMQ)
    joins once frames are out: it takes frames, and the JSONL is the one-worker run's. Meanwhile the
    pipeline's processes listen on 127.0.0.1 only, on exactly the two ports given."""
    port = free_ports(3)
    out = tmp_path / "o.jsonl"
    run = popen("run", "--source", str(clip), "--jsonl", str(out), "--listen", f"tcp://127.0.0.1:{port}",
                "--keys", str(keys), "--infer-delay-ms", "120", *FAST)
    try:
        _wait_lines(out, 5)
        assert len(out.read_text().splitlines()) < N - 10, "the run ended before the worker joined"
        listening = _tcp_listeners(_group_pids(run.pid))
        assert listening == {("127.0.0.1", port), ("127.0.0.1", port + 1)}, listening
        w = subprocess.run([sys.executable, "-m", "posestream", "worker", "--connect", f"tcp://127.0.0.1:{port}",
                            "--keys", str(keys), "--name", "gpu1"], capture_output=True, text=True, timeout=120,
                           cwd=REPO)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, stderr[-2000:]
    assert w.returncode == 0, w.stderr[-2000:]
    assert "posestream worker: joined" in w.stderr and "the run is over" in w.stderr
    done = int(w.stderr.rsplit("; ", 1)[1].split()[0])
    s = summary_of(stdout)
    pool = s["pool"]
    assert pool["remote_joined"] == ["gpu1"] and pool["remote_refused"] == 0
    remote = [k for k in pool["per_worker"] if k.startswith("r:gpu1@")]
    assert len(remote) == 1 and pool["per_worker"][remote[0]] == done > 0, (pool, done)
    assert pool["per_worker"]["w0"] + done == N
    assert s["frames_in"] == s["frames_out"] == N
    assert lines_of(out) == reference


def test_a_worker_with_an_unknown_key_is_refused_and_logged(clip, keys, tmp_path):
    """A key pair the pipeline has not authorized (same server key, so only the worker's side is
    wrong): the handshake is refused, the worker says so and exits 2, the pipeline logs the key
    and the address and carries on with its own worker."""
    port = free_ports(3)
    other = tmp_path / "other"
    r = posestream("keys", str(other), "--worker", "intruder", timeout=60)
    assert r.returncode == 0
    (other / "server.key").write_text((keys / "server.key").read_text())   # the right server, a wrong worker
    out = tmp_path / "o.jsonl"
    run = popen("-v", "run", "--source", str(clip), "--jsonl", str(out), "--listen", f"tcp://127.0.0.1:{port}",
                "--keys", str(keys), "--infer-delay-ms", "60", *FAST)
    try:
        _wait_lines(out, 3)
        w = subprocess.run([sys.executable, "-m", "posestream", "worker", "--connect", f"tcp://127.0.0.1:{port}",
                            "--keys", str(other), "--name", "intruder", "--timeout", "3"], capture_output=True,
                           text=True, timeout=60, cwd=REPO)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert w.returncode == 2
    assert w.stderr.strip().splitlines()[-1] == (
        f"posestream worker: error: tcp://127.0.0.1:{port}: no answer in 3 s: no pipeline listening there, or it "
        f"refused this worker's key ({other / 'intruder.key'} must be in its keys' authorized/ folder)")
    from posestream.stream.secure import load_public

    z85 = load_public(other / "intruder.key").decode()
    assert f"dispatch: refused a connection from 127.0.0.1: key {z85} is not in {keys / 'authorized'}" in stderr
    assert run.returncode == 0
    s = summary_of(stdout)
    assert s["pool"]["remote_refused"] >= 1 and s["pool"]["remote_joined"] == [] and s["frames_out"] == N


def test_a_remote_worker_killed_mid_run_loses_nothing(clip, reference, keys, tmp_path):
    """Lossless: SIGKILL the remote worker while it holds frames; the broker cannot watch a remote
    pid, so the frames it held come back after worker_timeout and go to the local worker."""
    port = free_ports(3)
    out = tmp_path / "o.jsonl"
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"listen: tcp://127.0.0.1:{port}\nkeys: {keys}\nworker_timeout: 1.5\n")
    run = popen("run", "--source", str(clip), "--jsonl", str(out), "--config", str(cfg), "--infer-delay-ms", "120",
                *FAST)
    try:
        _wait_lines(out, 3)
        w = popen("worker", "--connect", f"tcp://127.0.0.1:{port}", "--keys", str(keys), "--name", "gpu1")
        deadline = time.time() + 60
        line = ""
        while time.time() < deadline and "joined" not in line:
            line = w.stderr.readline()
        assert "joined" in line
        time.sleep(0.6)   # it is working on frames now
        os.killpg(w.pid, signal.SIGKILL)
        w.wait(timeout=10)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        for p in (run, w):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert run.returncode == 0, stderr[-2000:]
    s = summary_of(stdout)
    assert s["frames_in"] == s["frames_out"] == N
    pool = s["pool"]
    assert pool["remote_joined"] == ["gpu1"] and len(pool["workers_hung"]) == 1, pool
    assert pool["workers_hung"][0].startswith("r:gpu1@") and pool["sent_again"] >= 1
    assert lines_of(out) == reference


def test_listen_needs_keys_and_the_keys_are_checked_before_anything_runs(clip, tmp_path):
    r = posestream("run", "--source", str(clip), "--listen", "tcp://127.0.0.1:5999", *FAST, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("posestream run: error: --listen: needs keys: the folder made by `posestream keys DIR`")
    r = posestream("run", "--source", str(clip), "--listen", "tcp://127.0.0.1:5999", "--keys", str(tmp_path / "no"),
                   *FAST, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"posestream run: error: --keys: {tmp_path / 'no' / 'server.key_secret'}: no such key file "
        f"(make the keys with `posestream keys {tmp_path / 'no'}`)")
    r = posestream("run", "--source", str(clip), "--listen", "127.0.0.1:5999", "--keys", str(tmp_path), *FAST,
                   timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "posestream run: error: --listen: must be tcp://HOST:PORT, got '127.0.0.1:5999'")


def test_without_listen_nothing_listens_on_tcp(clip, tmp_path):
    out = tmp_path / "o.jsonl"
    run = popen("run", "--source", str(clip), "--jsonl", str(out), "--workers", "2", "--infer-delay-ms", "50", *FAST)
    try:
        _wait_lines(out, 3)
        assert _tcp_listeners(_group_pids(run.pid)) == set()
        run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0


def test_a_remote_capture_feeds_a_source_of_the_pipeline(clip, reference, keys, tmp_path):
    """`--source remote:NAME`: `posestream capture` on "another host" (a separate process, tcp on
    loopback, CurveZMQ) sends the clip; the output is the local run's, frame for frame. A capture
    whose name is not a source of the pipeline is refused with the pipeline's sources named."""
    r = posestream("keys", str(keys), "--worker", "cam1", timeout=60)
    assert r.returncode == 0, r.stderr
    port = free_ports(3)
    out = tmp_path / "o.jsonl"
    run = popen("run", "--source", "remote:cam1", "--jsonl", str(out), "--listen", f"tcp://127.0.0.1:{port}",
                "--keys", str(keys), "--policy", "lossless", *FAST)
    try:
        time.sleep(1.0)
        wrong = posestream("capture", "--connect", f"tcp://127.0.0.1:{port}", "--keys", str(keys), "--name", "gpu1",
                           "--source", str(clip), timeout=60)
        cap = posestream("capture", "--connect", f"tcp://127.0.0.1:{port}", "--keys", str(keys), "--name", "cam1",
                         "--source", str(clip), timeout=120)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1] == (
        f"posestream capture: error: tcp://127.0.0.1:{port}: the pipeline refused this capture: no source "
        f"remote:gpu1 in this pipeline (its remote sources: remote:cam1)")
    assert cap.returncode == 0, cap.stderr
    assert cap.stderr.strip().splitlines()[-1] == f"posestream capture: {N} frame(s) sent"
    assert run.returncode == 0, stderr[-2000:]
    s = summary_of(stdout)
    assert s["frames_in"] == s["frames_out"] == N and s["per_source"][0]["source"] == "remote:cam1"
    assert lines_of(out) == reference


def test_stopping_the_pipeline_ends_a_remote_capture_s_stream(clip, keys, tmp_path):
    """SIGTERM to the pipeline while a remote capture streams at the clip's pace: the broker tells
    the capture, which ends its stream and exits 0; every frame that reached the pipeline is out."""
    r = posestream("keys", str(keys), "--worker", "cam2", timeout=60)
    assert r.returncode == 0, r.stderr
    port = free_ports(3)
    out = tmp_path / "o.jsonl"
    run = popen("run", "--source", "remote:cam2", "--jsonl", str(out), "--listen", f"tcp://127.0.0.1:{port}",
                "--keys", str(keys), "--realtime", *FAST)
    cap = None
    try:
        time.sleep(1.0)
        cap = popen("capture", "--connect", f"tcp://127.0.0.1:{port}", "--keys", str(keys), "--name", "cam2",
                    "--source", str(clip))
        _wait_lines(out, 5)
        os.killpg(run.pid, signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=60)
        c_out, c_err = cap.communicate(timeout=30)
    finally:
        for p in (run, cap):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert cap.returncode == 0, c_err
    assert "(the pipeline stops)" in c_err
    s = summary_of(stdout)
    assert s["signal"] == "SIGTERM" and s["policy"] == "live"
    assert 5 <= s["frames_out"] < N and len(out.read_text().splitlines()) == s["frames_out"]


def test_an_unknown_worker_is_told_to_join_again(clip, keys, tmp_path):
    """A worker the broker does not know (it was dropped, or the pipeline it had joined was
    restarted) gets a bye asking it to say hello again, instead of being ignored for good; a peer
    on the tcp port that poses as the local worker ``w0`` is ignored."""
    import zmq

    from posestream.stream.pool import CONTROL
    from posestream.stream.secure import client_options

    port = free_ports(3)
    out = tmp_path / "o.jsonl"
    run = popen("run", "--source", str(clip), "--jsonl", str(out), "--listen", f"tcp://127.0.0.1:{port}",
                "--keys", str(keys), "--infer-delay-ms", "150", *FAST)
    ctx = zmq.Context()
    try:
        _wait_lines(out, 2)
        answers = {}
        for ident in (b"r:ghost@h:1", b"w0"):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, ident)
            for k, v in client_options(keys / "gpu1.key_secret", keys / "server.key").items():
                s.setsockopt(k, v)
            s.connect(f"tcp://127.0.0.1:{port}")
            s.send(json.dumps({"hb": 1, "credit": 5}).encode())
            if s.poll(10000 if ident.startswith(b"r:") else 2000):
                parts = s.recv_multipart()
                answers[ident] = json.loads(parts[1]) if parts[0] == CONTROL else parts
            s.close()
        stdout, stderr = run.communicate(timeout=120)
    finally:
        ctx.destroy(linger=0)
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    # the ghost is asked to join again; the impostor of the local w0 is ignored (and takes nothing)
    assert answers == {b"r:ghost@h:1": {"bye": "unknown worker: join again (hello first)"}}
    assert run.returncode == 0
    s = summary_of(stdout)
    assert s["frames_out"] == N and list(s["pool"]["per_worker"]) == ["w0"]   # the fake "w0" took nothing
