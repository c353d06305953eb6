"""Live outputs end to end: `posestream run --serve --publish` on a playing clip, watched by a real
headless Chromium, a WebSocket client, `posestream listen` and a Prometheus parser, while a lossless
recording of the same run stays exact."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import av
import cv2
import numpy as np
import pytest
from conftest import REPO, make_clip
from test_web import CHROMIUM, _DevTools


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "posestream", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, **kw)


def _wait_url(p: subprocess.Popen, timeout: float = 90) -> str:
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(r"live view at (http://\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()  # keep draining
            return m.group(1)
    raise AssertionError("no live view URL: " + "".join(seen[-20:]))


def _mp4(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-test-deps.sh installs it)")
def test_browser_websocket_subscriber_and_metrics_on_a_playing_clip(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    clip = make_clip(tmp_path / "clip.mp4", 20, size=(320, 240), fps=10)
    (tmp_path / "loop.yaml").write_text("source_options: {file: {loop: true, realtime: true}}\n")
    web_port, pub_port = _free_port(), _free_port()
    pub = f"tcp://127.0.0.1:{pub_port}"
    p = _run("--source", str(clip), "--config", str(tmp_path / "loop.yaml"), "--policy", "lossless", "--model",
             "lite", "--input-size", "128", "--serve", f"127.0.0.1:{web_port}", "--publish", pub,
             "--record", str(tmp_path / "o.mp4"), "--jsonl", str(tmp_path / "o.jsonl"), "--quiet")
    browser = None
    try:
        url = _wait_url(p)
        listen = subprocess.run([sys.executable, "-m", "posestream", "listen", pub, "--count", "5", "--timeout", "30"],
                                capture_output=True, text=True, cwd=REPO, timeout=60)
        assert listen.returncode == 0, listen.stderr
        got = [json.loads(x) for x in listen.stdout.splitlines()]
        assert len(got) == 5 and all(set(x) >= {"source_id", "frame_id", "people"} for x in got)

        browser = _DevTools(tmp_path / "profile")
        records: list[dict] = []

        async def go():
            async with aiohttp.ClientSession() as c:
                async with c.ws_connect(url.split("?")[0].replace("http://", "ws://").rstrip("/") + "/ws") as ws:
                    await browser.attach(c)
                    await browser.call("Page.enable")
                    await browser.call("Page.navigate", url=url)
                    hud = "JSON.stringify({shown: +document.getElementById('hud-shown').textContent," \
                          " video: (() => { const c = document.getElementById('video-0'); if (!c) return null;" \
                          " const r = c.getBoundingClientRect(); return [r.left, r.right, r.top, r.bottom]; })()})"
                    async def read_hud(more_than: int = 0):
                        # the page may still be loading (the hud element not there yet), or not have
                        # drawn its first frame (a loaded machine): ask again, up to 15 s
                        v = None
                        for _ in range(150):
                            v = await browser.js(hud)
                            if v is not None and json.loads(v)["shown"] > more_than:
                                return json.loads(v)
                            await asyncio.sleep(0.1)
                        raise AssertionError(f"the page's hud never showed more than {more_than} frames: {v}")

                    t_end = time.monotonic() + 6
                    h1 = None
                    while time.monotonic() < t_end:
                        try:
                            m = await ws.receive(timeout=0.2)
                        except asyncio.TimeoutError:
                            continue
                        if m.type == aiohttp.WSMsgType.TEXT:
                            d = json.loads(m.data)
                            if "type" not in d:
                                records.append(d)
                        if h1 is None and len(records) > 20:
                            h1 = await read_hud()
                            shot = await browser.screenshot()
                    h2 = await read_hud(h1["shown"]) if h1 is not None else None
                    metrics = await (await c.get(url.split("?")[0].rstrip("/") + "/metrics")).text()
                    return h1, h2, shot, metrics

        h1, h2, shot, metrics = asyncio.run(asyncio.wait_for(go(), 60))
        assert not browser.errors, browser.errors
    finally:
        if browser is not None:
            browser.close()
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=90)
    assert p.returncode == 130
    s = json.loads(out[out.index("{"):])
    # the lossless recording of the same run is exact: every frame out is in the MP4 and the JSONL
    frames = _mp4(tmp_path / "o.mp4")
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(frames) == len(lines) == s["frames_out"] and [x["frame_id"] for x in lines] == list(range(len(lines)))
    # the WebSocket client got one record per frame, consecutive, equal to the JSONL lines
    ids = [r["frame_id"] for r in records]
    assert len(ids) > 20 and ids == list(range(ids[0], ids[0] + len(ids)))
    assert records == lines[ids[0]:ids[0] + len(ids)]
    # the HUD moved, and the video area shows a frame the pipeline drew (skeletons, HUD and all)
    assert h2["shown"] > h1["shown"] > 0
    left, right, top, bottom = (int(round(v)) for v in h1["video"])
    crop = cv2.resize(shot[top:bottom, left:right], (320, 240), interpolation=cv2.INTER_AREA).astype(np.float32)

    def ncc(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))
    best = max(ncc(crop, f.astype(np.float32)) for f in frames)
    assert best > 0.9, best
    fams = {f.name: f for f in text_string_to_metric_families(metrics)}
    out_total = [smp.value for smp in fams["posestream_frames_out"].samples if smp.name.endswith("_total")]
    assert out_total and out_total[0] > 20
    assert "posestream_stage_latency_seconds" in fams and "posestream_viewers" in fams


@pytest.mark.parametrize("flag,value,needle", [
    ("--serve", "PORT", "address already in use"),
    ("--publish", "tcp://127.0.0.1:PORT", "address already in use"),
    ("--serve", "nohost:notaport", "--serve"),
    ("--publish", "udp://127.0.0.1:5555", "unsupported scheme"),
    ("--stream", "rtsp://127.0.0.1:PORT/live", "cannot push to rtsp://"),
])
def test_live_output_errors_are_one_line_before_the_first_frame(tmp_path, flag, value, needle):
    clip = make_clip(tmp_path / "c.mp4", 3, size=(160, 120))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        if flag == "--stream":  # nothing listens there
            busy.close()
        value = value.replace("PORT", str(port))
        p = _run("--source", str(clip), "--model", "lite", "--input-size", "128", flag, value,
                 "--record", str(tmp_path / "o.mp4"), "--quiet")
        out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("posestream run: error: ") and needle in lines[-1], err
    assert "Traceback" not in err and not (tmp_path / "o.mp4").exists()
