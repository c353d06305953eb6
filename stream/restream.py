"""Push the annotated video, H.264, to a media server: RTSP (``rtsp://``) or RTMP (``rtmp://``).

:class:`RestreamSink` publishes the rendered frames as a live stream to a server that already
runs (MediaMTX, nginx-rtmp, SRS, Wowza, YouTube / Twitch ingest, or ``ffmpeg -rtsp_flags listen``
/ ``ffmpeg -f flv -listen 1``): RTSP with ANNOUNCE/RECORD over TCP (PyAV format ``rtsp``,
``rtsp_transport=tcp``), RTMP as FLV (PyAV format ``flv``). Players then read it from the server.

Sources: one sink pushes one URL. With several sources only source 0 is pushed, unless the URL
contains ``{source}``: then each source gets its own push, to the URL with ``{source}`` replaced
by its id (``rtsp://server:8554/cam{source}`` -> ``.../cam0``, ``.../cam1``).

Never in the way of the pipeline: :meth:`RestreamSink.write` copies the frame into a one-frame
slot and returns; a background thread per push encodes the newest frame and sends it. A frame
replaced in the slot before the thread took it, or taken while the server is away, is dropped
(counted in ``dropped``), so a slow or dead server costs frames, never latency.

Timing: a frame's timestamp is its ``pts`` (for a live source the capture time since the
stream's start; for a file its own time), or with ``clock="capture"`` its capture clock
(``t_capture_ns``): a file processed faster than real time then streams at the speed it is
processed instead of announcing timestamps ahead of the wall clock (``posestream run
--realtime`` reads files at their own pace, which suits the default too). Each connection starts
at 0; after a new epoch (a camera reconnected) the timestamps continue one frame interval after
the last one; a timestamp that does not increase is moved one tick after the previous one.

Encoding: libx264, ``tune=zerolatency`` (no B-frames, no look-ahead), a keyframe every ``gop``
frames (default: one per second, ``gop = fps``), yuv420p tagged BT.601 limited range (like
:class:`stream.sinks.Mp4Writer`), an odd width or height padded by one pixel. Quality: constant
``crf`` by default, or ``bitrate`` (bits/s, with a one-second VBV buffer, what ingest services
expect). SPS/PPS travel in band before every keyframe, so a player can join at any keyframe.

Connection: :meth:`RestreamSink.open` connects once, with ``open_timeout_s``, so that an
unreachable server fails the run before its first frame (:class:`RestreamError`, one line:
``cannot push to rtsp://host:8554/live: connection refused``). That connection is the one the
stream then uses (``ffmpeg -listen`` receivers accept a single connection). Its headers are
written before the first frame is known, with the size given as ``size`` or a 16x16 placeholder:
RTSP announces no size (players read it from the SPS); for RTMP the size in ``onMetaData`` is
that placeholder on the first connection (reconnections announce the real size), and FFmpeg's
FLV muxer writes an empty AVC sequence header there, then the real one with the first keyframe
(FFmpeg's receiver uses the later one; other servers untested). Once streaming, a lost server is retried with
exponential backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``), for ever; every
new connection starts a new encoder, so the stream restarts with a keyframe, and a successful one
counts in ``reconnects``. :meth:`RestreamSink.close` sends what is pending, flushes and
disconnects, within ``close_timeout_s``.

Limits: PyAV holds the GIL while FFmpeg connects (its ``avio_open`` and header write are not run
without it), so a connection attempt stalls the whole output process while it lasts: normally
milliseconds (a refused connection, a server that answers); for RTSP at most ``open_timeout_s``
(passed to FFmpeg as the socket ``timeout``); FFmpeg's RTMP client takes no timeout, so an RTMP
server that accepts the TCP connection but never answers the handshake stalls it until that
connection ends. Once connected, sending runs without the GIL: a server that stops reading stalls
only its push thread (frames are dropped; ``write`` stays instant). A host name is resolved in
the push thread first (a name that does not resolve fails there, without FFmpeg); FFmpeg then
resolves it again itself.
"""
from __future__ import annotations

import logging
import math
import numbers
import socket
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import urlsplit

import av
import cv2
import numpy as np

from posestream.stream.messages import Frame
from posestream.stream.sinks import Sink

__all__ = ["RestreamSink", "RestreamError", "UrlError", "check_url", "CONTAINER_FORMATS"]

LOG = logging.getLogger(__name__)

CONTAINER_FORMATS = {"rtsp": "rtsp", "rtmp": "flv"}
_DEFAULT_PORTS = {"rtsp": 554, "rtmp": 1935}
_X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_PLACEHOLDER_SIZE = (16, 16)
_DEFAULT_FPS = 30.0
# H.264 colour tags matching swscale's default RGB -> YUV (BT.601, limited range)
_AVCOL_SPC_SMPTE170M = 6
_AVCOL_RANGE_MPEG = 1


class UrlError(ValueError):
    """A URL this sink cannot push to (scheme, host, placeholder): one line, a user error."""

    user_error = True


class RestreamError(OSError):
    """The media server cannot be reached when the sink opens: one line, a user error."""

    user_error = True


def check_url(url: str) -> str:
    """Check a push URL; returns its scheme (``rtsp`` or ``rtmp``).

    Raises:
        UrlError: another scheme, no host, a bad port, or braces other than ``{source}``.
    """
    if not isinstance(url, str) or not url.strip():
        raise UrlError(f"stream URL must be rtsp://HOST[:PORT]/PATH or rtmp://HOST[:PORT]/APP/KEY, got {url!r}")
    url = url.strip()
    probe = url.replace("{source}", "0")
    if "{" in probe or "}" in probe:
        raise UrlError(f"stream URL {url!r}: the only placeholder is {{source}}")
    try:
        parts = urlsplit(probe)
    except ValueError as e:
        raise UrlError(f"stream URL {url!r}: {e}") from None
    try:
        port = parts.port
    except ValueError:
        raise UrlError(f"stream URL {url!r}: port must be 1..65535") from None
    scheme = parts.scheme.lower()
    if scheme not in CONTAINER_FORMATS:
        shown = f"{scheme}://" if scheme else "none"
        raise UrlError(f"stream URL {url!r}: unsupported scheme {shown!r} (use rtsp:// or rtmp://)")
    if not parts.hostname:
        raise UrlError(f"stream URL {url!r}: no host")
    if port == 0:
        raise UrlError(f"stream URL {url!r}: port must be 1..65535")
    if scheme == "rtmp" and len([p for p in parts.path.split("/") if p]) < 2:
        raise UrlError(f"stream URL {url!r}: RTMP needs an application and a stream key: rtmp://HOST/APP/KEY")
    return scheme


def _reason(e: BaseException) -> str:
    """One short lower-case reason: ``connection refused``, ``broken pipe``, ..."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    text = " ".join(str(text).split()).rstrip(".")
    return text[:1].lower() + text[1:]


# FFmpeg's answers that do not say what went wrong; a failed attempt is then explained by a plain
# TCP connection of our own (harmless: the server did not take the push anyway)
_VAGUE = ("end of file", "invalid data found when processing input", "input/output error", "unknown error")


class _ConnectError(Exception):
    """A connection attempt failed; ``str()`` is the reason, one lower-case line."""


def _tcp_reason(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to host:port fails (``connection refused``, ...); None if it works."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return _reason(e)


def _fps_of(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 < value <= 1000 else None


@dataclass
class _Item:
    """What the slot holds: a private copy of the image and its timing."""

    image: np.ndarray
    t: float  # seconds, source timeline (pts or capture clock)
    epoch: int
    fps: float | None


class _Push:
    """One stream to one URL: the slot, the thread, the connection and the encoder."""

    def __init__(self, sink: "RestreamSink", url: str, source_id: int, fps: float | None) -> None:
        self.sink = sink
        self.url = url
        self.source_id = source_id
        self.fmt = CONTAINER_FORMATS[check_url(url)]
        self.fps = fps
        self.frames_sent = 0
        self.dropped = 0
        self.reconnects = 0
        self.resized = 0
        self.error: BaseException | None = None  # a failure that is not the network's: the push is dead
        self._cv = threading.Condition()
        self._item: _Item | None = None
        self._stop = False
        self._finish = False  # end of this source's stream: send what is pending, then disconnect
        self._first_result = threading.Event()
        self._first_error: str | None = None
        self._container = None
        self._stream = None
        self._enc = None
        self._size: tuple[int, int] | None = sink.size
        self._conn_base: float | None = None  # output time 0 of the current connection
        self._last_ticks: int | None = None
        self._offset = 0.0                    # added to source times after a new epoch
        self._last_in: float | None = None
        self._epoch: int | None = None
        self._thread = threading.Thread(target=self._run, name=f"restream-{source_id}", daemon=True)

    # -- the pipeline's side ---------------------------------------------------------------------

    def start(self, wait_connected: bool) -> None:
        self._wait_first = wait_connected
        self._thread.start()

    def wait_connected(self, timeout: float) -> None:
        """Raise :class:`RestreamError` unless the first connection succeeded within ``timeout``."""
        if not self._first_result.wait(timeout):
            self.stop()
            raise RestreamError(f"cannot push to {self.url}: no answer within {self.sink.open_timeout_s:g} s")
        if self._first_error is not None:
            raise RestreamError(f"cannot push to {self.url}: {self._first_error}")

    def put(self, item: _Item) -> None:
        with self._cv:
            if self._stop or self._finish:
                self.dropped += 1
                return
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cv.notify()

    def finish(self) -> None:
        with self._cv:
            self._finish = True
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            if self._item is not None:
                self._item = None
                self.dropped += 1
            self._cv.notify()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - reported through write()
            LOG.debug("restream %s failed", self.url, exc_info=True)
            self.error = e
        finally:
            self._disconnect(flush=not self._stop)
            if not self._first_result.is_set():
                self._first_error = self._first_error or (_reason(self.error) if self.error else "stopped")
                self._first_result.set()

    def _loop(self) -> None:
        sink = self.sink
        if self._wait_first:  # open(): one attempt, its result to wait_connected()
            try:
                self._connect()
            except _ConnectError as e:  # reported by wait_connected()
                self._first_error = str(e)
                self._first_result.set()
                return
            self._first_result.set()
        failures = 0
        next_attempt = 0.0
        lost = False
        while True:
            with self._cv:
                while self._item is None and not (self._stop or self._finish):
                    self._cv.wait()
                if self._stop:
                    return
                item, self._item = self._item, None
                if item is None:  # finish, nothing pending
                    return
            if self._container is None:
                now = time.monotonic()
                if now < next_attempt or self._finish:  # no new connection for the last frame
                    with self._cv:
                        self.dropped += 1
                    continue
                try:
                    self._connect(item)
                except _ConnectError as e:  # the server is still away: retry with backoff
                    failures += 1
                    delay = sink.backoff_s(failures if lost else failures - 1)
                    next_attempt = time.monotonic() + delay
                    (LOG.warning if failures == 1 else LOG.debug)(
                        "restream %s: cannot connect (%s); retrying in %.1f s", self.url, e, delay)
                    with self._cv:
                        self.dropped += 1
                    continue
                if lost:
                    self.reconnects += 1
                    LOG.info("restream %s: reconnected after %d failed attempts", self.url, failures)
                lost, failures = False, 0
            try:
                self._send(item)
            except _NetworkError as e:
                with self._cv:
                    self.dropped += 1
                LOG.warning("restream %s: connection lost (%s); reconnecting", self.url, _reason(e.__cause__ or e))
                self._disconnect(flush=False)
                lost, failures = True, 0
                next_attempt = time.monotonic() + sink.backoff_s(0)

    def _connect(self, item: _Item | None = None) -> None:
        """Connect: open the container and write its header. Raises :class:`_ConnectError`."""
        parts = urlsplit(self.url)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme.lower()]
        try:  # a name that does not resolve fails here, in this thread, without FFmpeg (whose calls hold the GIL)
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise _ConnectError(f"cannot resolve host {host!r}") from None
        t0 = time.monotonic()
        try:
            self._open_container(item)
        except (av.FFmpegError, OSError) as e:
            reason = _reason(e)
            took = time.monotonic() - t0
            if took >= 0.9 * self.sink.open_timeout_s:
                reason = f"no answer within {self.sink.open_timeout_s:g} s"
            elif reason.lower() in _VAGUE:
                reason = _tcp_reason(host, port, min(1.0, self.sink.open_timeout_s)) or \
                    f"the server did not take the stream ({reason})"
            raise _ConnectError(reason) from None

    def _open_container(self, item: _Item | None) -> None:
        sink = self.sink
        options = dict(sink.av_options(self.fmt))
        fps = self._fps(item)
        size = self._size
        if size is None and item is not None:
            size = (item.image.shape[1], item.image.shape[0])
        w, h = size or _PLACEHOLDER_SIZE
        w, h = w + (w & 1), h + (h & 1)
        container = av.open(self.url, mode="w", format=self.fmt, options=options)
        try:
            rate = Fraction(fps).limit_denominator(1001) if fps else None
            stream = container.add_mux_stream("h264", rate=rate, width=w, height=h)
            stream.time_base = Fraction(1, 90000) if self.fmt == "rtsp" else Fraction(1, 1000)
            container.start_encoding()
        except BaseException:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        self._container, self._stream = container, stream
        self._enc = None  # a new connection starts a new encoder: keyframe, SPS/PPS first
        self._new_timeline()
        LOG.info("restream: pushing source %d to %s", self.source_id, self.url)

    def _fps(self, item: _Item | None) -> float | None:
        if self.fps is None and item is not None and item.fps is not None:
            self.fps = item.fps
        return self.fps

    def _open_encoder(self, item: _Item) -> None:
        sink = self.sink
        if self._size is None:
            self._size = (item.image.shape[1], item.image.shape[0])
        w, h = self._size
        fps = self._fps(item) or _DEFAULT_FPS
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height = w + (w & 1), h + (h & 1)
        enc.pix_fmt = "yuv420p"
        enc.time_base = self._stream.time_base
        enc.framerate = Fraction(fps).limit_denominator(1001)
        enc.gop_size = int(sink.gop or max(1, round(fps)))
        enc.colorspace = _AVCOL_SPC_SMPTE170M
        enc.color_range = _AVCOL_RANGE_MPEG
        opts = {"preset": sink.preset, "tune": "zerolatency"}
        if sink.bitrate is not None:
            enc.bit_rate = int(sink.bitrate)
            opts.update({"maxrate": str(int(sink.bitrate)), "bufsize": str(int(sink.bitrate))})
        else:
            opts["crf"] = str(int(sink.crf))
        enc.options = opts
        enc.open()
        self._enc = enc

    def _new_timeline(self) -> None:
        """A new connection: its first frame has timestamp 0."""
        self._conn_base = None
        self._last_ticks = None

    def _timestamp(self, item: _Item) -> int:
        """The item's pts in stream ticks on this connection's timeline (strictly increasing)."""
        t = item.t + self._offset
        if self._epoch is not None and item.epoch != self._epoch and self._last_in is not None \
                and t <= self._last_in:
            step = 1.0 / (self.fps or _DEFAULT_FPS)
            self._offset += self._last_in + step - t
            t = item.t + self._offset
        self._epoch = item.epoch
        self._last_in = t if self._last_in is None else max(self._last_in, t)
        if self._conn_base is None:
            self._conn_base = t
        ticks = int(round((t - self._conn_base) / self._stream.time_base))
        if self._last_ticks is not None and ticks <= self._last_ticks:
            ticks = self._last_ticks + 1
        self._last_ticks = ticks
        return ticks

    def _send(self, item: _Item) -> None:
        if self._enc is None:
            self._open_encoder(item)
        enc = self._enc
        w, h = self._size
        image = item.image
        if image.shape[:2] != (h, w):
            if self.resized == 0:
                LOG.warning("restream %s: source %d changed size to %dx%d; resizing to the stream's %dx%d",
                            self.url, self.source_id, image.shape[1], image.shape[0], w, h)
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            self.resized += 1
        if (enc.height, enc.width) != (h, w):
            image = np.pad(image, ((0, enc.height - h), (0, enc.width - w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
        frame.pts = self._timestamp(item)
        frame.time_base = self._stream.time_base
        packets = enc.encode(frame)
        self._mux(packets)
        self.frames_sent += 1

    def _mux(self, packets) -> None:
        try:
            for p in packets:
                p.stream = self._stream
                self._container.mux(p)
        except (av.FFmpegError, OSError) as e:
            raise _NetworkError(str(e)) from e

    def _disconnect(self, flush: bool) -> None:
        container, self._container = self._container, None
        enc, self._enc = self._enc, None
        if container is None:
            return
        try:
            if flush and enc is not None:
                self._mux(enc.encode(None))
        except Exception:  # noqa: BLE001 - closing anyway
            LOG.debug("restream %s: flush failed", self.url, exc_info=True)
        try:
            container.close()
        except Exception:  # noqa: BLE001 - the server may be gone already
            LOG.debug("restream %s: close failed", self.url, exc_info=True)

    def summary(self) -> dict:
        return {"url": self.url, "frames_sent": self.frames_sent, "dropped": self.dropped,
                "reconnects": self.reconnects}


class _NetworkError(Exception):
    """Sending failed: the server is gone (reconnect)."""


class RestreamSink(Sink):
    """Push the rendered frames as live H.264 to an RTSP or RTMP server (see the module docstring).

    Args:
        url: ``rtsp://HOST[:PORT]/PATH`` or ``rtmp://HOST[:PORT]/APP/KEY``; ``{source}`` in it:
            one push per source, to the URL with the source id in its place (otherwise only
            source 0 is pushed).
        fps: the stream's nominal frame rate (x264 rate control, the keyframe interval, the
            container's announced rate); None: the first frame's ``info["fps"]``, else the
            source's fps in the metadata, else 30.
        bitrate: target bits per second (VBV-capped, for ingest services); None: constant quality
            ``crf``.
        crf: x264 constant rate factor (0 .. 51) when ``bitrate`` is None.
        preset: x264 speed preset.
        gop: frames between keyframes; None: ``round(fps)`` (one a second).
        size: ``(width, height)`` of the stream; frames of another size are resized to it; None:
            the first frame's size.
        clock: ``"pts"`` (frame timestamps) or ``"capture"`` (capture clock), see the module
            docstring; a frame without pts uses the capture clock.
        open_timeout_s: how long :meth:`open` waits for the server.
        backoff_initial_s, backoff_max_s: reconnection waits (doubling).
        close_timeout_s: how long :meth:`close` waits for the pushes to finish.

    Raises:
        UrlError (a ValueError): at construction, for a URL it cannot push to; ValueError for
            other bad arguments.
        RestreamError (an OSError): at :meth:`open`, when the server cannot be reached.

    Attributes:
        frames_sent, dropped, reconnects: totals over the pushes (see :meth:`summary`).
    """

    name = "restream"
    needs_image = True

    def __init__(self, url: str, fps: float | None = None, bitrate: int | None = None, crf: int = 23,
                 preset: str = "veryfast", gop: int | None = None, size: tuple[int, int] | None = None,
                 clock: str = "pts", open_timeout_s: float = 3.0, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 10.0, close_timeout_s: float = 2.0) -> None:
        self.scheme = check_url(url)
        self.url = url.strip()
        self.per_source = "{source}" in self.url
        if fps is not None and _fps_of(fps) is None:
            raise ValueError(f"fps must be a number in (0, 1000], got {fps!r}")
        if bitrate is not None and (isinstance(bitrate, bool) or not isinstance(bitrate, int) or bitrate < 10_000):
            raise ValueError(f"bitrate must be an integer number of bits/s >= 10000, got {bitrate!r}")
        if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
        if preset not in _X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(_X264_PRESETS)}, got {preset!r}")
        if gop is not None and (isinstance(gop, bool) or not isinstance(gop, int) or gop < 1):
            raise ValueError(f"gop must be an integer >= 1, got {gop!r}")
        if size is not None:
            if (len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 8192
                                      for v in size)):
                raise ValueError(f"size must be (width, height) in 2..8192 pixels, got {size!r}")
            size = (int(size[0]), int(size[1]))
        if clock not in ("pts", "capture"):
            raise ValueError(f"clock must be 'pts' or 'capture', got {clock!r}")
        for name, v in (("open_timeout_s", open_timeout_s), ("backoff_initial_s", backoff_initial_s),
                        ("backoff_max_s", backoff_max_s), ("close_timeout_s", close_timeout_s)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a number of seconds > 0, got {v!r}")
        self.fps = None if fps is None else float(fps)
        self.bitrate, self.crf, self.preset, self.gop, self.size = bitrate, crf, preset, gop, size
        self.clock = clock
        self.open_timeout_s = float(open_timeout_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = max(float(backoff_max_s), self.backoff_initial_s)
        self.close_timeout_s = float(close_timeout_s)
        self._pushes: dict[int, _Push] = {}
        self._source_fps: dict[int, float] = {}
        self._ended: set[int] = set()
        self._ignored: set[int] = set()
        self._raised = False
        self._closed = False

    # -- FFmpeg ----------------------------------------------------------------------------------

    def av_options(self, fmt: str) -> dict[str, str]:
        """Options of the output container (``av.open(..., options=)``)."""
        if fmt == "rtsp":
            # TCP interleaved; "timeout": socket I/O timeout (µs), bounds the connection and the
            # RTSP handshake with a server that does not answer
            return {"rtsp_transport": "tcp", "timeout": str(int(self.open_timeout_s * 1e6))}
        return {}  # RTMP: FFmpeg's RTMP client takes no connection timeout (open() bounds it)

    def backoff_s(self, failures: int) -> float:
        """The wait before the next attempt after a loss and ``failures`` failed attempts since."""
        return min(self.backoff_initial_s * 2.0 ** failures, self.backoff_max_s)

    def url_for(self, source_id: int) -> str:
        return self.url.replace("{source}", str(int(source_id)))

    # -- the Sink interface ----------------------------------------------------------------------

    def _push_for(self, source_id: int, wait: bool) -> _Push:
        push = _Push(self, self.url_for(source_id), source_id, self.fps or self._source_fps.get(source_id))
        self._pushes[source_id] = push
        push.start(wait_connected=wait)
        return push

    def open(self, meta: dict | None = None) -> None:
        """Connect (once, within ``open_timeout_s``) to the server of every push known now: source
        0, or with ``{source}`` each source the metadata lists (others connect at their first frame).

        Raises:
            RestreamError: ``cannot push to URL: connection refused`` (or the reason), one line.
        """
        if self._pushes:
            return
        sources = (meta or {}).get("sources") if isinstance(meta, dict) else None
        ids = [0]
        if isinstance(sources, dict):
            for key, info in sources.items():
                try:
                    sid = int(key)
                except (TypeError, ValueError):
                    continue
                fps = _fps_of(info.get("fps")) if isinstance(info, dict) else None
                if fps is not None:
                    self._source_fps[sid] = fps
            if self.per_source:
                ids = sorted({int(k) for k in sources if str(k).lstrip("-").isdigit()}) or [0]
        pushes = [self._push_for(sid, wait=True) for sid in ids]
        try:
            for push in pushes:
                push.wait_connected(self.open_timeout_s + 0.5)
        except BaseException:
            for push in pushes:
                push.stop()
            self._pushes.clear()
            raise

    def write(self, frame: Frame) -> None:
        """Hand the frame to its push (a copy of the image); returns at once."""
        for push in self._pushes.values():
            if push.error is not None and not self._raised:
                self._raised = True
                raise RuntimeError(f"restream to {push.url} failed: {_reason(push.error)}")
        sid = int(frame.source_id)
        if not self.per_source and sid != 0:
            if sid not in self._ignored:
                self._ignored.add(sid)
                LOG.info("restream %s: only source 0 is pushed (put {source} in the URL for one push per source)",
                         self.url)
            return
        push = self._pushes.get(sid)
        if push is None:
            if self._closed or sid in self._ended:
                return
            push = self._push_for(sid, wait=False)
        if frame.image is None or sid in self._ended:
            with push._cv:
                push.dropped += 1
            return
        if self.clock == "pts" and frame.pts is not None and math.isfinite(frame.pts):
            t = float(frame.pts)
        else:
            t = frame.t_capture_ns / 1e9
        fps = _fps_of(frame.info.get("fps")) if isinstance(frame.info, dict) else None
        push.put(_Item(np.array(frame.image, dtype=np.uint8, copy=True), t, int(frame.epoch), fps))

    def end(self, source_id: int) -> None:
        """That source's stream ended: its push sends what is pending and disconnects."""
        self._ended.add(int(source_id))
        push = self._pushes.get(int(source_id))
        if push is not None:
            push.finish()

    def close(self) -> None:
        """Send what is pending, flush, disconnect; waits up to ``close_timeout_s``. Safe to call again."""
        self._closed = True
        pushes = list(self._pushes.values())
        for push in pushes:
            push.finish()
        deadline = time.monotonic() + self.close_timeout_s
        for push in pushes:
            if not push.join(max(0.0, deadline - time.monotonic())):
                push.stop()
                LOG.warning("restream %s: not finished after %.1f s; abandoned", push.url, self.close_timeout_s)

    @property
    def frames_sent(self) -> int:
        return sum(p.frames_sent for p in self._pushes.values())

    @property
    def dropped(self) -> int:
        return sum(p.dropped for p in self._pushes.values())

    @property
    def reconnects(self) -> int:
        return sum(p.reconnects for p in self._pushes.values())

    def summary(self) -> dict:
        """``{"restream": {"url", "frames_sent", "dropped", "reconnects"}}`` (totals); with
        ``{source}`` also ``"sources": {"0": {"url", "frames_sent", "dropped", "reconnects"}, ...}``."""
        d = {"url": self.url, "frames_sent": self.frames_sent, "dropped": self.dropped,
             "reconnects": self.reconnects}
        if self.per_source:
            d["sources"] = {str(sid): p.summary() for sid, p in sorted(self._pushes.items())}
        return {"restream": d}
