"""`posestream run` end to end, as a user runs it: real processes, real ZeroMQ, real files, a real
RTSP server on loopback, real signals."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import make_clip

REPO = Path(__file__).resolve().parents[1]
VTEST = (REPO / ".." / "shared" / "data" / "videos" / "vtest.avi").resolve()
FAST = ["--input-size", "128", "--quiet"]


@pytest.fixture(scope="module")
def clip40(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "clip40.mp4", 40)


def posestream(*args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "posestream", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kw)


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "posestream", "-v", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def mp4_frames(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = [f.pts for f in c.decode(s)]
        return len(pts), s.codec_context.name, s.codec_context.pix_fmt, pts


def summary_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def test_file_run_keeps_every_frame_in_order(tmp_path, clip40):
    r = posestream("run", "--source", str(clip40), "--record", str(tmp_path / "o.mp4"), "--jsonl",
                   str(tmp_path / "o.jsonl"), *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    s = summary_of(r.stdout)
    assert s["policy"] == "lossless" and s["frames_in"] == s["frames_out"] == 40 and s["frames_dropped"] == 0
    assert s["model"].startswith("movenet_paf") and "RANDOMLY" not in s["model"]  # the shipped model
    n, codec, pix, pts = mp4_frames(tmp_path / "o.mp4")
    assert (n, codec, pix) == (40, "h264", "yuv420p") and all(b > a for a, b in zip(pts, pts[1:]))
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [x["frame_id"] for x in lines] == list(range(40))
    assert all(abs(x["pts"] - i / 10) < 1e-3 for i, x in enumerate(lines))
    for key in ("capture", "infer", "track", "render"):
        assert s["stage_latency_ms"][key]["p50"] is not None
    assert s["capture_to_output_ms"]["p99"] >= s["capture_to_output_ms"]["p50"] > 0
    # start-up timings of every process, seconds after the supervisor started them, in order
    assert set(s["startup_s"]) == {"capture0", "infer", "track", "output"}
    for t in s["startup_s"].values():
        assert 0 < t["main"] <= t["built"] <= t["ready"] < 120


@pytest.mark.parametrize("args,needle", [
    (["--source", "no/such/video.mp4"], "no/such/video.mp4: file not found"),
    (["--source", "README.md"], "README.md: not a video"),
    (["--source", "VTEST", "--model", "missing.pt"], "missing.pt: model file not found"),
    (["--source", "VTEST", "--model", "BADCKPT"], "not a readable checkpoint"),
    (["--source", "VTEST", "--config", "BADCFG"], "bad.yaml:1: infer.modle: unknown infer option 'modle'"),
    (["--source", "rtsp://127.0.0.1:PORT/none", "--config", "RTSPCFG"], "unreachable after 2 attempts"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, needle):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    (tmp_path / "bad.yaml").write_text("infer: {modle: lite}\n")
    (tmp_path / "rtsp.yaml").write_text("source_options: {rtsp: {max_attempts: 2, backoff_initial_s: 0.1}}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subst = {"VTEST": str(VTEST), "BADCKPT": str(bad), "BADCFG": str(tmp_path / "bad.yaml"),
             "RTSPCFG": str(tmp_path / "rtsp.yaml")}
    args = [subst.get(a, a).replace("PORT", str(port)) for a in args]
    r = posestream("run", *args, *FAST, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    err = r.stderr.strip()
    assert needle in err and "Traceback" not in err
    # one error line; anything before it is a log line (e.g. the RTSP source's retry warnings)
    lines = err.splitlines()
    assert lines[-1].startswith("posestream run: error: ") and needle in lines[-1], err
    assert all(" WARNING " in x for x in lines[:-1]), err


def _pids_of(proc, stages, timeout=60):
    """Read the supervisor's log lines until it named every stage's pid (they start in any order)."""
    deadline = time.time() + timeout
    pat = re.compile(r"stage (\w+) ready \(pid (\d+)\)")
    pids, seen = {}, []
    while time.time() < deadline and not set(stages) <= set(pids):
        line = proc.stderr.readline()
        seen.append(line)
        m = pat.search(line)
        if m:
            pids[m.group(1)] = int(m.group(2))
    if not set(stages) <= set(pids):
        raise AssertionError(f"no pid for {set(stages) - set(pids)}: " + "".join(seen[-20:]))
    return pids


def _pid_of(proc, stage, timeout=60):
    return _pids_of(proc, [stage], timeout)[stage], None


def test_sigint_finalises_the_recording_with_every_processed_frame(tmp_path):
    p = start("run", "--source", str(VTEST), "--record", str(tmp_path / "i.mp4"), "--jsonl", str(tmp_path / "i.jsonl"),
              "--infer-delay-ms", "40", *FAST)
    _pids_of(p, ["capture0", "infer", "track", "output"])  # all started: frames are flowing
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    s = summary_of(out)
    assert s["interrupted"] and 0 < s["frames_out"] < 795
    n, codec, _, _ = mp4_frames(tmp_path / "i.mp4")
    lines = (tmp_path / "i.jsonl").read_text().splitlines()
    assert n == len(lines) == s["frames_out"] and codec == "h264"
    assert s["frames_in"] == s["frames_out"]  # lossless: what was captured was written


def test_a_killed_stage_is_detected_and_the_recording_still_finalised(tmp_path):
    p = start("run", "--source", str(VTEST), "--record", str(tmp_path / "k.mp4"), "--jsonl", str(tmp_path / "k.jsonl"),
              "--infer-delay-ms", "40", *FAST)
    pid = _pids_of(p, ["infer", "capture0"])["infer"]
    time.sleep(3)
    os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert "stage infer" in err and "SIGKILL" in err
    s = summary_of(out)
    assert s["failed_stage"] == "infer" and s["frames_out"] > 0
    n, _, _, _ = mp4_frames(tmp_path / "k.mp4")
    assert n == s["frames_out"] == len((tmp_path / "k.jsonl").read_text().splitlines())


def test_live_policy_keeps_latency_bounded_under_slow_inference(tmp_path):
    # a 10 fps camera-paced file, inference slowed to ~150 ms/frame: lossless would fall further
    # behind every frame (latency growing to ~8 s over 80 frames); live must drop and stay bounded
    clip = make_clip(tmp_path / "c80.mp4", 80)
    # the small random `lite`: this is about flow control, the 150 ms are the inference time
    r = posestream("run", "--source", str(clip), "--realtime", "--policy", "live", "--infer-delay-ms", "150",
                   "--model", "lite", "--jsonl", str(tmp_path / "l.jsonl"), *FAST, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    s = summary_of(r.stdout)
    assert s["policy"] == "live" and s["frames_dropped"] > 20
    assert s["frames_in"] == 80 and s["frames_out"] + s["frames_dropped"] == 80
    lat = s["capture_to_output_ms"]
    assert lat["p99"] < 1000, lat  # bounded: a few frame times, never the backlog
    lines = [json.loads(x) for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    ids = [x["frame_id"] for x in lines]
    assert ids == sorted(ids) and len(ids) == s["frames_out"]


def _gst_available():
    return subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _gst_available(), reason="GStreamer RTSP server bindings missing (run scripts/install-test-deps.sh)")
def test_rtsp_ingest_survives_a_server_restart_while_another_source_goes_on(tmp_path):
    clip = make_clip(tmp_path / "r.mp4", 30, fps=10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def serve():
        srv = subprocess.Popen(["/usr/bin/python3", str(REPO / "tests" / "rtsp_server.py"), "--clip", str(clip),
                                "--port", str(port), "--loop"], stdout=subprocess.PIPE, text=True)
        assert "READY" in srv.stdout.readline()
        return srv

    srv = serve()
    cfg = tmp_path / "rtsp.yaml"
    cfg.write_text("source_options: {rtsp: {backoff_initial_s: 0.2, max_attempts: 30, analyze_s: 0.1},\n"
                   "                 file: {loop: true, realtime: true}}\n")
    # source 0: the camera; source 1: a file played like a camera, forever
    p = start("run", "--source", f"rtsp://127.0.0.1:{port}/stream", "--source", str(clip), "--config", str(cfg),
              "--jsonl", str(tmp_path / "r.jsonl"), *FAST)

    def lines_of(src):
        text = (tmp_path / "r.jsonl").read_text() if (tmp_path / "r.jsonl").exists() else ""
        return [x for x in map(json.loads, text.splitlines()) if x["source_id"] == src]

    try:
        _pid_of(p, "capture0")
        deadline = time.time() + 30
        while time.time() < deadline and len(lines_of(0)) < 10:
            time.sleep(0.2)
        srv.kill()
        srv.wait()
        other_before = len(lines_of(1))
        time.sleep(2.0)
        other_during = len(lines_of(1))
        srv = serve()
        deadline = time.time() + 40
        while time.time() < deadline:
            lines = lines_of(0)
            if sum(x["epoch"] >= 1 for x in lines) >= 10:
                break
            time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        srv.kill()
        if p.poll() is None:
            p.kill()
    s = summary_of(out)
    assert s["policy"] == "live" and s["reconnects"] >= 1, err[-2000:]
    cam = s["per_source"][0]
    assert cam["reconnects"] >= 1 and cam["outages"] >= 1 and cam["outage_s"] > 1.0, cam
    assert s["per_source"][1]["outages"] == 0 and s["per_source"][1]["frames_out"] > 0
    assert other_during > other_before  # the file source went on while the camera was away
    lines = lines_of(0)
    epochs = [x["epoch"] for x in lines]
    assert epochs == sorted(epochs) and {0, 1} <= set(epochs)
    ids = [x["frame_id"] for x in lines]
    assert ids == sorted(ids)  # frame ids keep counting across the reconnect


def test_bench_pipeline_reports_both_variants_and_hops():
    r = posestream("bench", "pipeline", "--frames", "15", "--hop-frames", "10", "--json", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["single_process"]["frames"] == res["multi_process"]["frames"] == 15
    assert set(res["hops"]) == {"640x480", "1080p", "4K"}
    assert all(h["hop_ms"] > 0 and h["memcpy_ms"] > 0 for h in res["hops"].values())
    # the end-to-end figures of #15 (recording on; forward pass alone; start-up warm and cold)
    for key in ("fps", "forward_only_fps", "efficiency", "startup_warm_s", "startup_cold_s", "backend", "precision"):
        assert key in res, key
    assert abs(res["efficiency"] - res["fps"] / res["forward_only_fps"]) < 1e-9
    assert res["startup_warm_s"] > 0 and res["startup_cold_s"] > 0 and res["precision"] in ("fp32", "bf16")
