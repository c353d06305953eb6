"""Video files (and other inputs FFmpeg reads as files, e.g. ``http://`` URLs) through PyAV."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator

from posestream.stream.messages import Frame, now_ns

from .base import Source, SourceError, _fps, _from_dict, _short

__all__ = ["FileConfig", "VideoFileSource"]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileConfig:
    """Video file options.

    Attributes:
        strict: raise :class:`SourceError` at the end of a damaged file instead of logging a warning.
        threads: decoder threads (0: FFmpeg chooses).
        realtime: deliver frames at the file's own pace (by pts), like a camera would; for demos
            and for testing the live flow policy with a file.
        loop: at the end of the file start over (the file is reopened), forever: for soak tests.
            ``frame_id`` keeps counting, ``pts`` keep increasing (each pass continues one frame
            interval after the last frame of the one before) and every pass starts a new epoch.
    """

    strict: bool = False
    threads: int = 0
    realtime: bool = False
    loop: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {self.threads!r}")
        for name in ("strict", "realtime", "loop"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "FileConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return _from_dict(cls, d, "file")


class VideoFileSource(Source):
    """Every frame of a video file, in order (PyAV).

    ``pts`` is the frame's time in the stream (seconds, as the file says; it need not start at 0),
    or ``index / fps`` for frames without a timestamp. See the package docstring for damaged files.
    With ``loop``, pass n + 1 is shifted to go on one frame interval after the last pts of pass n.

    Attributes:
        damaged: None, or why the file looks damaged (set at the end of a pass over the file).
        expected_frames: frame count from the file's header, None when it has none.
        loops: how many times the file started over (``loop``); 0 on the first pass.
    """

    kind = "file"

    def __init__(self, path: str, source_id: int = 0, config: FileConfig | None = None) -> None:
        super().__init__(path, source_id)
        self.config = config or FileConfig()
        self.damaged: str | None = None
        self.expected_frames: int | None = None
        self.loops = 0
        self._container = None
        self._stream = None
        self._decoded: Iterator | None = None
        self._problems: list[str] = []
        self._pass_frames = 0  # frames of the current pass
        self._last_time: float | None = None  # the file's own pts of the current pass's last frame
        self._pace: tuple[int, float] | None = None
        self._offset = 0.0  # added to the file's pts (0 on the first pass)
        self._end_pts: float | None = None  # the last pts delivered
        self._step: float | None = None  # the last positive pts step seen

    def _open(self) -> None:
        is_url = "://" in self.spec
        if not is_url and not os.path.exists(self.spec):
            raise SourceError(f"{self.spec}: file not found")
        if not is_url and os.path.isdir(self.spec):
            raise SourceError(f"{self.spec}: is a folder (not a video file)")
        self._open_container()
        self.fps = _fps(self._stream)
        self.expected_frames = self._stream.frames or None

    def _open_container(self) -> None:
        import av

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
        self._problems = []
        self._pass_frames = 0
        self._last_time = None
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
        while True:
            frame = next(self._decoded, None)
            if frame is not None:
                break
            self._finish()
            if not self.config.loop:
                return None
            self._start_over()
        image = frame.to_ndarray(format="rgb24")
        time_in_file = frame.time
        if time_in_file is None and self.fps:
            time_in_file = self._pass_frames / self.fps
        pts = None
        if time_in_file is not None:
            if self._pass_frames == 0 and self.loops and self._end_pts is not None:
                # a new pass goes on one frame interval after the last frame of the one before
                self._offset = self._end_pts + self._interval() - time_in_file
            pts = time_in_file + self._offset
        if self.config.realtime and pts is not None:
            if self._pace is None:
                self._pace = (now_ns(), pts)
            due = self._pace[0] + int((pts - self._pace[1]) * 1e9)
            wait = due - now_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
        t = now_ns()
        if time_in_file is not None:
            self._last_time = time_in_file
        if pts is not None:
            if self._end_pts is not None and pts > self._end_pts:
                self._step = pts - self._end_pts
            self._end_pts = pts
        self._pass_frames += 1
        return self._frame(image, t, pts)

    def _interval(self) -> float:
        """One frame interval in seconds: 1 / fps, else the last step between pts, else 1/25 s."""
        if self.fps:
            return 1.0 / self.fps
        return self._step or 0.04

    def _start_over(self) -> None:
        """Reopen the file for the next pass (a jump in the video: a new epoch)."""
        self._release()
        self._open_container()
        self.loops += 1
        self._new_epoch(f"loop: pass {self.loops + 1}")
        LOG.debug("%s: end of file; starting over (pass %d)", self.spec, self.loops + 1)

    def _finish(self) -> None:
        """At the end of a pass: compare what was decoded with what the header promised."""
        n = self._pass_frames
        problems = list(self._problems)
        if self.expected_frames and n < self.expected_frames:
            problems.append(f"decoded {n} of {self.expected_frames} frames")
        else:
            span = self._stream_span()
            if span and self._last_time is not None and self.fps:
                start, duration = span
                end = self._last_time - start + 1.0 / self.fps
                # missing more than a couple of frame intervals at the end: frames are lost
                if end < duration - max(2.0 / self.fps, 0.01 * duration):
                    problems.append(f"ends at {end:.2f} s of {duration:.2f} s")
        if n == 0 and not problems:
            problems.append("no frame could be decoded")
        if problems:
            first = self.damaged is None
            self.damaged = "; ".join(problems)
            where = f" in pass {self.loops + 1}" if self.loops else ""
            message = f"{self.spec}: damaged file, {n} frame(s) decoded{where} ({self.damaged})"
            if self.config.strict or n == 0:  # n == 0: a loop would spin on a file without frames
                raise SourceError(message)
            if first:  # once, not at every pass of a loop
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
