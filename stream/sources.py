"""Video sources: files, RTSP cameras, webcams and image folders, as iterators of :class:`Frame`.

``open_source(spec)`` picks the source from the spec and opens it::

    with open_source("rtsp://cam/stream", max_attempts=None) as src:
        for frame in src:           # Frame: image (H, W, 3) uint8 RGB, frame_id, t_capture_ns, epoch, pts
            ...

Spec -> source (``live`` sources run in real time; the pipeline gives them the ``live`` flow policy):

* ``"0"``, ``"1"``, ... or ``/dev/videoN``: :class:`WebcamSource` (live)
* ``rtsp://...``, ``rtsps://...``: :class:`RtspSource` (live)
* an existing folder, or a glob pattern (``*``, ``?``): :class:`ImageFolderSource`
* anything else (a file path, or another URL FFmpeg reads): :class:`VideoFileSource`

Every source is a context manager (resources are released in ``__exit__``, also when the consumer
stops early) and an iterator; it ends (StopIteration) at the end of a file or folder, and raises
:class:`SourceError`, a one-line message that names the source, when it cannot go on.
Keyword options are per source kind and become that kind's config dataclass
(:class:`FileConfig`, :class:`RtspConfig`, :class:`WebcamConfig`, :class:`ImageFolderConfig`);
an unknown option is a ``ValueError`` that names it.

Frames: ``frame_id`` counts captured frames from 0 (for a webcam, frames the reader thread
overwrote before they were read leave gaps, see ``dropped``); ``t_capture_ns`` is
:func:`now_ns` when the frame was captured (decoded, for files); ``pts`` is the stream's own time
in seconds for files, ``index / fps`` for image folders and, for live sources, the capture clock in
seconds since the source's first frame (it keeps increasing across reconnects). ``epoch`` starts at
0 and increases when a stream restarts (an RTSP reconnection) or the frame size changes, so
trackers and filters reset instead of bridging the gap.

Decisions, for the record:

* A damaged file (truncated, corrupt packets) yields every frame that can be decoded and logs
  one warning at the end naming what was wrong (``VideoFileSource.damaged``); with
  ``strict=True`` (or when not a single frame decodes) it raises :class:`SourceError` at the end
  instead. A file that cannot be opened
  or has no video stream (e.g. an MP4 cut before its index) raises at open.
* Unreadable images in a folder are skipped with a warning (counted in ``skipped``); a folder
  in which no image could be read raises at the end. Files are in natural order
  (``img2`` before ``img10``); ``pts`` keeps the file's position, so a skipped image is a gap in time.
* RTSP: a failed connection, a stream that errors, stalls past the read timeout or ends is
  retried with exponential backoff; ``max_attempts`` consecutive failures (a connection that
  yields no frame counts as a failure) raise :class:`SourceError`; ``None`` retries forever. The
  source reads synchronously; the capture stage keeps reading, and its ``live`` flow policy drops
  stale frames downstream.
* Webcams: a reader thread keeps only the newest frame (:class:`LatestFrame`); no reconnection
  (a camera that stops delivering raises :class:`SourceError`).
"""
from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

import numpy as np

from posestream.stream.messages import Frame, now_ns

__all__ = ["SourceError", "Source", "open_source", "make_source", "source_kind", "FileConfig", "RtspConfig",
           "WebcamConfig", "ImageFolderConfig", "VideoFileSource", "RtspSource", "WebcamSource",
           "ImageFolderSource", "LatestFrame", "IMAGE_EXTENSIONS"]

LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


class SourceError(RuntimeError):
    """A source cannot be opened or cannot go on; the message is one line naming the source."""


# ---------------------------------------------------------------------------------------------
# configuration


def _from_dict(cls, d: dict | None, what: str):
    d = dict(d or {})
    known = [f.name for f in fields(cls)]
    for key in d:
        if key not in known:
            raise ValueError(f"unknown {what} source option {key!r}; known: {', '.join(known)}")
    return cls(**d)


def _positive(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


@dataclass(frozen=True)
class FileConfig:
    """Video file options.

    Attributes:
        strict: raise :class:`SourceError` at the end of a damaged file instead of logging a warning.
        threads: decoder threads (0: FFmpeg chooses).
        realtime: deliver frames at the file's own pace (by pts), like a camera would; for demos
            and for testing the live flow policy with a file.
    """

    strict: bool = False
    threads: int = 0
    realtime: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {self.threads!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "FileConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return _from_dict(cls, d, "file")


@dataclass(frozen=True)
class RtspConfig:
    """RTSP options.

    Attributes:
        transport: ``tcp`` (no losses, the default) or ``udp``.
        open_timeout_s: give up one connection attempt after this long.
        read_timeout_s: a stream that delivers nothing for this long counts as lost.
        low_delay: ``fflags=nobuffer`` and ``flags=low_delay``: no buffering of what the stream
            analysis read (decoding starts at the next keyframe) and no decoder delay.
        analyze_s: how long FFmpeg may read to learn the stream's parameters (``analyzeduration``);
            the SDP usually carries them, so a short time opens faster.
        backoff_initial_s, backoff_factor, backoff_max_s: the wait before retry n (n >= 1 after a
            failure) is ``min(initial * factor ** (n - 1), max)``; a lost stream that had delivered
            frames is retried at once.
        max_attempts: consecutive failed attempts before :class:`SourceError`; None: forever.
        options: further FFmpeg options (strings), applied last.
    """

    transport: str = "tcp"
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    low_delay: bool = True
    analyze_s: float = 0.5
    backoff_initial_s: float = 0.5
    backoff_factor: float = 2.0
    backoff_max_s: float = 10.0
    max_attempts: int | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.transport not in ("tcp", "udp", "udp_multicast", "http", "https"):
            raise ValueError(f"transport must be tcp, udp, udp_multicast, http or https, got {self.transport!r}")
        for name in ("open_timeout_s", "read_timeout_s", "backoff_initial_s", "backoff_max_s", "analyze_s"):
            _positive(name, getattr(self, name))
        if isinstance(self.backoff_factor, bool) or not isinstance(self.backoff_factor, (int, float)) \
                or self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be a number >= 1, got {self.backoff_factor!r}")
        if self.max_attempts is not None and (isinstance(self.max_attempts, bool)
                                              or not isinstance(self.max_attempts, int) or self.max_attempts < 1):
            raise ValueError(f"max_attempts must be an integer >= 1 or None (forever), got {self.max_attempts!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"options must be a mapping of FFmpeg options, got {self.options!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "RtspConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return _from_dict(cls, d, "rtsp")

    def av_options(self) -> dict[str, str]:
        """The options handed to ``av.open`` (FFmpeg's RTSP demuxer and format options)."""
        opts = {"rtsp_transport": self.transport,
                # socket I/O timeout in microseconds: a dead server ends a blocked read
                "timeout": str(int(self.read_timeout_s * 1e6)),
                "analyzeduration": str(int(self.analyze_s * 1e6))}
        if self.low_delay:
            opts.update({"fflags": "nobuffer", "flags": "low_delay"})
        opts.update({str(k): str(v) for k, v in self.options.items()})
        return opts

    def backoff_s(self, failures: int) -> float:
        """Seconds to wait before the next attempt after ``failures`` consecutive failures (>= 1)."""
        return min(self.backoff_initial_s * self.backoff_factor ** (failures - 1), self.backoff_max_s)


_CV_BACKENDS = {"any": "CAP_ANY", "v4l2": "CAP_V4L2", "dshow": "CAP_DSHOW", "msmf": "CAP_MSMF",
                "avfoundation": "CAP_AVFOUNDATION", "gstreamer": "CAP_GSTREAMER", "ffmpeg": "CAP_FFMPEG"}


@dataclass(frozen=True)
class WebcamConfig:
    """Webcam options (requests to the driver; it may pick the nearest mode it has).

    Attributes:
        width, height, fps: capture mode to ask for (None: the driver's default).
        fourcc: pixel format to ask for, e.g. ``MJPG`` (USB cameras need it for high fps).
        backend: OpenCV backend: any, v4l2, dshow, msmf, avfoundation, gstreamer, ffmpeg.
        read_timeout_s: no new frame for this long raises :class:`SourceError`.
        max_read_failures: consecutive failed reads after which the camera counts as gone.
    """

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None
    backend: str = "any"
    read_timeout_s: float = 5.0
    max_read_failures: int = 20

    def __post_init__(self) -> None:
        for name in ("width", "height", "fps"):
            _positive(name, getattr(self, name), allow_none=True)
        _positive("read_timeout_s", self.read_timeout_s)
        _positive("max_read_failures", self.max_read_failures)
        if self.backend not in _CV_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(_CV_BACKENDS)}, got {self.backend!r}")
        if self.fourcc is not None and (not isinstance(self.fourcc, str) or len(self.fourcc) != 4):
            raise ValueError(f"fourcc must be 4 characters, got {self.fourcc!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "WebcamConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return _from_dict(cls, d, "webcam")


@dataclass(frozen=True)
class ImageFolderConfig:
    """Image folder options.

    Attributes:
        fps: frame rate the images stand for: ``pts = index / fps``.
    """

    fps: float = 10.0

    def __post_init__(self) -> None:
        _positive("fps", self.fps)

    @classmethod
    def from_dict(cls, d: dict | None) -> "ImageFolderConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return _from_dict(cls, d, "images")


# ---------------------------------------------------------------------------------------------
# the common part


class Source:
    """Base of all sources: lifecycle, counters and Frame building.

    Attributes:
        spec: the source as the user gave it (named in every error and in ``Frame.info``).
        source_id: copied into every frame.
        kind: ``file``, ``rtsp``, ``webcam`` or ``images``.
        live: True for sources that run in real time (the pipeline's ``live`` flow policy).
        fps: nominal frame rate, None when unknown (known after :meth:`open`).
        frames: frames delivered so far.
        reconnects: successful reconnections (RTSP).
        dropped: frames captured but overwritten before they were read (webcam).
        epoch: the current stream epoch.
    """

    kind = "?"
    live = False

    def __init__(self, spec: str, source_id: int = 0) -> None:
        self.spec = str(spec)
        self.source_id = int(source_id)
        self.fps: float | None = None
        self.frames = 0
        self.reconnects = 0
        self.dropped = 0
        self.epoch = 0
        self._opened = False
        self._closed = False
        self._size: tuple[int, int] | None = None
        self._epoch_started = False

    # lifecycle -----------------------------------------------------------------------------
    def open(self) -> "Source":
        """Acquire the resources; raises :class:`SourceError`. Idempotent; returns self."""
        if self._closed:
            raise SourceError(f"{self.spec}: source is closed")
        if not self._opened:
            self._open()
            self._opened = True
        return self

    def close(self) -> None:
        """Release every resource. Idempotent; safe after a failed open."""
        if not self._closed:
            self._closed = True
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Source":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        if not self._opened:
            raise SourceError(f"{self.spec}: source is not open (use `with open_source(...)` or .open())")
        try:
            frame = self._read()
        except BaseException:
            self.close()
            raise
        if frame is None:
            self.close()  # release at the end of the stream, not only at __exit__
            raise StopIteration
        return frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, frames={self.frames}, epoch={self.epoch})"

    # for subclasses ------------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _read(self) -> Frame | None:
        """The next frame, or None at the end of the stream."""
        raise NotImplementedError

    def _new_epoch(self, why: str) -> None:
        """Start a new epoch at the next frame (the first frame of a source is epoch 0)."""
        if self._epoch_started:
            self.epoch += 1
            LOG.info("%s: new epoch %d (%s)", self.spec, self.epoch, why)

    def _frame(self, image: np.ndarray, t_capture_ns: int, pts: float | None,
               frame_id: int | None = None) -> Frame:
        """Build the Frame for an (H, W, 3) uint8 RGB image and count it."""
        size = (image.shape[1], image.shape[0])
        if self._size is not None and size != self._size:
            self._new_epoch(f"frame size {self._size[0]}x{self._size[1]} -> {size[0]}x{size[1]}")
        self._size = size
        self._epoch_started = True
        frame = Frame(source_id=self.source_id, frame_id=self.frames if frame_id is None else frame_id,
                      t_capture_ns=t_capture_ns, epoch=self.epoch, pts=pts,
                      image=np.ascontiguousarray(image),
                      info={"source": self.spec, "fps": self.fps, "kind": self.kind})
        self.frames += 1
        return frame


def _short(e: BaseException) -> str:
    """An exception as a short one-line reason (FFmpeg errors without errno and path)."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())


def _fps(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


# ---------------------------------------------------------------------------------------------
# video files


class VideoFileSource(Source):
    """Every frame of a video file, in order (PyAV).

    ``pts`` is the frame's time in the stream (seconds, as the file says; it need not start at 0),
    or ``index / fps`` for frames without a timestamp. See the module docstring for damaged files.

    Attributes:
        damaged: None, or why the file looks damaged (set at the end of the file).
        expected_frames: frame count from the file's header, None when it has none.
    """

    kind = "file"
    live = False

    def __init__(self, path: str, source_id: int = 0, config: FileConfig | None = None) -> None:
        super().__init__(path, source_id)
        self.config = config or FileConfig()
        self.damaged: str | None = None
        self.expected_frames: int | None = None
        self._container = None
        self._stream = None
        self._decoded: Iterator | None = None
        self._problems: list[str] = []
        self._last_time: float | None = None
        self._pace: tuple[int, float] | None = None

    def _open(self) -> None:
        import av

        is_url = "://" in self.spec
        if not is_url and not os.path.exists(self.spec):
            raise SourceError(f"{self.spec}: file not found")
        if not is_url and os.path.isdir(self.spec):
            raise SourceError(f"{self.spec}: is a folder (not a video file)")
        try:
            self._container = av.open(self.spec, mode="r")
        except av.error.FFmpegError as e:
            raise SourceError(f"{self.spec}: not a video ({_short(e)})") from None
        except OSError as e:
            raise SourceError(f"{self.spec}: cannot open ({_short(e)})") from None
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["no streams"]
            self._release()
            raise SourceError(f"{self.spec}: not a video (no video stream; has {', '.join(kinds)})")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        if self.config.threads:
            self._stream.codec_context.thread_count = self.config.threads
        self.fps = _fps(self._stream)
        self.expected_frames = self._stream.frames or None
        self._decoded = self._decode()

    def _decode(self) -> Iterator:
        """Decoded frames; damage is noted in ``_problems`` instead of ending the iteration."""
        import av

        stream = self._stream
        demux = self._container.demux(stream)
        corrupt = errors = 0
        flushed = False
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                self._problems.append(f"read error ({_short(e)})")
                break
            if packet.size == 0:
                flushed = True  # PyAV's end-of-stream packet: decoding it drains the decoder
            elif packet.is_corrupt:
                corrupt += 1
            try:
                yield from packet.decode()
            except av.error.EOFError:
                break
            except av.error.FFmpegError:
                errors += 1
        if not flushed:
            try:
                yield from stream.codec_context.decode(None)
            except av.error.FFmpegError:
                pass
        if corrupt:
            self._problems.append(f"{corrupt} corrupt packet(s)")
        if errors:
            self._problems.append(f"{errors} packet(s) failed to decode")

    def _read(self) -> Frame | None:
        frame = next(self._decoded, None)
        if frame is None:
            self._finish()
            return None
        image = frame.to_ndarray(format="rgb24")
        pts = frame.time
        if pts is None and self.fps:
            pts = self.frames / self.fps
        if self.config.realtime and pts is not None:
            if self._pace is None:
                self._pace = (now_ns(), pts)
            due = self._pace[0] + int((pts - self._pace[1]) * 1e9)
            wait = due - now_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
        t = now_ns()
        if pts is not None:
            self._last_time = pts
        return self._frame(image, t, pts)

    def _finish(self) -> None:
        """At the end of the file: compare what was decoded with what the header promised."""
        problems = list(self._problems)
        if self.expected_frames and self.frames < self.expected_frames:
            problems.append(f"decoded {self.frames} of {self.expected_frames} frames")
        else:
            span = self._stream_span()
            if span and self._last_time is not None and self.fps:
                start, duration = span
                end = self._last_time - start + 1.0 / self.fps
                # missing more than a couple of frame intervals at the end: frames are lost
                if end < duration - max(2.0 / self.fps, 0.01 * duration):
                    problems.append(f"ends at {end:.2f} s of {duration:.2f} s")
        if self.frames == 0 and not problems:
            problems.append("no frame could be decoded")
        if problems:
            self.damaged = "; ".join(problems)
            message = f"{self.spec}: damaged file, {self.frames} frame(s) decoded ({self.damaged})"
            if self.config.strict or self.frames == 0:
                raise SourceError(message)
            LOG.warning("%s", message)

    def _stream_span(self) -> tuple[float, float] | None:
        """(start, duration) in seconds of the video stream as the header says, None if unknown."""
        stream, container = self._stream, self._container
        if stream.duration and stream.time_base:
            start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            return start, float(stream.duration * stream.time_base)
        if container.duration and len(container.streams) == 1:  # the container's span is the video's
            return (container.start_time or 0) / 1e6, container.duration / 1e6  # AV_TIME_BASE units
        return None

    def _release(self) -> None:
        if self._decoded is not None:
            self._decoded.close()  # the generator's demuxer holds the container
            self._decoded = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def _close(self) -> None:
        self._release()


# ---------------------------------------------------------------------------------------------
# RTSP


class RtspSource(Source):
    """An RTSP stream (PyAV, TCP by default) that reconnects with exponential backoff.

    :meth:`open` connects (with retries) so that an unreachable camera fails there. Every
    connection's first frame starts a new epoch (the first is epoch 0), and a successful
    reconnection counts in ``reconnects``. ``frame_id`` keeps counting across reconnects.
    Call :meth:`stop` from another thread to end a source waiting to reconnect; ``close`` from
    the consuming thread.
    """

    kind = "rtsp"
    live = True

    def __init__(self, url: str, source_id: int = 0, config: RtspConfig | None = None) -> None:
        super().__init__(url, source_id)
        self.config = config or RtspConfig()
        self.attempts = 0  # connection attempts, all of them
        self._stop = threading.Event()
        self._container = None
        self._decoded: Iterator | None = None
        self._failures = 0  # consecutive failures (failed opens, connections without a frame)
        self._last_error = ""
        self._fresh = False  # no frame yet from the current connection
        self._t0: int | None = None

    def stop(self) -> None:
        """Ask the source to end (thread-safe): waits end at once, a blocked read within its timeout."""
        self._stop.set()

    def _open(self) -> None:
        if not self._connect():
            raise SourceError(f"{self.spec}: stopped before connecting")

    def _connect(self) -> bool:
        """Connect, retrying with backoff. False if stopped; SourceError after max_attempts."""
        import av

        cfg = self.config
        while not self._stop.is_set():
            if cfg.max_attempts is not None and self._failures >= cfg.max_attempts:
                raise SourceError(f"{self.spec}: unreachable after {self._failures} attempts "
                                  f"(last error: {self._last_error})")
            if self._failures:
                delay = cfg.backoff_s(self._failures)
                LOG.warning("%s: %s; retrying in %.1f s (failure %d%s)", self.spec, self._last_error, delay,
                            self._failures, f" of {cfg.max_attempts}" if cfg.max_attempts else "")
                if self._stop.wait(delay):
                    break
            self.attempts += 1
            try:
                container = av.open(self.spec, options=cfg.av_options(),
                                    timeout=(cfg.open_timeout_s, cfg.read_timeout_s))
            except (av.error.FFmpegError, OSError) as e:
                self._failures += 1
                self._last_error = _short(e)
                continue
            if not container.streams.video:
                container.close()
                self._failures += 1
                self._last_error = "no video stream"
                continue
            stream = container.streams.video[0]
            self._container = container
            self._decoded = container.decode(stream)
            self.fps = _fps(stream)
            self._fresh = True
            LOG.info("%s: connected (%s, %dx%d)", self.spec, stream.codec_context.name, stream.width, stream.height)
            return True
        return False

    def _read(self) -> Frame | None:
        import av

        while not self._stop.is_set():
            if self._decoded is None and not self._connect():
                break
            try:
                frame = next(self._decoded)
            except StopIteration:
                reason = "stream ended"
            except (av.error.FFmpegError, OSError) as e:
                reason = f"stream lost ({_short(e)})"
            else:
                return self._live_frame(frame)
            self._disconnect()
            if self._fresh:  # this connection never delivered a frame: a failed attempt
                self._failures += 1
            self._last_error = reason
            LOG.warning("%s: %s; reconnecting", self.spec, reason)
        return None

    def _live_frame(self, frame) -> Frame:
        image = frame.to_ndarray(format="rgb24")
        t = now_ns()
        if self._fresh:
            self._fresh = False
            self._failures = 0
            if self._epoch_started:  # an earlier connection delivered frames
                self.reconnects += 1
                self._new_epoch("reconnected")
                self._size = None  # the new epoch already covers a size change
        if self._t0 is None:
            self._t0 = t
        return self._frame(image, t, (t - self._t0) / 1e9)

    def _disconnect(self) -> None:
        if self._decoded is not None:
            self._decoded.close()
            self._decoded = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception as e:  # a broken connection may fail its TEARDOWN; it is gone anyway
                LOG.debug("%s: close: %s", self.spec, e)
            self._container = None

    def _close(self) -> None:
        self._stop.set()
        self._disconnect()


# ---------------------------------------------------------------------------------------------
# webcams


class LatestFrame:
    """A one-slot buffer between a producer thread and a consumer: ``get`` returns the newest item.

    ``put`` overwrites an item not yet read (counted in ``dropped``), so the consumer never sees a
    stale frame and latency cannot build up. After ``close`` the last item can still be read, then
    ``get`` returns None (or raises the error given to ``close``).

    Attributes:
        puts, gets, dropped: counters; once the slot is empty, ``dropped == puts - gets``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self._error: BaseException | None = None
        self.puts = 0
        self.gets = 0
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store item (not None) as the newest; True if it overwrote an unread one. Ignored once closed."""
        if item is None:
            raise ValueError("LatestFrame holds items, not None")
        with self._cond:
            if self._closed:
                return False
            overwrote = self._item is not None
            if overwrote:
                self.dropped += 1
            self._item = item
            self.puts += 1
            self._cond.notify_all()
            return overwrote

    def get(self, timeout: float | None = None) -> Any:
        """The newest item, waiting for one; None when closed. Raises TimeoutError after timeout s."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None or self._closed, timeout):
                raise TimeoutError(f"no item within {timeout} s")
            item, self._item = self._item, None
            if item is not None:
                self.gets += 1
                return item
            if self._error is not None:
                raise self._error
            return None

    def close(self, error: BaseException | None = None) -> None:
        """No more items; waiting consumers wake up. ``error`` is raised by ``get`` once empty."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._error = error
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class WebcamSource(Source):
    """A camera through OpenCV, read by a thread that keeps only the newest frame.

    The thread owns the ``cv2.VideoCapture`` (it releases it when it ends). ``frame_id`` counts
    captured frames, so frames dropped at the source leave gaps; ``dropped`` counts them. The BGR
    to RGB conversion happens in the consumer, only for frames that are read.
    """

    kind = "webcam"
    live = True

    def __init__(self, device: str, source_id: int = 0, config: WebcamConfig | None = None) -> None:
        super().__init__(device, source_id)
        self.config = config or WebcamConfig()
        spec = self.spec.strip()
        self.device: int | str = int(spec) if re.fullmatch(r"\d+", spec) else spec
        self._slot = LatestFrame()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0: int | None = None

    def _open(self) -> None:
        import cv2

        cfg = self.config
        cap = cv2.VideoCapture(self.device, getattr(cv2, _CV_BACKENDS[cfg.backend]))
        try:
            if not cap.isOpened():
                raise SourceError(f"{self.spec}: cannot open camera (no such device, or busy)")
            if cfg.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
            if cfg.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            if cfg.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            if cfg.fps:
                cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            ok, bgr = cap.read()
            t = now_ns()
            if not ok or bgr is None:
                raise SourceError(f"{self.spec}: camera opened but delivers no frames")
        except BaseException:
            cap.release()
            raise
        self.fps = float(cap.get(cv2.CAP_PROP_FPS)) or None
        self._slot.put((0, t, bgr))
        self._thread = threading.Thread(target=self._reader, args=(cap,), name=f"webcam-{self.spec}", daemon=True)
        self._thread.start()

    def _reader(self, cap) -> None:
        captured, failures, error = 1, 0, None
        try:
            while not self._stop.is_set():
                ok, bgr = cap.read()
                t = now_ns()
                if not ok or bgr is None:
                    failures += 1
                    if failures >= self.config.max_read_failures:
                        error = SourceError(f"{self.spec}: camera stopped delivering frames "
                                            f"({failures} failed reads)")
                        break
                    self._stop.wait(0.01)
                    continue
                failures = 0
                self._slot.put((captured, t, bgr))
                captured += 1
        except Exception as e:  # surfaces in the consumer instead of dying silently
            error = SourceError(f"{self.spec}: camera reader failed ({_short(e)})")
        finally:
            cap.release()
            self._slot.close(error)

    def _read(self) -> Frame | None:
        import cv2

        try:
            item = self._slot.get(timeout=self.config.read_timeout_s)
        except TimeoutError:
            raise SourceError(f"{self.spec}: no frame for {self.config.read_timeout_s:g} s") from None
        if item is None:
            return None
        frame_id, t, bgr = item
        if self._t0 is None:
            self._t0 = t
        frame = self._frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t, (t - self._t0) / 1e9, frame_id=frame_id)
        # every captured frame up to this one was either delivered or overwritten in the slot
        self.dropped = frame_id + 1 - self.frames
        return frame

    def _close(self) -> None:
        self._stop.set()
        self._slot.close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                LOG.warning("%s: camera reader still blocked in a read; it releases the camera when it returns",
                            self.spec)
            self._thread = None


# ---------------------------------------------------------------------------------------------
# image folders


def _natural_key(path: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


class ImageFolderSource(Source):
    """The images of a folder, or of a glob pattern, in natural order (``pts = index / fps``).

    Attributes:
        paths: the image files found at :meth:`open`.
        skipped: images that could not be read (skipped with a warning).
    """

    kind = "images"
    live = False

    def __init__(self, spec: str, source_id: int = 0, config: ImageFolderConfig | None = None) -> None:
        super().__init__(spec, source_id)
        self.config = config or ImageFolderConfig()
        self.paths: list[str] = []
        self.skipped = 0
        self._index = 0

    def _open(self) -> None:
        if os.path.isdir(self.spec):
            names = [os.path.join(self.spec, n) for n in os.listdir(self.spec)]
        elif any(c in self.spec for c in "*?["):
            names = glob.glob(self.spec, recursive=True)
        else:
            raise SourceError(f"{self.spec}: folder not found")
        self.paths = sorted((p for p in names if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p)),
                            key=_natural_key)
        if not self.paths:
            raise SourceError(f"{self.spec}: no images (looked for {' '.join(IMAGE_EXTENSIONS)})")
        self.fps = float(self.config.fps)

    def _read(self) -> Frame | None:
        import cv2

        while self._index < len(self.paths):
            index, path = self._index, self.paths[self._index]
            self._index += 1
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            t = now_ns()
            if bgr is None:
                self.skipped += 1
                LOG.warning("%s: cannot read image %s; skipped", self.spec, path)
                continue
            return self._frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t, index / self.fps)
        if self.frames == 0:
            raise SourceError(f"{self.spec}: none of the {len(self.paths)} images could be read")
        return None

    def _close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# choosing a source


_KINDS = {"file": (VideoFileSource, FileConfig), "rtsp": (RtspSource, RtspConfig),
          "webcam": (WebcamSource, WebcamConfig), "images": (ImageFolderSource, ImageFolderConfig)}


def source_kind(spec: str) -> str:
    """The kind of source a spec names: ``webcam``, ``rtsp``, ``images`` or ``file`` (no I/O but stat)."""
    s = str(spec).strip()
    if re.fullmatch(r"\d+", s) or re.fullmatch(r"/dev/video\d+", s):
        return "webcam"
    if s.lower().startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if os.path.isdir(s):
        return "images"
    if os.path.isfile(s) or "://" in s:
        return "file"
    if any(c in s for c in "*?"):
        return "images"
    return "file"


def make_source(spec: str, source_id: int = 0, **options) -> Source:
    """Build the source for spec without opening it; options go to its config dataclass.

    Raises:
        ValueError: an option unknown to that kind of source (the message names it), or a bad value.
    """
    cls, config_cls = _KINDS[source_kind(spec)]
    return cls(str(spec).strip(), source_id, config_cls.from_dict(options))


def open_source(spec: str, source_id: int = 0, **options) -> Source:
    """Build and open the source for spec (see the module docstring); use it as a context manager.

    Raises:
        SourceError: the source cannot be opened (one line naming it and what is wrong).
        ValueError: an unknown or bad option.
    """
    source = make_source(spec, source_id, **options)
    try:
        return source.open()
    except BaseException:
        source.close()
        raise
