"""docs/deployment: the three hosts' systemd units and the pipeline's YAML are parsed by the real
parsers and checked against each other, then the same three commands run here with the addresses
moved to 127.0.0.1 (separate processes, tcp with CurveZMQ), a clip for the cameras and keys made by
`posestream keys` as the README says."""
import configparser
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import free_ports, make_clip

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "deployment"
UNITS = {"pipeline": "posestream-pipeline.service", "worker": "posestream-worker@.service",
         "listen": "posestream-listen.service"}
N = 24


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str   # systemd keys are case-sensitive
    cp.read_string((DOCS / "systemd" / UNITS[name]).read_text())
    return cp


def exec_start(name: str, instance: str = "gpu1") -> list[str]:
    argv = shlex.split(unit(name)["Service"]["ExecStart"].replace("%i", instance))
    assert argv[0] == "/opt/posestream/.venv/bin/posestream", argv[0]
    return argv[1:]


def parse(argv: list[str]):
    from posestream.stream.cli import build_parser

    return build_parser(argv).parse_args(argv)


def pipeline_yaml() -> dict:
    return yaml.safe_load((DOCS / "pipeline.yaml").read_text())


def test_units_and_config_parse_and_agree_across_hosts():
    for name in UNITS:
        cp = unit(name)
        assert set(cp.sections()) == {"Unit", "Service", "Install"}
        assert cp["Install"]["WantedBy"] == "multi-user.target" and cp["Service"]["User"] == "posestream"
    run, worker, listen = (parse(exec_start(n)) for n in UNITS)
    assert run.command == "run" and worker.command == "worker" and listen.command == "listen"
    assert run.config == "/etc/posestream/pipeline.yaml" and len(run.source) == 2
    assert all(s.startswith("rtsp://") for s in run.source)
    d = pipeline_yaml()
    from posestream.stream.pipeline import PipelineConfig
    from posestream.stream.secure import check_tcp_address

    cfg = PipelineConfig.from_dict(d)   # unknown keys, types and ranges: the real checks
    assert cfg.workers == 0 and cfg.listen and cfg.keys and cfg.batch > 1
    host, port = check_tcp_address(cfg.listen, "listen")
    assert worker.connect == cfg.listen and worker.keys == cfg.keys   # the gpu host reaches the cams host
    assert listen.address == cfg.sink["publish"] and listen.keys == cfg.sink["publish_keys"]
    assert listen.name == "viewer" and cfg.sink["publish_keys"] != cfg.keys
    pub_host, pub_port = check_tcp_address(cfg.sink["publish"], "publish")
    assert pub_host == host and pub_port not in (port, port + 1)
    assert unit("pipeline")["Service"]["KillSignal"] == "SIGTERM"
    readme = (DOCS / "README.md").read_text()
    for p in (port, port + 1, pub_port):
        assert str(p) in readme
    # the worker instance in the unit is one the README makes a key for
    assert "--worker gpu1 --worker gpu2" in readme and "posestream-worker@gpu1" in readme


def _cli(argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "posestream", *argv], cwd=REPO, text=True,
                            start_new_session=True, **kw)


def test_the_deployment_runs_on_loopback(tmp_path):
    """The README's key commands, then the three units' commands with 10.0.0.10 -> 127.0.0.1 (free
    ports), /etc/posestream -> a temporary folder, the cameras -> one clip, lossless (so the count
    is exact), the GPU -> this CPU: the worker joins, every frame is out, and the third host's
    subscriber records the keypoints of every frame from when it is connected."""
    clip = make_clip(tmp_path / "cam.mp4", N)
    etc = tmp_path / "etc"
    for cmd in ("posestream keys keys --worker gpu1 --worker gpu2", "posestream keys viewer-keys --worker viewer"):
        assert cmd in (DOCS / "README.md").read_text()
        argv = shlex.split(cmd)[1:]
        argv[1] = str(etc / argv[1])
        r = subprocess.run([sys.executable, "-m", "posestream", *argv], capture_output=True, text=True, cwd=REPO,
                           timeout=60)
        assert r.returncode == 0, r.stderr
    port = free_ports(3)

    def local(text: str) -> str:
        return (text.replace("10.0.0.10:5555", f"127.0.0.1:{port}").replace("10.0.0.10:5560", f"127.0.0.1:{port + 2}")
                .replace("/etc/posestream", str(etc)).replace("/var/lib/posestream", str(tmp_path)))

    (etc / "pipeline.yaml").write_text(local((DOCS / "pipeline.yaml").read_text()))
    run_argv = [local(a) for a in exec_start("pipeline")]
    i = 0
    argv = []
    while i < len(run_argv):   # the cameras -> the clip
        if run_argv[i] == "--source":
            i += 2
            continue
        argv.append(run_argv[i])
        i += 1
    argv += ["--source", str(clip), "--set", "policy=lossless", "--input-size", "128"]
    worker_argv = [local(a) for a in exec_start("worker")]
    worker_argv[worker_argv.index("--device") + 1] = "auto"
    listen_argv = [local(a) for a in exec_start("listen")]
    out = tmp_path / "keypoints.jsonl"
    procs = []
    try:
        pipe = _cli(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(pipe)
        with open(out, "w") as f:
            lst = _cli(listen_argv, stdout=f, stderr=subprocess.PIPE)
            procs.append(lst)
            time.sleep(1.0)   # the subscriber is connected before the first frame is published
            w = _cli(worker_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(w)
            stdout, stderr = pipe.communicate(timeout=180)
            w_out, w_err = w.communicate(timeout=60)
            deadline = time.time() + 10
            while time.time() < deadline and len(out.read_text().splitlines()) < N:
                time.sleep(0.1)
            os.killpg(lst.pid, signal.SIGTERM)
            lst.wait(timeout=10)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert pipe.returncode == 0, stderr[-2000:]
    assert w.returncode == 0 and "joined" in w_err and "the run is over" in w_err, w_err[-2000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["frames_in"] == s["frames_out"] == N and s["workers"] == 0
    assert s["pool"]["remote_joined"] == ["gpu1"] and s["pool"]["per_worker"] and s["batch"]["size"] == 4
    ids = [json.loads(x)["frame_id"] for x in out.read_text().splitlines()]
    # PUB/SUB: the publisher binds when the outputs open (once the worker joined), so the subscriber's
    # CurveZMQ handshake may finish a few frames in ("slow joiner"); from then on it gets every frame
    assert ids == list(range(ids[0], N)) and ids[0] <= 6, ids
