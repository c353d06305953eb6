"""Lifecycle under signals and faults, with real processes: SIGINT, SIGTERM (to the supervisor or the
whole process group, as systemd and Docker send it), SIGHUP, and a supervisor killed outright.
Every case must leave a playable MP4 with every frame that reached the output, the right exit
status, and nothing in /dev/shm or the temporary folder."""
from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from posestream.stream.transport import _folder_hash

REPO = Path(__file__).resolve().parents[1]
VTEST = (REPO / ".." / "shared" / "data" / "videos" / "vtest.avi").resolve()
FAST = ["--input-size", "128"]


def _start(tmp: Path, *args, session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp)}  # the pipeline's private folder goes here
    return subprocess.Popen([sys.executable, "-m", "posestream", "-v", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env, start_new_session=session)


def _pids(proc, names, timeout=90) -> dict[str, int]:
    pat = re.compile(r"stage (\w+) ready \(pid (\d+)\)")
    pids: dict[str, int] = {}
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline and not set(names) <= set(pids):
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        m = pat.search(line)
        if m:
            pids[m.group(1)] = int(m.group(2))
    assert set(names) <= set(pids), "".join(seen[-20:])
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(x for x in f if x.startswith("State:"))
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return False
    return " Z " not in state and "zombie" not in state


def _private_folder(tmp: Path) -> Path:
    found = list(tmp.glob("posestream-*"))
    assert len(found) == 1, found
    return found[0]


def _mp4_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _nothing_left(tmp: Path, folder_hash: str) -> None:
    assert list(tmp.glob("posestream-*")) == []
    assert glob.glob(f"/dev/shm/psring-{folder_hash}-*") == []


def _summary(out: str) -> dict:
    return json.loads(out[out.index("{"):])


@pytest.mark.parametrize("how,code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129), ("group SIGTERM", 143)])
def test_stop_signals_finalise_the_recording(tmp_path, how, code):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    p = _start(tmp, "run", "--source", str(VTEST), "--record", str(out / "r.mp4"), "--jsonl", str(out / "r.jsonl"),
               "--infer-delay-ms", "30", "--model", "lite", *FAST, session=how.startswith("group"))
    pids = _pids(p, ["capture0", "infer", "track", "output"])
    folder_hash = _folder_hash(str(_private_folder(tmp)))
    time.sleep(2.5)
    sig = getattr(signal, how.split()[-1])
    if how.startswith("group"):
        os.killpg(p.pid, sig)  # what systemctl stop / docker stop do: every process of the group
    else:
        p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == code, stderr[-2000:]
    s = _summary(stdout)
    assert s["interrupted"] and s["signal"] == how.split()[-1] and s["failed_stage"] is None, s
    assert 0 < s["frames_out"] < 795
    assert s["frames_in"] == s["frames_out"]  # lossless: every captured frame was written
    assert _mp4_frames(out / "r.mp4") == s["frames_out"] == len((out / "r.jsonl").read_text().splitlines())
    assert not any(_alive(pid) for pid in pids.values())
    _nothing_left(tmp, folder_hash)


def test_a_killed_supervisor_takes_every_stage_down_within_a_second(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    p = _start(tmp, "run", "--source", str(VTEST), "--record", str(out / "k.mp4"), "--jsonl", str(out / "k.jsonl"),
               "--infer-delay-ms", "30", "--model", "lite", *FAST)
    pids = _pids(p, ["capture0", "infer", "track", "output"])
    folder_hash = _folder_hash(str(_private_folder(tmp)))
    time.sleep(2.5)
    t0 = time.monotonic()
    p.kill()  # SIGKILL: no handler runs in the supervisor
    p.wait()
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    took = time.monotonic() - t0
    left = {n: pid for n, pid in pids.items() if _alive(pid)}
    assert not left, f"still running after {took:.2f} s: {left}"
    assert took < 1.0, f"stages took {took:.2f} s to go"
    # the output stage finalised what it had: a playable file, one JSONL line per frame in it
    n = _mp4_frames(out / "k.mp4")
    assert n > 0 and n == len((out / "k.jsonl").read_text().splitlines())
    _nothing_left(tmp, folder_hash)


def test_status_lines_end_with_newlines_when_stderr_is_not_a_terminal(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "posestream", "run", "--source", str(VTEST), "--model", "lite",
                          "--infer-delay-ms", "20", *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)})
    lines = []
    deadline = time.time() + 90
    while time.time() < deadline:
        line = p.stderr.readline()
        lines.append(line)
        if re.match(r"frames\s+[1-9]\d*\s", line):
            break
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    status = [x for x in lines if x.startswith("frames")]
    assert status and all(x.endswith("\n") and "\r" not in x for x in status), lines[-5:]
