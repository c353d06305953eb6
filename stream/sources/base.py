"""What every source shares: :class:`SourceError`, the :class:`Source` base (lifecycle, counters,
Frame building) and the helpers the config dataclasses validate with."""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

from posestream.stream.messages import Frame

__all__ = ["SourceError", "Source"]

LOG = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source cannot be opened or cannot go on; the message is one line naming the source."""


# ---------------------------------------------------------------------------------------------
# configuration helpers


def _from_dict(cls, d: dict | None, what: str):
    """``cls(**d)`` through :func:`posestream.models.config.from_section`: unknown keys, wrong types
    and the dataclass's own checks are :class:`~posestream.models.config.ConfigError` (a ValueError)
    naming the key (``unknown rtsp source option 'x'; known: ...``), whose ``path`` lets a config
    file's error name its line (``x.yaml:4: source_options.rtsp.timeout_s: ...``)."""
    from posestream.models.config import from_section

    return from_section(cls, d, f"{what} source option")


def _positive(name: str, value, allow_none: bool = False) -> None:
    """ValueError unless value is a number > 0 (or None, with allow_none)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


def _count(name: str, value, none: str | None = None) -> None:
    """ValueError unless value is an integer >= 1; ``none`` says what None means (None not allowed if unset)."""
    if value is None and none is not None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        also = f" or None ({none})" if none is not None else ""
        raise ValueError(f"{name} must be an integer >= 1{also}, got {value!r}")


def _short(e: BaseException) -> str:
    """An exception as a short one-line reason (FFmpeg errors without errno and path)."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())


def _fps(stream) -> float | None:
    """A PyAV video stream's nominal frame rate, None when it has none."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


# ---------------------------------------------------------------------------------------------
# the common part


class Source:
    """Base of all sources: lifecycle, counters and Frame building.

    Attributes:
        spec: the source as the user gave it (named in every error and in ``Frame.info``).
        source_id: copied into every frame.
        kind: ``file``, ``rtsp``, ``webcam`` or ``images`` (a :class:`~.kinds.SourceKind` value).
        live: True for sources that run in real time (the pipeline's ``live`` flow policy); it is
            :attr:`SourceKind.live <.kinds.SourceKind.live>` of ``kind``, decided in one place.
        fps: nominal frame rate, None when unknown (known after :meth:`open`).
        frames: frames delivered so far.
        reconnects: successful reconnections (RTSP).
        dropped: frames captured but overwritten before they were read (webcam).
        epoch: the current stream epoch.
    """

    kind = "?"

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

    @property
    def live(self) -> bool:
        from .kinds import SourceKind

        try:
            return SourceKind(self.kind).live
        except ValueError:  # a source kind this package does not know
            return False

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
