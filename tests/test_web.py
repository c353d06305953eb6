"""The live web view (stream.web.WebSink): a real server on a free port, real HTTP / WebSocket
clients (aiohttp), real JPEG decoding, and a real headless Chromium driven over DevTools."""
from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import aiohttp
import cv2
import numpy as np
import pytest

from posestream.stream.messages import Frame, People, now_ns
from posestream.stream.sinks import frame_record
from posestream.stream.web import ServeError, WebSink, parse_serve

W, H = 320, 240
MAGENTA = (255, 0, 200)


def image(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Dark frame with a magenta rectangle that moves with i."""
    img = np.full((h, w, 3), 30, np.uint8)
    x = 10 + (i * 7) % (w - 80)
    img[h // 3:2 * h // 3, x:x + 60] = MAGENTA
    return img


def frame(i: int, sid: int = 0, epoch: int = 0, frame_id: int | None = None, w: int = W, h: int = H) -> Frame:
    t = now_ns() - 5_000_000
    rng = np.random.default_rng(i)
    kps = np.concatenate([rng.uniform(0, w, (2, 17, 2)), rng.uniform(0, 1, (2, 17, 1))], axis=2).astype(np.float32)
    people = People(kps, np.array([0.9, 0.7], np.float32), np.array([3, 5], np.int64))
    return Frame(sid, i if frame_id is None else frame_id, t, epoch, i / 30, image(i, w, h), people,
                 {"capture": [t, t + 1_000_000], "infer": [t + 1_000_000, t + 4_000_000]},
                 {"source": f"synthetic{sid}", "fps": 30})


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def sink():
    s = WebSink(port=0)
    s.open({})
    yield s
    s.close()


def ws_url(s: WebSink, token: str | None = None) -> str:
    return f"ws://127.0.0.1:{s.port}/ws" + (f"?token={token}" if token else "")


def base(s: WebSink) -> str:
    return f"http://127.0.0.1:{s.port}"


def unpack_jpeg(data: bytes) -> tuple[dict, np.ndarray]:
    n = struct.unpack(">I", data[:4])[0]
    head = json.loads(data[4:4 + n])
    img = cv2.imdecode(np.frombuffer(data[4 + n:], np.uint8), cv2.IMREAD_COLOR)
    return head, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


async def hello(ws) -> dict:
    m = await ws.receive_json()
    assert m["type"] == "hello" and m["protocol"] == 1
    return m


# ------------------------------------------------------------------------------ endpoints


def test_page_is_served_and_nothing_else_on_disk(sink):
    async def go():
        async with aiohttp.ClientSession() as c:
            r = await c.get(base(sink) + "/")
            text = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
            assert "<canvas id=\"chart\"" in text and "new WebSocket" in text and "/*SCRIPT*/" not in text
            assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text  # no CDN
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "connect-src 'self'" in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Cache-Control"] == "no-store"
            for path in ("/app.js", "/style.css", "/index.html", "/assets/app.js", "/assets/", "/../setup.cfg",
                         "/%2e%2e/%2e%2e/setup.cfg", "/video/", "/video/../../setup.cfg", "/static/", "//etc/passwd"):
                r = await c.get(base(sink) + path)
                assert r.status == 404, path
            r = await c.post(base(sink) + "/", data=b"x")
            assert r.status == 405
    run(go())


def test_ws_sends_one_record_per_frame_and_the_jpeg_of_the_newest(sink):
    frames = [frame(i) for i in range(12)]

    async def go():
        async with aiohttp.ClientSession() as c, c.ws_connect(ws_url(sink)) as ws:
            await hello(ws)
            await ws.send_json({"type": "subscribe", "sources": [0], "credits": 1})
            records, jpegs = [], []
            for f in frames:
                sink.write(f)
            while len(records) < len(frames) or not jpegs:
                m = await ws.receive()
                if m.type == aiohttp.WSMsgType.BINARY:
                    jpegs.append(unpack_jpeg(m.data))
                else:
                    d = json.loads(m.data)
                    if "type" not in d:
                        records.append(m.data)
                    else:
                        assert d["type"] == "hud"
            return records, jpegs

    records, jpegs = run(go())
    # exactly the JSON Lines schema, one per frame, in order: byte for byte a JsonlSink line
    assert records == [json.dumps(frame_record(f), separators=(",", ":"), allow_nan=False) for f in frames]
    records = [json.loads(r) for r in records]
    assert all(len(r["people"]) == 2 and len(r["people"][0]["keypoints"]) == 17 for r in records)
    head, img = jpegs[0]
    assert head["type"] == "jpeg" and head["source_id"] == 0
    written = frames[head["frame_id"]].image
    assert img.shape == written.shape
    assert np.abs(img.astype(int) - written).mean() < 3  # equal up to JPEG error


def test_mjpeg_stream_is_decodable_jpeg_of_the_written_frame(sink):
    async def part(reader) -> tuple[dict, bytes]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        h = dict(line.split(": ", 1) for line in head.strip().split("\r\n"))
        data = await reader.readexactly(int(h["Content-Length"]))
        await reader.readuntil(b"--frame\r\n")
        return h, data

    async def go():
        sink.write(frame(0))
        async with aiohttp.ClientSession() as c, c.get(base(sink) + "/video/0.mjpg") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            await r.content.readuntil(b"--frame\r\n")
            first = await part(r.content)
            sink.write(frame(1))
            second = await part(r.content)
            missing = await c.get(base(sink) + "/video/7.mjpg")
            assert missing.status == 404
            return first, second

    parts = run(go())
    for i, (h, data) in enumerate(parts):
        assert h["Content-Type"] == "image/jpeg" and int(h["X-Frame-Id"]) == i
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.abs(img.astype(int) - image(i)).mean() < 3


def test_metrics_parse_with_prometheus_client_and_count_right(sink):
    from prometheus_client.parser import text_string_to_metric_families

    # source 0: frame ids 0..4, then 7..9 (2 dropped upstream), epoch 1 from frame 7 (one reconnect)
    ids = [0, 1, 2, 3, 4, 7, 8, 9]
    for n, fid in enumerate(ids):
        sink.write(frame(n, frame_id=fid, epoch=0 if fid < 7 else 1))
    for n in range(3):
        sink.write(frame(n, sid=1))

    async def go():
        async with aiohttp.ClientSession() as c:
            # a viewer that skips frames: credit 1, frames written while it has not said "ready"
            async with c.ws_connect(ws_url(sink)) as ws:
                await hello(ws)
                await ws.send_json({"type": "subscribe", "sources": [1], "credits": 1})
                while (m := await ws.receive()).type != aiohttp.WSMsgType.BINARY:
                    pass
                for n in range(3, 7):
                    sink.write(frame(n, sid=1))
                await asyncio.sleep(0.2)
                await ws.send_json({"type": "ready", "source_id": 1})
                while (m := await ws.receive()).type != aiohttp.WSMsgType.BINARY:
                    pass
                head, _ = unpack_jpeg(m.data)
                assert head["frame_id"] == 6 and head["skipped"] == 3
                r = await c.get(base(sink) + "/metrics")
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return await r.text()

    text = run(go())
    fams = {f.name: f for f in text_string_to_metric_families(text)}

    def value(family, sample, **labels):
        for s in fams[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise AssertionError(f"no {sample} {labels}")

    assert fams["posestream_frames_out"].type == "counter"
    assert value("posestream_frames_out", "posestream_frames_out_total", source="0") == 8
    assert value("posestream_frames_out", "posestream_frames_out_total", source="1") == 7
    assert value("posestream_frames_dropped", "posestream_frames_dropped_total", source="0") == 2
    assert value("posestream_frames_dropped", "posestream_frames_dropped_total", source="1") == 0
    assert value("posestream_reconnects", "posestream_reconnects_total", source="0") == 1
    assert value("posestream_viewers", "posestream_viewers") == 1
    assert value("posestream_viewer_frames_dropped", "posestream_viewer_frames_dropped_total", source="1") == 3
    assert fams["posestream_stage_latency_seconds"].type == "histogram"
    for stage, ms in (("capture", 1.0), ("infer", 3.0)):
        assert value("posestream_stage_latency_seconds", "posestream_stage_latency_seconds_count",
                     source="0", stage=stage) == 8
        assert value("posestream_stage_latency_seconds", "posestream_stage_latency_seconds_sum",
                     source="0", stage=stage) == pytest.approx(8 * ms / 1000)
        assert value("posestream_stage_latency_seconds", "posestream_stage_latency_seconds_bucket",
                     source="0", stage=stage, le="+Inf") == 8
        # 1 ms and 3 ms: all under 0.00562 s, none under 0.000562 s
        assert value("posestream_stage_latency_seconds", "posestream_stage_latency_seconds_bucket",
                     source="0", stage=stage, le="0.00562341") == 8
        assert value("posestream_stage_latency_seconds", "posestream_stage_latency_seconds_bucket",
                     source="0", stage=stage, le="0.000562341") == 0
    c2o = [s for s in fams["posestream_capture_to_output_seconds"].samples if s.labels.get("source") == "0"]
    buckets = [s.value for s in c2o if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 8
    assert value("posestream_capture_to_output_seconds", "posestream_capture_to_output_seconds_sum",
                 source="0") >= 8 * 0.005  # frames were stamped 5 ms before write()


def test_healthz_is_open_and_reports_frames():
    s = WebSink(port=0, token="s3cret")
    s.open({})
    try:
        async def go():
            async with aiohttp.ClientSession() as c:
                r = await c.get(base(s) + "/healthz")
                assert r.status == 200
                assert await r.json() == {"status": "ok", "frames_out": 0, "last_frame_age_s": None}
                s.write(frame(0))
                s.write(frame(1))
                d = await (await c.get(base(s) + "/healthz")).json()
                assert d["frames_out"] == 2 and 0 <= d["last_frame_age_s"] < 5
        run(go())
    finally:
        s.close()


# ------------------------------------------------------------------------------ security


def test_token_is_checked_on_every_endpoint():
    s = WebSink(port=0, token="s3cret")
    s.open({})
    try:
        assert s.url == f"http://127.0.0.1:{s.port}/?token=s3cret"
        s.write(frame(0))

        async def go():
            async with aiohttp.ClientSession() as c:
                for path in ("/", "/metrics", "/video/0.mjpg", "/ws", "/nothing"):
                    r = await c.get(base(s) + path)
                    assert r.status == 401, path
                    r = await c.get(base(s) + path + "?token=wrong")
                    assert r.status == 401, path
                    r = await c.get(base(s) + path, headers={"Authorization": "Bearer nope"})
                    assert r.status == 401, path
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    await c.ws_connect(ws_url(s))
                assert e.value.status == 401
                for path in ("/", "/metrics"):
                    assert (await c.get(base(s) + path + "?token=s3cret")).status == 200
                    assert (await c.get(base(s) + path, headers={"Authorization": "Bearer s3cret"})).status == 200
                async with c.get(base(s) + "/video/0.mjpg?token=s3cret") as r:
                    assert r.status == 200
                async with c.ws_connect(ws_url(s, "s3cret")) as ws:
                    await hello(ws)
                async with c.ws_connect(ws_url(s), headers={"Authorization": "Bearer s3cret"}) as ws:
                    await hello(ws)
                # a page of another site cannot open the WebSocket, even with the token
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    await c.ws_connect(ws_url(s, "s3cret"), origin="http://evil.example")
                assert e.value.status == 403
        run(go())
    finally:
        s.close()


def test_non_loopback_bind_generates_a_token():
    s = WebSink(host="0.0.0.0", port=0)
    meta = s.open({})
    try:
        assert s.token and len(s.token) >= 20
        assert meta == {"web": {"url": s.url, "port": s.port, "token_required": True}}  # for the supervisor
        assert s.url.endswith(f":{s.port}/?token={s.token}")
        assert s.summary()["web"]["token_required"] is True and s.token not in json.dumps(s.summary())

        async def go():
            async with aiohttp.ClientSession() as c:
                assert (await c.get(base(s) + "/")).status == 401
                assert (await c.get(base(s) + "/?token=" + s.token)).status == 200
        run(go())
    finally:
        s.close()
    other = WebSink(host="0.0.0.0", port=0)
    other.open({})
    other.close()
    assert other.token != s.token


def test_loopback_without_token_refuses_foreign_host_headers(sink):
    assert sink.token is None and sink.url == f"http://127.0.0.1:{sink.port}/"

    async def go():
        async with aiohttp.ClientSession() as c:
            assert (await c.get(base(sink) + "/", headers={"Host": f"localhost:{sink.port}"})).status == 200
            assert (await c.get(base(sink) + "/", headers={"Host": "attacker.example"})).status == 403  # DNS rebinding
    run(go())


def test_port_in_use_or_bad_host_is_a_one_line_error_at_open():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        s = WebSink(port=port)
        with pytest.raises(ServeError) as e:
            s.open({})
        msg = str(e.value)
        assert msg == f"cannot serve on 127.0.0.1:{port}: address already in use"
        assert isinstance(e.value, OSError) and e.value.user_error and "\n" not in msg
        s.close()
    with pytest.raises(ServeError, match=r"^cannot serve on no-such-host\.invalid:8080: unknown host"):
        WebSink(host="no-such-host.invalid").open({})
    with pytest.raises(ValueError):
        WebSink(port=70000)


def test_parse_serve():
    assert parse_serve("8080") == ("127.0.0.1", 8080)
    assert parse_serve(":9000") == ("127.0.0.1", 9000)
    assert parse_serve("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_serve("[::1]:8080") == ("::1", 8080)
    for bad in ("host:", "x", "1:2:3", "99999", "[::1]"):
        with pytest.raises(ValueError):
            parse_serve(bad)


# ------------------------------------------------------------------------------ viewers


def test_more_than_max_viewers_get_503():
    s = WebSink(port=0, max_viewers=2)
    s.open({})
    s.write(frame(0))
    try:
        async def go():
            async with aiohttp.ClientSession() as c:
                a = await c.ws_connect(ws_url(s))
                b = await c.get(base(s) + "/video/0.mjpg")
                assert b.status == 200
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    await c.ws_connect(ws_url(s))
                assert e.value.status == 503
                r = await c.get(base(s) + "/video/0.mjpg")
                assert r.status == 503
                assert (await c.get(base(s) + "/metrics")).status == 200  # not a viewer
                await a.close()
                for _ in range(50):  # the server notices the close
                    async with c.get(base(s) + "/metrics") as m:
                        if "posestream_viewers 1\n" in await m.text():
                            break
                    await asyncio.sleep(0.05)
                async with c.ws_connect(ws_url(s)) as again:
                    await hello(again)
                b.close()
        run(go())
        assert s.summary()["web"]["viewers_max"] == 2 and s.summary()["web"]["viewers_rejected"] == 2
    finally:
        s.close()


def test_write_never_waits_on_stalled_or_vanishing_viewers():
    s = WebSink(port=0, max_viewers=4)
    s.open({})
    big = [frame(i, w=640, h=480) for i in range(3)]
    for f in big:  # incompressible content: every JPEG is large, the stalled socket fills fast
        f.image = np.random.default_rng(0).integers(0, 255, f.image.shape, dtype=np.uint8)
    s.write(big[0])
    try:
        # a viewer that never reads: MJPEG on a raw socket with a tiny receive buffer
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", s.port))
        stalled.sendall(b"GET /video/0.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        # a viewer that goes away mid-stream
        gone = socket.create_connection(("127.0.0.1", s.port))
        gone.sendall(b"GET /video/0.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert gone.recv(100).startswith(b"HTTP/1.1 200")
        times = []
        for i in range(150):
            if i == 20:
                gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                gone.close()  # RST
            t0 = time.perf_counter()
            s.write(big[i % 3])
            times.append(time.perf_counter() - t0)
            time.sleep(0.004)
        # returned every time while a viewer was stalled (a generous bound; typically well under 1 ms)
        assert max(times) < 0.25, max(times)
        assert sorted(times)[len(times) // 2] < 0.02

        async def go():
            async with aiohttp.ClientSession() as c:
                for _ in range(60):
                    text = await (await c.get(base(s) + "/metrics")).text()
                    if "posestream_viewers 1\n" in text:
                        return text
                    await asyncio.sleep(0.05)
                return text
        text = run(go())
        assert "posestream_viewers 1\n" in text  # the vanished one is gone, the stalled one still counted
        assert 'posestream_frames_out_total{source="0"} 151' in text
        t0 = time.perf_counter()
        s.close()
        assert time.perf_counter() - t0 < 1.0  # with the stalled viewer still connected
        stalled.close()
    finally:
        s.close()


def test_close_is_prompt_and_disconnects_viewers():
    s = WebSink(port=0)
    s.open({})
    s.write(frame(0))
    result = {}

    async def go():
        async with aiohttp.ClientSession() as c:
            ws = await c.ws_connect(ws_url(s))
            await hello(ws)
            mj = await c.get(base(s) + "/video/0.mjpg")
            await mj.content.readuntil(b"--frame\r\n")
            t0 = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(None, s.close)
            result["close_s"] = time.perf_counter() - t0
            while True:
                m = await ws.receive()
                if m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    break
            result["close"] = (m.type, m.data)  # the close frame the server sent
            mj.close()
    run(go())
    assert result["close_s"] < 1.0
    assert result["close"] == (aiohttp.WSMsgType.CLOSE, 1001), result  # "going away"
    assert s._thread is None and not any(t.name == "web-sink" and t.is_alive() for t in threading.enumerate())
    with socket.socket() as again:  # the port is free again
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", s.port))
    s.write(frame(1))  # after close: ignored, no error
    s.close()
    assert set(s.summary()["web"]) >= {"url", "viewers_max", "viewer_drops", "jpeg_encoded"}


# ------------------------------------------------------------------------------ a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _DevTools:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, profile) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--no-first-run",
             "--no-default-browser-check", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        found: list[str] = []
        got = threading.Event()

        def read():
            for line in self.proc.stderr:
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                if m and not found:
                    found.append(m.group(1))
                    got.set()
        threading.Thread(target=read, daemon=True).start()
        if not got.wait(30):
            self.close()
            pytest.fail("chromium did not start its DevTools server in 30 s")
        self.port = int(re.match(r"ws://[^:]+:(\d+)/", found[0]).group(1))
        self.errors: list[str] = []
        self._id = 0

    async def attach(self, session: aiohttp.ClientSession) -> None:
        pages = await (await session.get(f"http://127.0.0.1:{self.port}/json/list")).json()
        page = next(p for p in pages if p["type"] == "page")
        self.ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Runtime.enable")
        await self.call("Log.enable")

    async def call(self, method: str, **params):
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            m = await self.ws.receive_json()
            if m.get("method") == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(m["params"])[:300])
            elif m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error":
                self.errors.append(m["params"]["entry"]["text"][:300])
            elif m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] == "error":
                self.errors.append(json.dumps(m["params"]["args"])[:300])
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    async def js(self, expr: str):
        return (await self.call("Runtime.evaluate", expression=expr, returnByValue=True))["result"].get("value")

    async def screenshot(self) -> np.ndarray:
        png = base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"])
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def magenta_box(shot: np.ndarray):
    m = (shot[..., 0] > 200) & (shot[..., 1] < 70) & (shot[..., 2] > 150) & (shot[..., 2] < 240)
    ys, xs = np.nonzero(m)
    return (int(m.sum()), float(xs.mean()) if xs.size else None, (xs.min(), xs.max(), ys.min(), ys.max()) if xs.size
            else None)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-test-deps.sh installs it)")
def test_headless_chromium_shows_the_video_and_a_live_hud(tmp_path):
    s = WebSink(port=0, token="browser-token")
    s.open({})
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            s.write(frame(i, w=640, h=360))
            i += 1
            time.sleep(1 / 30)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    browser = _DevTools(tmp_path / "profile")
    hud_expr = ("JSON.stringify({shown: +document.getElementById('hud-shown').textContent,"
                " frames: +(document.getElementById('hud-0-frames_out') || {}).textContent || 0,"
                " fps: (document.getElementById('hud-0-fps') || {}).textContent,"
                " viewers: document.getElementById('hud-viewers').textContent,"
                " status: document.getElementById('status').textContent,"
                " video: (() => { const c = document.getElementById('video-0');"
                "   if (!c) return null; const r = c.getBoundingClientRect();"
                "   return [r.left, r.right, r.top, r.bottom]; })()})")
    try:
        async def go():
            async with aiohttp.ClientSession() as c:
                await browser.attach(c)
                await browser.call("Page.enable")
                await browser.call("Page.navigate", url=s.url)
                hud1 = None
                for _ in range(100):  # up to 10 s for the first frames on a busy machine
                    await asyncio.sleep(0.1)
                    hud1 = json.loads(await browser.js(hud_expr))
                    if hud1["shown"] >= 3 and hud1["frames"] > 0:
                        break
                shot1 = await browser.screenshot()
                await asyncio.sleep(2.0)
                hud2 = json.loads(await browser.js(hud_expr))
                shot2 = await browser.screenshot()
                return hud1, hud2, shot1, shot2

        hud1, hud2, shot1, shot2 = run(go(), timeout=40)
    finally:
        browser.close()
        stop.set()
        feeder.join(2)
        s.close()
    assert not browser.errors, browser.errors  # no script errors, no CSP violations
    assert hud1["status"] == "live" and hud1["viewers"].startswith("1/")
    assert hud1["shown"] >= 3, hud1
    # the HUD is live: frames shown and counted went up while the page stayed open
    assert hud2["shown"] > hud1["shown"] and hud2["frames"] > hud1["frames"], (hud1, hud2)
    assert float(hud2["fps"]) > 5
    # the video area shows the written frame: the magenta rectangle, inside the video canvas
    left, right, top, bottom = hud2["video"]
    for shot in (shot1, shot2):
        n, _, box = magenta_box(shot)
        scale = (right - left) / 640
        assert n > 0.5 * (60 * scale) * (120 * scale), n  # about the rectangle's area at the displayed scale
        x0, x1, y0, y1 = box
        assert left - 1 <= x0 and x1 <= right + 1 and top - 1 <= y0 and y1 <= bottom + 1
    assert magenta_box(shot1)[1] != magenta_box(shot2)[1]  # and it moves: live video
