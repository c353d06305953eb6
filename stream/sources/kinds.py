"""The one place that decides what kind of source a spec names, and what follows from the kind
(live or not, which class and config dataclass): :func:`source_kind`, :class:`SourceKind`,
:func:`make_source`, :func:`open_source`."""
from __future__ import annotations

import enum
import os
import re
import stat

from .base import Source
from .file import FileConfig, VideoFileSource
from .images import ImageFolderConfig, ImageFolderSource
from .rtsp import RtspConfig, RtspSource
from .webcam import WebcamConfig, WebcamSource

__all__ = ["SourceKind", "source_kind", "make_source", "open_source"]


class SourceKind(str, enum.Enum):
    """A kind of source; a ``str`` (``SourceKind.WEBCAM == "webcam"``, usable as a dict key for
    ``"webcam"``, and ``str()`` / f-strings give the plain value)."""

    FILE = "file"
    RTSP = "rtsp"
    WEBCAM = "webcam"
    IMAGES = "images"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def live(self) -> bool:
        """True for sources that run in real time (RTSP, webcams): the pipeline's ``live`` flow policy."""
        return self in (SourceKind.RTSP, SourceKind.WEBCAM)

    @property
    def source_class(self) -> type[Source]:
        return _CLASSES[self][0]

    @property
    def config_class(self) -> type:
        return _CLASSES[self][1]


_CLASSES = {SourceKind.FILE: (VideoFileSource, FileConfig), SourceKind.RTSP: (RtspSource, RtspConfig),
            SourceKind.WEBCAM: (WebcamSource, WebcamConfig),
            SourceKind.IMAGES: (ImageFolderSource, ImageFolderConfig)}


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def source_kind(spec: str) -> SourceKind:
    """The kind of source a spec names (no I/O but stat).

    * webcam: a camera index (``"0"``, ``"1"``, ...), ``/dev/videoN`` (existing or not) or any
      existing character device under ``/dev`` (e.g. ``/dev/v4l/by-id/...``);
    * rtsp: ``rtsp://`` and ``rtsps://`` URLs (any case);
    * images: an existing folder, or a glob pattern (``*``, ``?``) that is not an existing file;
    * file: everything else: a file path, or another URL FFmpeg reads, such as ``http(s)://``.
      Those are read as files, so they are not live and the pipeline's ``auto`` flow policy is
      ``lossless`` for them; ``--policy live`` (PipelineConfig ``policy="live"``) overrides that
      for an HTTP stream of a camera.
    """
    s = str(spec).strip()
    if re.fullmatch(r"\d+", s) or re.fullmatch(r"/dev/video\d+", s) or (s.startswith("/dev/")
                                                                         and _is_char_device(s)):
        return SourceKind.WEBCAM
    if s.lower().startswith(("rtsp://", "rtsps://")):
        return SourceKind.RTSP
    if os.path.isdir(s):
        return SourceKind.IMAGES
    if os.path.isfile(s) or "://" in s:
        return SourceKind.FILE
    if any(c in s for c in "*?"):
        return SourceKind.IMAGES
    return SourceKind.FILE


def make_source(spec: str, source_id: int = 0, **options) -> Source:
    """Build the source for spec without opening it; options go to its config dataclass.

    Raises:
        ValueError: an option unknown to that kind of source (the message names it), or a bad value.
    """
    kind = source_kind(spec)
    return kind.source_class(str(spec).strip(), source_id, kind.config_class.from_dict(options))


def open_source(spec: str, source_id: int = 0, **options) -> Source:
    """Build and open the source for spec (see the package docstring); use it as a context manager.

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
