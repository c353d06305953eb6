"""Output sinks: H.264 MP4 recordings, JSON Lines of keypoints, and a live window.

Writers are context managers that open their file in the constructor (like :func:`open`) and
finalise it in ``close()``, which ``__exit__`` calls also while an exception (or Ctrl-C) is
propagating: a recording cut short by an error is a playable file holding every frame written.

:class:`Sink` objects (:class:`Mp4Sink`, :class:`JsonlSink`, :class:`WindowSink`, and the live
outputs) are the pipeline's outputs on top of them; :class:`OutputStage` hands every frame to
each, independently. File layout with several sources:

* MP4: one file per source. While a single source has been seen the file is ``record`` as given;
  every further source writes ``{stem}_s{source_id}{suffix}``, and ``close()`` renames the first
  source's file to the same pattern, so a run with several sources ends with
  ``out_s0.mp4, out_s1.mp4, ...`` and a single-source run with ``out.mp4``. (A run killed before
  ``close()`` keeps the first source's file under the plain name.)
* JSON Lines: one file for all sources; every line carries its ``source_id``.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from posestream.stream.cli import UserError
from posestream.stream.messages import Frame
from posestream.models.config import from_section
from posestream.stream.lazy import LazyModule

av = LazyModule("av")
cv2 = LazyModule("cv2")

__all__ = ["Mp4Writer", "JsonlWriter", "SinkConfig", "Sink", "Mp4Sink", "JsonlSink", "WindowSink", "OutputStage",
           "build_sinks", "source_path", "frame_record"]

LOG = logging.getLogger(__name__)

# H.264 colour tags matching the conversion below (swscale's default RGB -> YUV is BT.601,
# limited range); without them players guess, and browsers guess BT.709 for HD sizes.
_AVCOL_SPC_SMPTE170M = 6
_AVCOL_RANGE_MPEG = 1


class Mp4Writer:
    """H.264 (libx264) video in an MP4 file, playable in browsers.

    * Pixel format yuv420p, which needs an even width and height: an odd size is padded by one
      pixel on the right / bottom, repeating the last column / row, so no image content is lost
      (the file is then ``width + 1`` or ``height + 1`` pixels wide / high).
    * The ``moov`` atom is moved to the front of the file when it is closed (``movflags
      +faststart``), so playback can start before the whole file is downloaded. That layout needs
      the index of every frame in memory until the end (≈ 80 bytes per frame, 2.6 MB per 35 000
      frames: measured), so long live recordings use ``fragmented=True`` instead: fragmented MP4
      (a fragment per keyframe, ``frag_keyframe+empty_moov+default_base_moof``), flat memory,
      still playable in browsers, and playable up to its last fragment even if the process is
      killed before ``close()``.
    * Time base ``1 / (fps * n)`` with the smallest integer ``n`` making one tick <= 1 ms: frames
      on the nominal frame grid land on exact ticks and irregular source timestamps keep
      millisecond precision. The MP4 muxer may pick a finer timescale for the file.
    * ``write(image, pts_seconds)`` keeps the source timing: the frame's pts is
      ``round(pts_seconds / time_base)``; without ``pts_seconds`` it is
      ``frames_written / fps``. A pts that is not greater than the previous one is moved to the
      previous one plus one tick (counted in ``pts_bumped``), since MP4 needs increasing pts.

    Args:
        path: output file (``.mp4``); overwritten.
        fps: nominal frame rate (> 0): sets the time base, the pts of frames written without a
            timestamp and the encoder's rate control.
        width: width of the images that will be written, in pixels.
        height: their height.
        crf: x264 constant rate factor (0 lossless .. 51; 23 default quality).
        preset: x264 speed preset (``ultrafast`` .. ``veryslow``).
        fragmented: fragmented MP4 (see above) instead of ``faststart``.

    Attributes:
        frames_written: frames handed to the encoder so far (all are in the file after ``close()``).
        pts_bumped: frames whose pts was moved forward to keep pts increasing.
    """

    def __init__(self, path: str | os.PathLike, fps: float, width: int, height: int, crf: int = 23,
                 preset: str = "veryfast", fragmented: bool = False) -> None:
        if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"width and height must be >= 1, got {width}x{height}")
        if not 0 <= int(crf) <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.rate = Fraction(float(fps)).limit_denominator(1001)
        if self.rate <= 0:
            raise ValueError(f"fps {fps!r} is too small")
        self.ticks_per_frame = max(1, math.ceil(1000 / self.rate))
        self.time_base = 1 / (self.rate * self.ticks_per_frame)
        self.enc_width = self.width + (self.width & 1)
        self.enc_height = self.height + (self.height & 1)
        self.frames_written = 0
        self.pts_bumped = 0
        self._last_pts: int | None = None
        self.fragmented = bool(fragmented)
        flags = "frag_keyframe+empty_moov+default_base_moof" if self.fragmented else "+faststart"
        self._container = av.open(str(self.path), mode="w", format="mp4", container_options={"movflags": flags})
        try:
            opts = {"crf": str(int(crf)), "preset": str(preset)}
            if self.fragmented:  # a keyframe (and so a fragment) every ~2 s
                opts["g"] = str(max(1, round(2 * float(self.rate))))
            stream = self._container.add_stream("libx264", rate=self.rate, options=opts)
            stream.width, stream.height = self.enc_width, self.enc_height
            stream.pix_fmt = "yuv420p"
            stream.time_base = self.time_base
            ctx = stream.codec_context
            ctx.time_base = self.time_base
            ctx.colorspace = _AVCOL_SPC_SMPTE170M
            ctx.color_range = _AVCOL_RANGE_MPEG
        except BaseException:
            self._container.close()
            self._container = None
            raise
        self._stream = stream

    @property
    def closed(self) -> bool:
        return self._container is None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            # Finalise what was written, but never hide the error that is propagating.
            try:
                self.close()
            except Exception:
                LOG.exception("finalising %s after an error failed", self.path)
        return False

    def write(self, image_rgb: np.ndarray, pts_seconds: float | None = None) -> None:
        """Encode one frame.

        Args:
            image_rgb: (height, width, 3) uint8 RGB, the size given to the constructor.
            pts_seconds: presentation time in seconds from the source; ``None``: frame index / fps.

        Raises:
            ValueError: wrong image shape or dtype, or a non-finite pts.
            RuntimeError: the writer is closed.
        """
        if self._container is None:
            raise RuntimeError(f"Mp4Writer for {self.path} is closed")
        image = np.asarray(image_rgb)
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a ({self.height}, {self.width}, 3) uint8 RGB image, "
                             f"got {image.shape} {image.dtype}")
        if pts_seconds is None:
            pts = self.frames_written * self.ticks_per_frame
        else:
            if not math.isfinite(pts_seconds):
                raise ValueError(f"pts_seconds must be finite, got {pts_seconds!r}")
            pts = int(round(Fraction(pts_seconds) / self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
            self.pts_bumped += 1
        if self.enc_height != self.height or self.enc_width != self.width:
            image = np.pad(image, ((0, self.enc_height - self.height), (0, self.enc_width - self.width), (0, 0)),
                           mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
        frame.pts = pts
        frame.time_base = self.time_base
        self._container.mux(self._stream.encode(frame))
        self._last_pts = pts
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finalise the file (moov atom to the front). Safe to call again."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            container.mux(self._stream.encode(None))
        finally:
            container.close()
        LOG.debug("wrote %d frames to %s (%d pts bumped)", self.frames_written, self.path, self.pts_bumped)


def _rounded(a: np.ndarray, decimals: int) -> list:
    """Array -> nested lists of floats rounded to ``decimals``; non-finite values become null."""
    a = np.round(np.asarray(a, dtype=np.float64), decimals)
    if np.isfinite(a).all():
        return a.tolist()
    return np.where(np.isfinite(a), a, None).tolist()


def frame_record(frame: Frame) -> dict:
    """The JSON Lines record of a frame (pixels rounded to 0.01, scores to 0.001)."""
    people = []
    p = frame.people
    if p is not None and len(p):
        kps = np.asarray(p.keypoints)
        xy = _rounded(kps[:, :, :2], 2)
        ks = _rounded(kps[:, :, 2], 3)
        scores = _rounded(p.scores, 3)
        for n in range(len(p)):
            people.append({"track_id": int(p.track_ids[n]), "score": scores[n],
                           "keypoints": [[x, y, s] for (x, y), s in zip(xy[n], ks[n])]})
    pts = None if frame.pts is None else round(float(frame.pts), 6)
    return {"source_id": int(frame.source_id), "frame_id": int(frame.frame_id), "pts": pts,
            "t_capture_ns": int(frame.t_capture_ns), "epoch": int(frame.epoch), "people": people}


class JsonlWriter:
    """One JSON line of keypoints per frame, flushed line by line (a crash loses nothing written).

    Line format: ``{"source_id", "frame_id", "pts", "t_capture_ns", "epoch",
    "people": [{"track_id", "score", "keypoints": [[x, y, score], ...]}]}`` with pixels rounded to
    0.01, scores to 0.001, pts to 1 µs; non-finite numbers are written as ``null``.
    ``track_id``: ``>= 0`` a person's id, stable per ``source_id`` (given on the person's first
    frame when it is confident, else once seen ``min_hits`` times; never reused); ``-2`` a
    tentative detection (weak and not yet confirmed, or a duplicate pose of another person) that
    the video does not draw; ``-1`` no tracking ran (``track`` stage off).

    Args:
        path: output file; overwritten.

    Attributes:
        lines_written: lines written so far.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lines_written = 0
        self._file = open(self.path, "w", encoding="utf-8")

    @property
    def closed(self) -> bool:
        return self._file is None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    def write(self, frame: Frame) -> None:
        """Append the frame's record (:func:`frame_record`) and flush it."""
        if self._file is None:
            raise RuntimeError(f"JsonlWriter for {self.path} is closed")
        self._file.write(json.dumps(frame_record(frame), separators=(",", ":"), allow_nan=False) + "\n")
        self._file.flush()
        self.lines_written += 1

    def close(self) -> None:
        """Close the file. Safe to call again."""
        f, self._file = self._file, None
        if f is not None:
            f.close()


def source_path(path: str | os.PathLike, source_id: int) -> Path:
    """``out.mp4`` -> ``out_s{source_id}.mp4``."""
    p = Path(path)
    return p.with_name(f"{p.stem}_s{source_id}{p.suffix}")


@dataclass
class SinkConfig:
    """Options of the output sinks (the ``sink`` config section).

    Attributes:
        record: MP4 path (one file per source, see the module docstring); ``None``: no video.
        jsonl: JSON Lines path for keypoints (all sources); ``None``: no keypoints file.
        fps: frame rate for a recording whose first frame has no ``info["fps"]`` (live sources).
        crf: x264 quality (0 .. 51).
        preset: x264 speed preset.
        show: show the frames in a window (:class:`WindowSink`; needs a GUI build of OpenCV).
        fragmented: fragmented MP4 (flat memory for 24/7 recordings, playable even after a kill);
            None: fragmented for live sources, ``faststart`` for files (see :class:`Mp4Writer`).
        serve: ``[HOST:]PORT`` of the live browser view (:class:`stream.web.WebSink`; host
            127.0.0.1 unless given; a non-loopback host requires a token).
        serve_token: the view's access token (default: generated for non-loopback hosts, or
            ``$POSESTREAM_SERVE_TOKEN``).
        max_viewers, jpeg_quality: limits of the browser view.
        publish: ZeroMQ PUB address for the per-frame JSON (``tcp://127.0.0.1:5555``).
        publish_keys: a keys folder (``posestream keys``): the publisher is a CurveZMQ server that
            only the subscribers whose public keys are in its ``authorized/`` accept
            (``posestream listen --keys DIR --name NAME``); for tcp across hosts.
        stream: ``rtsp://`` / ``rtmp://`` URLs to push the annotated H.264 to.
    """

    record: str | None = None
    jsonl: str | None = None
    fps: float = 30.0
    crf: int = 23
    preset: str = "veryfast"
    show: bool = False
    fragmented: bool | None = None
    serve: str | int | None = None
    serve_token: str | None = None
    max_viewers: int = 8
    jpeg_quality: int = 80
    publish: str | None = None
    publish_keys: str | None = None
    stream: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.serve is not None:
            from posestream.stream.web import parse_serve

            parse_serve(self.serve)  # a ValueError names what is wrong with it
        if isinstance(self.max_viewers, bool) or not isinstance(self.max_viewers, int) or not 1 <= self.max_viewers <= 1000:
            raise ValueError(f"max_viewers must be an integer in 1..1000, got {self.max_viewers!r}")
        if isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, int) or not 10 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be an integer in 10..100, got {self.jpeg_quality!r}")
        if isinstance(self.stream, str):
            self.stream = [self.stream]
        if self.publish is not None:
            from posestream.stream.publish import parse_address

            parse_address(self.publish)
        if self.publish_keys is not None:
            if not isinstance(self.publish_keys, str) or self.publish is None:
                raise ValueError(f"publish_keys must be a keys folder, with publish set; got {self.publish_keys!r}")
            from posestream.stream.secure import KeyFileError, server_options

            try:
                server_options(self.publish_keys)
            except KeyFileError as e:
                raise ValueError(str(e)) from None
            if not os.path.isdir(os.path.join(self.publish_keys, "authorized")):
                raise ValueError(f"{os.path.join(self.publish_keys, 'authorized')}: no such folder (the public keys "
                                 f"of the subscribers to accept)")
        if self.stream:
            from posestream.stream.restream import check_url

            for url in self.stream:
                check_url(url)
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not (
                math.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise ValueError(f"fps must be a number in (0, 1000], got {self.fps!r}")
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be an integer in 0..51, got {self.crf!r}")
        if self.preset not in _X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(_X264_PRESETS)}, got {self.preset!r}")
        if not isinstance(self.show, bool):
            raise ValueError(f"show must be true or false, got {self.show!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "SinkConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return from_section(cls, d, "sink option")

    def output_paths(self) -> dict[str, str]:
        """The files this configuration writes: ``{"record": ..., "jsonl": ...}`` (set ones only)."""
        return {k: v for k, v in (("record", self.record), ("jsonl", self.jsonl)) if v is not None}


_X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def build_sinks(config: SinkConfig) -> list:
    """The sinks a :class:`SinkConfig` asks for, in a fixed order (MP4, JSONL, window)."""
    sinks: list = []
    if config.record is not None:
        sinks.append(Mp4Sink(config.record, fps=config.fps, crf=config.crf, preset=config.preset,
                             fragmented=bool(config.fragmented)))
    if config.jsonl is not None:
        sinks.append(JsonlSink(config.jsonl))
    if config.show:
        sinks.append(WindowSink())
    if config.serve is not None:
        from posestream.stream.web import WebSink, parse_serve

        host, port = parse_serve(config.serve)
        token = config.serve_token or os.environ.get("POSESTREAM_SERVE_TOKEN") or None
        sinks.append(WebSink(host, port, token=token, max_viewers=config.max_viewers,
                             jpeg_quality=config.jpeg_quality))
    if config.publish is not None:
        from posestream.stream.publish import PublishSink

        sinks.append(PublishSink(config.publish, keys=config.publish_keys))
    for url in config.stream:
        from posestream.stream.restream import RestreamSink

        sinks.append(RestreamSink(url, crf=config.crf, preset=config.preset))
    return sinks


class Sink:
    """An output of the pipeline: gets every frame that reaches the output process, in order.

    Each sink is independent: one that fails (a full disk, a closed window) is closed and reported
    without stopping the others. ``needs_image``: the sink wants the rendered image (the render
    stage runs only when a sink does).
    """

    name = "sink"
    needs_image = False

    def open(self, meta: dict) -> None:
        pass

    def write(self, frame: Frame) -> None:
        raise NotImplementedError

    def reset(self, source_id: int) -> None:
        pass

    def end(self, source_id: int) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def paths(self) -> dict[str, str]:
        return {}

    def summary(self) -> dict:
        return {}


class _Recording:
    """The MP4 state of one source."""

    def __init__(self, writer: Mp4Writer, epoch: int) -> None:
        self.writer = writer
        self.epoch = epoch
        self.offset = 0.0  # added to source pts so that a restarted stream continues the file
        self.last_pts: float | None = None
        self.new_epoch = False
        self.done = False


class Mp4Sink(Sink):
    """H.264 MP4 recordings, one per source (see the module docstring for the file names).

    A recording opens on its source's first frame (size from the image, rate from
    ``frame.info["fps"]`` or ``fps``) and is finalised at that source's end of stream or at
    :meth:`close`. A frame whose size differs from the recording's (a camera back at another
    resolution) is resized to it. After a new epoch whose pts do not follow the last one written
    (a restarted stream), pts are shifted to continue one frame interval after it.

    Attributes:
        frames_written, dropped (frames after the source's end, or without an image), resized.
    """

    name = "mp4"
    needs_image = True

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, crf: int = 23, preset: str = "veryfast",
                 fragmented: bool = False) -> None:
        self.path = Path(path)
        self.fps, self.crf, self.preset, self.fragmented = fps, crf, preset, bool(fragmented)
        self._recordings: dict[int, _Recording] = {}
        self._first_source: int | None = None
        self._paths: dict[int, Path] = {}
        self.frames_written = 0
        self.dropped = 0
        self.resized = 0

    @property
    def paths(self) -> dict[str, str]:
        return {f"record_s{src}": str(p) for src, p in sorted(self._paths.items())}

    def _recording_path(self, source_id: int) -> Path:
        if self._first_source is None:
            self._first_source = source_id
        if source_id == self._first_source:
            return self.path
        return source_path(self.path, source_id)

    def _open_recording(self, frame: Frame) -> _Recording:
        h, w = frame.image.shape[:2]
        fps = frame.info.get("fps") if isinstance(frame.info, dict) else None
        if not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0):
            fps = self.fps
        path = self._recording_path(frame.source_id)
        writer = Mp4Writer(path, float(fps), w, h, crf=self.crf, preset=self.preset, fragmented=self.fragmented)
        self._paths[frame.source_id] = path
        LOG.info("recording source %d to %s (%dx%d, %.3g fps)", frame.source_id, path, w, h, fps)
        return _Recording(writer, frame.epoch)

    def reset(self, source_id: int) -> None:
        rec = self._recordings.get(source_id)
        if rec is not None:
            rec.new_epoch = True

    def write(self, frame: Frame) -> None:
        if frame.image is None:
            self.dropped += 1
            return
        rec = self._recordings.get(frame.source_id)
        if rec is None:
            rec = self._recordings[frame.source_id] = self._open_recording(frame)
        if rec.done:
            if self.dropped == 0:
                LOG.warning("frames of source %d after its end of stream are not recorded", frame.source_id)
            self.dropped += 1
            return
        wr = rec.writer
        image = frame.image
        if image.shape[:2] != (wr.height, wr.width):
            if self.resized == 0:
                LOG.warning("source %d changed size to %dx%d; resizing to the recording's %dx%d",
                            frame.source_id, image.shape[1], image.shape[0], wr.width, wr.height)
            image = cv2.resize(image, (wr.width, wr.height), interpolation=cv2.INTER_AREA)
            self.resized += 1
        pts = None
        if frame.pts is not None:
            pts = float(frame.pts) + rec.offset
            if rec.new_epoch or frame.epoch != rec.epoch:
                rec.new_epoch = False
                rec.epoch = frame.epoch
                if rec.last_pts is not None and pts <= rec.last_pts:
                    rec.offset += rec.last_pts + 1.0 / float(wr.rate) - pts
                    pts = float(frame.pts) + rec.offset
            rec.last_pts = pts
        wr.write(image, pts)
        self.frames_written += 1

    def end(self, source_id: int) -> None:
        rec = self._recordings.get(source_id)
        if rec is not None and not rec.done:
            rec.done = True
            rec.writer.close()

    def close(self) -> None:
        """Finalise every file (all are attempted; the first error is raised after). Safe to call again."""
        errors = []
        for rec in self._recordings.values():
            try:
                rec.writer.close()
            except Exception as e:  # noqa: BLE001 - keep closing the others
                errors.append(e)
            rec.done = True
        first = self._first_source
        if len(self._recordings) > 1 and first is not None and self._paths.get(first) == self.path:
            target = source_path(self.path, first)
            os.replace(self._paths[first], target)
            self._paths[first] = target
        if errors:
            raise errors[0]

    def summary(self) -> dict:
        return {"frames_recorded": self.frames_written}


class JsonlSink(Sink):
    """Keypoints of every frame (all sources) as JSON Lines (:class:`JsonlWriter`); opened on the first frame."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._writer: JsonlWriter | None = None

    @property
    def paths(self) -> dict[str, str]:
        return {"jsonl": str(self.path)} if self._writer is not None else {}

    def write(self, frame: Frame) -> None:
        if self._writer is None:
            self._writer = JsonlWriter(self.path)
        self._writer.write(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class OutputStage:
    """The last stage: hands every frame to each sink. A sink that raises is closed and reported
    (``sink_errors``) while the others go on; the run then ends with a failure status."""

    name = "output"

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = list(sinks)
        self._failed: dict[str, str] = {}   # label -> "hook: message", what summary() reports
        self._dead: set[int] = set()        # indexes of the failed sinks (two sinks may share a name)
        names = [getattr(s, "name", "sink") for s in self.sinks]
        self._labels = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]

    @property
    def needs_image(self) -> bool:
        return any(s.needs_image for s in self.sinks)

    def _each(self, what: str, *args) -> None:
        for i, sink in enumerate(self.sinks):
            if i in self._dead:
                continue
            try:
                getattr(sink, what)(*args)
            except Exception as e:  # noqa: BLE001 - one sink's failure does not stop the others
                msg = " ".join(str(e).split()) or type(e).__name__
                LOG.error("sink %s failed (%s); the other outputs go on", self._labels[i], msg)
                self._dead.add(i)
                self._failed[self._labels[i]] = f"{what}: {msg}"
                try:
                    sink.close()
                except Exception:  # noqa: BLE001
                    pass

    def open(self, meta: dict) -> dict:
        """Open every sink (one that cannot — no GUI for the window, a port in use — fails the run
        at start, after closing those already open); returns what the sinks report (the view's URL)."""
        out: dict = {}
        opened = []
        try:
            for sink in self.sinks:
                out.update(sink.open(meta) or {})
                opened.append(sink)
        except BaseException:
            for sink in opened:
                try:
                    sink.close()
                except Exception:  # noqa: BLE001
                    pass
            raise
        return out

    def process(self, frame: Frame) -> Frame:
        self._each("write", frame)
        return frame

    def reset(self, source_id: int) -> None:
        self._each("reset", source_id)

    def end(self, source_id: int) -> None:
        self._each("end", source_id)

    def close(self) -> None:
        errors = []
        for i, sink in enumerate(self.sinks):
            if i in self._dead:
                continue
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001 - close them all
                errors.append(e)
        if errors:
            raise errors[0]

    @property
    def paths(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for sink in self.sinks:
            out.update(sink.paths)
        return out

    def summary(self) -> dict:
        d: dict = {"outputs": self.paths, "sink_errors": dict(self._failed)}
        for sink in self.sinks:
            for key, value in (sink.summary() or {}).items():
                if key in d:  # several sinks of one kind (two --stream URLs): a list of their summaries
                    prev = d[key]
                    d[key] = (prev if isinstance(prev, list) else [prev]) + [value]
                else:
                    d[key] = value
        return d


class WindowSink(Sink):
    """Live OpenCV windows (``--show``): one per source.

    ``show()`` displays a frame and pumps the window's events (that is its job, unlike the file
    writers). The pip package ``opencv-python-headless`` has no GUI; :meth:`open` then fails with
    a one-line :class:`stream.cli.UserError`.

    Args:
        title: title of source 0's window; source ``i > 0`` gets ``"{title} s{i}"``.
    """

    name = "window"
    needs_image = True

    def __init__(self, title: str = "posestream") -> None:
        self.title = title
        self._windows: set[str] = set()
        self._open = False
        self._closed_by_user = False

    def open(self, meta: dict | None = None) -> None:
        """Create source 0's window (so a missing GUI fails before any frame is processed).

        Raises:
            UserError: OpenCV was built without GUI support.
        """
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise UserError("--show needs a GUI build of OpenCV (pip install opencv-python)") from None
        self._windows.add(self.title)
        self._open = True

    def __enter__(self) -> "WindowSink":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    def show(self, image_rgb: np.ndarray, source_id: int = 0) -> bool:
        """Display an (H, W, 3) uint8 RGB image; returns False once the user pressed q or Esc."""
        if not self._open:
            raise RuntimeError("WindowSink is not open")
        name = self.title if source_id == 0 else f"{self.title} s{source_id}"
        if name not in self._windows:
            cv2.namedWindow(name, cv2.WINDOW_NORMAL)
            self._windows.add(name)
        cv2.imshow(name, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def write(self, frame: Frame) -> None:
        """Show the frame (the pipeline's sink interface); after q / Esc the window stays closed."""
        if self._closed_by_user or frame.image is None:
            return
        if not self.show(frame.image, frame.source_id):
            LOG.info("window closed by the user; the other outputs go on")
            self._closed_by_user = True
            self.close()

    def close(self) -> None:
        """Destroy the windows. Safe to call again."""
        self._open = False
        windows, self._windows = self._windows, set()
        for name in windows:
            try:
                cv2.destroyWindow(name)
            except cv2.error:
                pass
