"""Webcams through OpenCV: a reader thread keeps only the newest frame (:class:`LatestFrame`)."""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from posestream.stream.messages import Frame, now_ns

from .base import Source, SourceError, _from_dict, _positive, _short

__all__ = ["WebcamConfig", "WebcamSource", "LatestFrame"]

LOG = logging.getLogger(__name__)

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


def _cv_log_level(level: int | None) -> int | None:
    """OpenCV's log level (None: only read it); None where this OpenCV has no ``cv2.utils.logging``."""
    import cv2

    lg = getattr(getattr(cv2, "utils", None), "logging", None)
    if lg is None:
        return None
    try:
        old = lg.getLogLevel()
        if level is not None:
            lg.setLogLevel(level)
        return old
    except Exception:  # noqa: BLE001 - logging is a nicety
        return None


class WebcamSource(Source):
    """A camera through OpenCV, read by a thread that keeps only the newest frame.

    The thread owns the ``cv2.VideoCapture`` (it releases it when it ends). ``frame_id`` counts
    captured frames, so frames dropped at the source leave gaps; ``dropped`` counts them. The BGR
    to RGB conversion happens in the consumer, only for frames that are read.
    """

    kind = "webcam"

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
        # OpenCV prints its own "[ WARN:0@0.02] ... can't open camera by index" lines straight to
        # stderr for a missing camera; the SourceError below says it in one line
        quiet = not LOG.isEnabledFor(logging.DEBUG)
        level = _cv_log_level(None)
        if quiet:
            _cv_log_level(2)  # LOG_LEVEL_ERROR
        try:
            cap = cv2.VideoCapture(self.device, getattr(cv2, _CV_BACKENDS[cfg.backend]))
        finally:
            if quiet:
                _cv_log_level(level)
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
