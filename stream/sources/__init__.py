"""Video sources: files, RTSP cameras, webcams and image folders, as iterators of :class:`Frame`.

``open_source(spec)`` picks the source from the spec and opens it::

    with open_source("rtsp://cam/stream", start_attempts=3, max_attempts=None) as src:
        for frame in src:           # Frame: image (H, W, 3) uint8 RGB, frame_id, t_capture_ns, epoch, pts
            ...

Spec -> source, decided in one place, :func:`source_kind` (a :class:`SourceKind`, whose ``live``
says which sources run in real time; the pipeline gives them the ``live`` flow policy):

* ``"0"``, ``"1"``, ... , ``/dev/videoN`` or another character device under ``/dev``:
  :class:`WebcamSource` (live)
* ``rtsp://...``, ``rtsps://...``: :class:`RtspSource` (live)
* an existing folder, or a glob pattern (``*``, ``?``): :class:`ImageFolderSource`
* anything else (a file path, or another URL FFmpeg reads): :class:`VideoFileSource`. An
  ``http(s)://`` URL is read as a file, so it is not live (``--policy live`` makes a run live).

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
0 and increases when a stream restarts (an RTSP reconnection, a looping file's next pass) or the
frame size changes, so trackers and filters reset instead of bridging the gap.

Decisions, for the record:

* A damaged file (truncated, corrupt packets) yields every frame that can be decoded and logs
  one warning at the end naming what was wrong (``VideoFileSource.damaged``); with
  ``strict=True`` (or when not a single frame decodes) it raises :class:`SourceError` at the end
  instead. A file that cannot be opened or has no video stream (e.g. an MP4 cut before its
  index) raises at open.
* Unreadable images in a folder are skipped with a warning (counted in ``skipped``); a folder
  in which no image could be read raises at the end. Files are in natural order
  (``img2`` before ``img10``); ``pts`` keeps the file's position, so a skipped image is a gap in time.
* Files with ``loop=True`` start over at the end, forever (soak tests): ``frame_id`` keeps
  counting, ``pts`` keep increasing and every pass is a new epoch (a jump in the video).
* RTSP: a failed connection, a stream that errors, stalls past the read timeout or ends is
  retried with exponential backoff (a connection that yields no frame counts as a failed
  attempt). Start-up is bounded: ``start_attempts`` (3) consecutive failures before the source's
  first frame raise :class:`SourceError` (an unreachable camera fails within seconds); once the
  stream had delivered frames, ``max_attempts`` consecutive failures raise, ``None`` (the
  default) retries forever. Host names are resolved with a timeout before FFmpeg connects.
  ``outages`` and ``outage_s`` account for the time without video. The source reads
  synchronously; the capture stage keeps reading, and its ``live`` flow policy drops stale
  frames downstream.
* Webcams: a reader thread keeps only the newest frame (:class:`LatestFrame`); no reconnection
  (a camera that stops delivering raises :class:`SourceError`).

Modules: :mod:`.base` (:class:`Source`, :class:`SourceError`), :mod:`.file`, :mod:`.rtsp`,
:mod:`.webcam`, :mod:`.images` (one per kind, each with its config dataclass) and :mod:`.kinds`
(the choice of source).
"""
from __future__ import annotations

from .base import Source, SourceError
from .file import FileConfig, VideoFileSource
from .images import IMAGE_EXTENSIONS, ImageFolderConfig, ImageFolderSource
from .kinds import SourceKind, make_source, open_source, source_kind
from .rtsp import RtspConfig, RtspSource
from .webcam import LatestFrame, WebcamConfig, WebcamSource

__all__ = ["SourceError", "Source", "open_source", "make_source", "source_kind", "SourceKind", "FileConfig",
           "RtspConfig", "WebcamConfig", "ImageFolderConfig", "VideoFileSource", "RtspSource", "WebcamSource",
           "ImageFolderSource", "LatestFrame", "IMAGE_EXTENSIONS"]
