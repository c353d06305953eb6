"""WebSink: the live browser view (aiohttp server in a background thread). See the package docstring."""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import struct
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
from aiohttp import WSMsgType, web

from posestream.stream.messages import Frame, now_ns
from posestream.stream.sinks import Sink, frame_record
from posestream.stream.web.metrics import SourceMetrics, prometheus_text

__all__ = ["WebSink", "ServeError", "parse_serve"]

LOG = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
_ASSET_NAMES = ("index.html", "style.css", "app.js")  # the only files read, by these fixed names

HUD_INTERVAL_S = 0.5
IDLE_COPY_NS = 1_000_000_000   # without video viewers, keep a still of each source at most once a second
RECORD_QUEUE = 256             # per WebSocket viewer: records not yet sent (a stalled viewer loses the oldest)
PENDING_RECORDS = 1024         # records written but not yet handed to the viewers by the server thread
MAX_CREDITS = 8
MJPEG_SNDBUF = 64 * 1024
CLOSE_TIMEOUT_S = 0.2
PROTOCOL = 1


class ServeError(OSError):
    """The server cannot start (address in use, unknown host): one line, a user error (exit 2)."""

    user_error = True


def parse_serve(spec: str | int, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``--serve`` value -> ``(host, port)``: ``PORT``, ``:PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``.

    Raises:
        ValueError: not one of those forms, or a port outside 0..65535 (0: any free port).
    """
    s = str(spec).strip()
    host, port = default_host, s
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or not s[end + 1:].startswith(":"):
            raise ValueError(f"--serve {s!r}: expected [IPV6]:PORT")
        host, port = s[1:end], s[end + 2:]
    elif ":" in s:
        if s.count(":") > 1:
            raise ValueError(f"--serve {s!r}: an IPv6 address goes in brackets, e.g. [::1]:8080")
        h, port = s.rsplit(":", 1)
        host = h or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--serve {s!r}: the port must be a number in 0..65535")
    return host, int(port)


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (created here, in the caller's thread, so that errors
    surface in :meth:`WebSink.open` as one line)."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"cannot serve on {where}: unknown host ({e.strerror})") from None
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT: a busy port stays an error
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        reason = (e.strerror or str(e)).lower()
        err = ServeError(f"cannot serve on {where}: {reason}")
        err.errno = e.errno
        raise err from None
    return sock


def _is_loopback(sock: socket.socket) -> bool:
    try:
        return ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback
    except ValueError:
        return False


def _public_host(sock: socket.socket, host: str) -> str:
    """The host to put in the printed URL: the given one, or for a wildcard bind this machine's
    address on its default route (no packet is sent), else its hostname."""
    addr = sock.getsockname()[0]
    try:
        wildcard = ipaddress.ip_address(addr.split("%")[0]).is_unspecified
    except ValueError:
        wildcard = False
    if not wildcard:
        return host
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.connect(("10.255.255.255", 9))
            return u.getsockname()[0]
    except OSError:
        return socket.gethostname()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _build_page() -> tuple[bytes, str]:
    """index.html with style.css and app.js inlined (so that ``/`` is the only file served), and the
    Content-Security-Policy that allows exactly those two inline blocks."""
    html, css, js = ((ASSETS / n).read_text(encoding="utf-8") for n in _ASSET_NAMES)
    page = html.replace("/*STYLE*/", css, 1).replace("/*SCRIPT*/", js, 1)
    csp = ("default-src 'none'; " f"script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; "
           "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return page.encode("utf-8"), csp


class _Slot:
    """The newest frame of one source (guarded by the sink's lock)."""

    def __init__(self, source_id: int) -> None:
        self.metrics = SourceMetrics(source_id)
        self.seq = 0                      # frames written (the sink's own per-source counter)
        self.image: np.ndarray | None = None
        self.image_seq = 0                # seq of the frame whose (copied) image is kept
        self.image_meta: dict = {}
        self.t_copy_ns = 0


class _Viewer:
    """One video/WebSocket client (lives in the server thread)."""

    def __init__(self, kind: str, peer: str) -> None:
        self.kind = kind
        self.peer = peer
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = asyncio.current_task()
        self.ws: web.WebSocketResponse | None = None
        self.records: deque[str] = deque()
        self.records_dropped = 0
        self.frames_dropped = 0
        self.credits: dict[int, int] = {}     # subscribed source -> frames it may be sent before its next "ready"
        self.last_seq: dict[int, int] = {}   # source -> seq of the last frame sent
        self.floor: dict[int, int] = {}      # source -> frames written before it subscribed (not its drops)

    def push_record(self, text: str) -> None:
        if len(self.records) >= RECORD_QUEUE:
            self.records.popleft()
            self.records_dropped += 1
        self.records.append(text)


class WebSink(Sink):
    """A live view of the output in a browser: page, video, HUD, ``/ws``, ``/metrics``, ``/healthz``.

    Args:
        host: address to listen on; a non-loopback one (``0.0.0.0``) requires a token (one is
            generated when none is given).
        port: TCP port (0: any free one; see :attr:`port` after :meth:`open`).
        token: access token required on every endpoint but ``/healthz`` (``?token=`` or
            ``Authorization: Bearer``); ``None`` on a loopback host: no token.
        max_viewers: concurrent video / WebSocket clients; more get 503.
        jpeg_quality: 1..100.

    Attributes (after :meth:`open`):
        url: the page's URL, with the token (print it for the user).
        port: the port actually bound.
        token: the token in force (``None``: none).
    """

    name = "web"
    needs_image = True

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, token: str | None = None, max_viewers: int = 8,
                 jpeg_quality: int = 80) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer in 0..65535, got {port!r}")
        if isinstance(max_viewers, bool) or not isinstance(max_viewers, int) or max_viewers < 1:
            raise ValueError(f"max_viewers must be an integer >= 1, got {max_viewers!r}")
        if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be an integer in 1..100, got {jpeg_quality!r}")
        if token is not None and (not isinstance(token, str) or not token.strip() or len(token) > 512):
            raise ValueError("token must be a non-empty string (at most 512 characters)")
        self.host = str(host)
        self.port = port
        self.token = token
        self.max_viewers = max_viewers
        self.jpeg_quality = jpeg_quality
        self.url: str | None = None
        self._lock = threading.Lock()
        self._slots: dict[int, _Slot] = {}
        self._pending: deque[tuple[int, dict | None]] = deque()
        self._pending_dropped = 0
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._closed = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._viewers: set[_Viewer] = set()
        self._n_ws = 0      # read by write() without the lock (an int: atomic under the GIL)
        self._n_video = 0
        self._jpeg_cache: dict[int, tuple[int, asyncio.Future]] = {}
        self._viewer_drops: dict[int, int] = {}
        self.viewers_max = 0
        self.viewers_rejected = 0
        self.jpeg_encoded = 0
        self._meta: dict = {}
        self._page = b""
        self._csp = ""
        self._loopback_only = False
        self._t_start = time.monotonic()

    # ------------------------------------------------------------------------------ sink hooks

    def open(self, meta: dict) -> dict:
        """Bind, start the server thread, wait until it serves.

        Returns ``{"web": {"url", "port", "token_required"}}`` (the output process's metadata, so that
        the supervisor can print the URL: the port bound and the token exist only in this process).

        Raises:
            ServeError: the address cannot be bound (one line: ``cannot serve on HOST:PORT: reason``).
        """
        if self._thread is not None:
            return self._open_meta()
        self._closed = False
        self._page, self._csp = _build_page()
        try:
            json.dumps(meta.get("model") if isinstance(meta, dict) else None)
            self._meta = {"model": meta.get("model")} if isinstance(meta, dict) and meta.get("model") else {}
        except (TypeError, ValueError):
            self._meta = {}
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        loopback = _is_loopback(sock)
        if self.token is None and not loopback:
            self.token = secrets.token_urlsafe(24)
        self._loopback_only = loopback and self.token is None
        base = f"http://{_url_host(_public_host(sock, self.host))}:{self.port}/"
        self.url = base + (f"?token={self.token}" if self.token else "")
        self._base_url = base
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="web-jpeg")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(sock, ready, failure), name="web-sink",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(10.0) or failure:
            self.close()
            err = failure[0] if failure else TimeoutError("server did not start in 10 s")
            raise ServeError(f"cannot serve on {self.host}:{self.port}: {err}") from None
        LOG.info("web view on %s%s", base, " (token required)" if self.token else "")
        return self._open_meta()

    def _open_meta(self) -> dict:
        return {"web": {"url": self.url, "port": self.port, "token_required": self.token is not None}}

    def write(self, frame: Frame) -> None:
        """Keep the newest frame of its source (a copy of the image) and count it; never waits on viewers."""
        if self._closed or self._loop is None:
            return
        t = now_ns()
        sid = int(frame.source_id)
        image = frame.image
        slot = self._slots.get(sid)
        copy = None
        if image is not None and (self._n_video or slot is None or slot.image is None
                                  or t - slot.t_copy_ns >= IDLE_COPY_NS):
            copy = np.array(image, dtype=np.uint8, copy=True, order="C")
        record = frame_record(frame) if self._n_ws else None
        with self._lock:
            if slot is None:
                slot = self._slots[sid] = _Slot(sid)
            slot.metrics.add(frame, t)
            slot.seq += 1
            if copy is not None:
                slot.image, slot.image_seq, slot.t_copy_ns = copy, slot.seq, t
                slot.image_meta = {"source_id": sid, "frame_id": int(frame.frame_id), "epoch": int(frame.epoch),
                                   "t_capture_ns": int(frame.t_capture_ns)}
            if len(self._pending) >= PENDING_RECORDS:
                self._pending.popleft()
                self._pending_dropped += 1
            self._pending.append((sid, record))
            schedule = not self._wake_scheduled
            self._wake_scheduled = True
        if schedule:
            try:
                self._loop.call_soon_threadsafe(self._on_frames)
            except RuntimeError:  # the loop is gone (closing)
                pass

    def end(self, source_id: int) -> None:
        with self._lock:
            slot = self._slots.get(source_id)
            if slot is not None:
                slot.metrics.ended = True

    def close(self) -> None:
        """Stop the server (viewers are disconnected) and its thread; returns within about a second."""
        self._closed = True
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None and self._stop is not None:
            try:
                loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        if thread is not None:
            thread.join(1.5)
            if thread.is_alive():
                LOG.warning("web server thread did not stop in time; left behind (daemon)")
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._thread = None

    def summary(self) -> dict:
        return {"web": {"url": getattr(self, "_base_url", None), "token_required": self.token is not None,
                        "viewers_max": self.viewers_max, "viewer_drops": sum(dict(self._viewer_drops).values()),
                        "viewers_rejected": self.viewers_rejected, "jpeg_encoded": self.jpeg_encoded}}

    # ------------------------------------------------------------------------------ server thread

    def _serve(self, sock: socket.socket, ready: threading.Event, failure: list) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(sock, ready))
        except BaseException as e:  # noqa: BLE001 - reported to open() or logged
            if not ready.is_set():
                failure.append(e)
                ready.set()
            else:
                LOG.error("web server stopped: %s", e)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                sock.close()

    async def _main(self, sock: socket.socket, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._h_page)
        app.router.add_get("/ws", self._h_ws, allow_head=False)
        app.router.add_get(r"/video/{source_id:\d{1,6}}.mjpg", self._h_mjpeg, allow_head=False)
        app.router.add_get("/metrics", self._h_metrics)
        app.router.add_get("/healthz", self._h_healthz)
        app.on_response_prepare.append(self._headers)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            self._loop = asyncio.get_running_loop()
            ready.set()
            await self._stop.wait()
            await self._disconnect_all()
        finally:
            await runner.cleanup()

    async def _disconnect_all(self) -> None:
        viewers = list(self._viewers)
        closes = [asyncio.wait_for(v.ws.close(code=1001, message=b"server shutting down"), CLOSE_TIMEOUT_S)
                  for v in viewers if v.ws is not None and not v.ws.closed]
        if closes:
            await asyncio.gather(*closes, return_exceptions=True)
        for v in viewers:
            if v.task is not None and not v.task.done():
                v.task.cancel()
        tasks = [v.task for v in viewers if v.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)

    def _on_frames(self) -> None:
        """New frames were written: hand their records to the WebSocket viewers, wake every viewer."""
        with self._lock:
            self._wake_scheduled = False
            pending = list(self._pending)
            self._pending.clear()
        ws_viewers = [v for v in self._viewers if v.kind == "ws"]
        if ws_viewers:
            for _, record in pending:
                if record is None:
                    continue
                try:
                    text = json.dumps(record, separators=(",", ":"), allow_nan=False)
                except ValueError:
                    continue
                for v in ws_viewers:
                    v.push_record(text)
        for v in self._viewers:
            v.wake.set()

    # ------------------------------------------------------------------------------ security

    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        given = request.query.get("token")
        if given is None:
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    @staticmethod
    def _loopback_host(host_header: str) -> bool:
        try:
            host = urlsplit("//" + host_header).hostname or ""
        except ValueError:
            return False
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="method not allowed\n")
        # Without a token the server listens on loopback only; a Host that is not a loopback name
        # is a DNS-rebinding page in the user's browser: refuse it.
        if self._loopback_only and not self._loopback_host(request.host):
            return web.Response(status=403, text="forbidden host\n")
        if request.path != "/healthz" and not self._authorized(request):
            return web.Response(status=401, text="token required: ?token=... or Authorization: Bearer ...\n",
                                headers={"WWW-Authenticate": 'Bearer realm="posestream"'})
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h.setdefault("Cache-Control", "no-store")
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        h["X-Frame-Options"] = "DENY"
        h["Cross-Origin-Resource-Policy"] = "same-origin"

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser (browsers always send Origin on a WebSocket handshake)
            return True
        try:
            return urlsplit(origin).netloc.lower() == request.host.lower()
        except ValueError:
            return False

    # ------------------------------------------------------------------------------ viewers

    def _admit(self, kind: str, request: web.Request) -> _Viewer:
        if len(self._viewers) >= self.max_viewers:
            self.viewers_rejected += 1
            raise web.HTTPServiceUnavailable(text=f"too many viewers (max {self.max_viewers})\n",
                                             headers={"Retry-After": "5"})
        v = _Viewer(kind, request.remote or "?")
        self._viewers.add(v)
        if kind == "ws":
            self._n_ws += 1
        else:
            self._n_video += 1
        self.viewers_max = max(self.viewers_max, len(self._viewers))
        return v

    def _release(self, v: _Viewer) -> None:
        if v in self._viewers:
            self._viewers.discard(v)
            if v.kind == "ws":
                self._n_ws -= 1
                if v.credits:
                    self._n_video -= 1
            else:
                self._n_video -= 1

    def _written(self, sid: int) -> int:
        slot = self._slots.get(sid)
        return slot.seq if slot is not None else 0

    def _latest(self, sid: int) -> tuple[int, np.ndarray | None, dict]:
        with self._lock:
            slot = self._slots.get(sid)
            if slot is None:
                return 0, None, {}
            return slot.image_seq, slot.image, slot.image_meta

    async def _jpeg(self, sid: int, seq: int, image: np.ndarray) -> bytes | None:
        """The JPEG of source ``sid``'s frame ``seq``: encoded once (in the encoder thread), shared by
        every viewer that asks for it."""
        cached = self._jpeg_cache.get(sid)
        if cached is None or cached[0] != seq:
            fut = asyncio.get_running_loop().run_in_executor(self._executor, self._encode, image)
            cached = self._jpeg_cache[sid] = (seq, fut)
        try:
            return await asyncio.shield(cached[1])
        except (RuntimeError, concurrent.futures.CancelledError):
            return None

    def _encode(self, image: np.ndarray) -> bytes | None:
        try:
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 and image.shape[2] == 3 else image
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        except cv2.error as e:
            LOG.warning("cannot encode a frame of shape %s as JPEG: %s", image.shape, e)
            return None
        self.jpeg_encoded += 1
        return buf.tobytes() if ok else None

    def _count_skip(self, v: _Viewer, sid: int, seq: int) -> int:
        """Frames of ``sid`` written after the previous one sent to ``v`` (and after it subscribed) that
        it did not get; returns that count."""
        last = v.last_seq.get(sid)
        v.last_seq[sid] = seq
        if last is None:
            return 0
        skipped = max(0, seq - max(last, v.floor.get(sid, 0)) - 1)
        if skipped:
            v.frames_dropped += skipped
            self._viewer_drops[sid] = self._viewer_drops.get(sid, 0) + skipped
        return skipped

    # ------------------------------------------------------------------------------ handlers

    async def _h_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": self._csp})

    async def _h_healthz(self, request: web.Request) -> web.Response:
        t = now_ns()
        with self._lock:
            frames = sum(s.metrics.frames_out for s in self._slots.values())
            last = max((s.metrics.last_write_ns for s in self._slots.values() if s.metrics.last_write_ns), default=None)
        age = None if last is None else round((t - last) / 1e9, 3)
        return web.json_response({"status": "ok", "frames_out": frames, "last_frame_age_s": age})

    def _snapshots(self) -> list[dict]:
        t = now_ns()
        with self._lock:
            return [s.metrics.snapshot(t) for s in self._slots.values()]

    async def _h_metrics(self, request: web.Request) -> web.Response:
        text = prometheus_text(self._snapshots(), len(self._viewers), dict(self._viewer_drops), self.jpeg_encoded,
                               self.viewers_rejected)
        return web.Response(text=text, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _h_mjpeg(self, request: web.Request) -> web.StreamResponse:
        sid = int(request.match_info["source_id"])
        if self._slots and sid not in self._slots:
            raise web.HTTPNotFound(text=f"no source {sid} (sources: {', '.join(map(str, sorted(self._slots)))})\n")
        v = self._admit("mjpeg", request)
        v.floor[sid] = self._written(sid)
        resp = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"})
        sock = request.transport.get_extra_info("socket") if request.transport is not None else None
        if sock is not None:  # a small send buffer: fewer stale frames queued for a slow reader
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MJPEG_SNDBUF)
            except OSError:
                pass
        try:
            await resp.prepare(request)
            await resp.write(b"--frame\r\n")
            while not self._closed:
                v.wake.clear()  # before looking: a frame written from here on sets it again
                seq, image, meta = self._latest(sid)
                if image is None or seq <= v.last_seq.get(sid, 0):
                    try:
                        await asyncio.wait_for(v.wake.wait(), 1.0)
                    except asyncio.TimeoutError:
                        if request.transport is None or request.transport.is_closing():
                            break
                    continue
                data = await self._jpeg(sid, seq, image)
                if data is None:
                    v.last_seq[sid] = seq
                    continue
                self._count_skip(v, sid, seq)
                head = (f"Content-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n"
                        f"X-Source-Id: {sid}\r\nX-Frame-Id: {meta['frame_id']}\r\n"
                        f"X-Capture-Ns: {meta['t_capture_ns']}\r\n\r\n").encode()
                # The boundary right after the image: browsers show a part when its end is seen.
                await resp.write(head + data + b"\r\n--frame\r\n")
            return resp
        except ConnectionError:  # the viewer went away mid-stream
            return resp
        finally:
            self._release(v)

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            raise web.HTTPForbidden(text="cross-origin WebSocket refused\n")
        v = self._admit("ws", request)
        try:
            ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=16 * 1024, autoping=True)
            v.ws = ws
            await ws.prepare(request)
            await ws.send_str(json.dumps(self._hello(), separators=(",", ":")))
            sender = asyncio.create_task(self._ws_sender(ws, v))
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        self._ws_command(v, msg.data)
                    elif msg.type == WSMsgType.ERROR:
                        break
            finally:
                sender.cancel()
                try:
                    await sender
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the connection is gone
                    pass
            return ws
        finally:
            self._release(v)

    def _hello(self) -> dict:
        return {"type": "hello", "protocol": PROTOCOL, "sources": sorted(self._slots), "max_viewers": self.max_viewers,
                "hud_interval_s": HUD_INTERVAL_S, **self._meta}

    def _ws_command(self, v: _Viewer, text: str) -> None:
        """``{"type": "subscribe", "sources": [0, 1], "credits": 2}`` / ``{"type": "ready", "source_id": 0}``."""
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "subscribe":
            sources = msg.get("sources", [])
            credits = msg.get("credits", 2)
            if not isinstance(sources, list) or not isinstance(credits, int) or isinstance(credits, bool):
                return
            credits = max(1, min(MAX_CREDITS, credits))
            had = bool(v.credits)
            v.credits = {int(s): credits for s in sources[:64] if isinstance(s, int) and not isinstance(s, bool)}
            v.last_seq = {s: q for s, q in v.last_seq.items() if s in v.credits}
            v.floor = {s: v.floor.get(s, self._written(s)) for s in v.credits}
            if had != bool(v.credits):
                self._n_video += 1 if v.credits else -1
            v.wake.set()
        elif kind == "ready":
            sid = msg.get("source_id")
            if isinstance(sid, int) and sid in v.credits:
                v.credits[sid] = min(MAX_CREDITS, v.credits[sid] + 1)
                v.wake.set()

    async def _ws_sender(self, ws: web.WebSocketResponse, v: _Viewer) -> None:
        next_hud = 0.0
        while not ws.closed:
            v.wake.clear()  # before looking: anything that arrives from here on sets it again
            while v.records:
                await ws.send_str(v.records.popleft())
            for sid in list(v.credits):
                if v.credits.get(sid, 0) <= 0:
                    continue
                seq, image, meta = self._latest(sid)
                if image is None or seq <= v.last_seq.get(sid, 0):
                    continue
                data = await self._jpeg(sid, seq, image)
                if data is None or sid not in v.credits:
                    v.last_seq[sid] = seq
                    continue
                skipped = self._count_skip(v, sid, seq)
                header = json.dumps({"type": "jpeg", **meta, "age_ms": round((now_ns() - meta["t_capture_ns"]) / 1e6, 3),
                                     "skipped": skipped}, separators=(",", ":")).encode()
                v.credits[sid] -= 1
                await ws.send_bytes(struct.pack(">I", len(header)) + header + data)
            now = time.monotonic()
            if now >= next_hud:
                next_hud = now + HUD_INTERVAL_S
                await ws.send_str(json.dumps(self._hud(v), separators=(",", ":"), allow_nan=False))
            try:
                await asyncio.wait_for(v.wake.wait(), max(0.0, next_hud - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    def _hud(self, v: _Viewer) -> dict:
        sources = {}
        for s in self._snapshots():
            c2o = s["capture_to_output"].percentiles()
            sources[str(s["source_id"])] = {
                "name": s["name"], "size": s["size"], "fps": round(s["fps"], 2), "frames_out": s["frames_out"],
                "frames_dropped": s["frames_dropped"], "reconnects": s["reconnects"], "epoch": s["epoch"],
                "ended": s["ended"], "last_frame_id": s["last_frame_id"],
                "last_frame_age_s": None if s["last_frame_age_s"] is None else round(s["last_frame_age_s"], 3),
                "latency_ms": {k: None if x is None else round(x, 3) for k, x in s["recent_ms"].items()},
                "capture_to_output_ms": {k: None if x is None else round(x, 3) for k, x in c2o.items()},
                "recent": s["recent_points"], "viewer_drops": self._viewer_drops.get(s["source_id"], 0)}
        return {"type": "hud", "uptime_s": round(time.monotonic() - self._t_start, 3), "viewers": len(self._viewers),
                "max_viewers": self.max_viewers, "jpeg_encoded": self.jpeg_encoded, "sources": sources,
                "you": {"frames_dropped": v.frames_dropped, "records_dropped": v.records_dropped}}
