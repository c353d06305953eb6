"""The Python API: ``posestream.Pipeline`` (the multi-process pipeline as a generator of results)
and ``posestream.Estimator`` (one image at a time, in this process).

    import posestream

    with posestream.Pipeline(["clip.mp4", "rtsp://cam/1"], model="default", record="out.mp4") as pipe:
        for r in pipe:                 # posestream.Result
            for p in r.people:         # posestream.Person: track_id, score, keypoints (K, 3) x, y, score
                ...

    est = posestream.Estimator("default")
    people = est(image_rgb)            # list of posestream.Person (track_id -1 unless track=True)

The same processes as ``posestream run`` run underneath; results come from the output process
over a ZeroMQ link (images, when asked for, through its shared-memory ring: read-only views).
With the lossless policy (files) every frame is yielded and a slow loop holds the pipeline back;
with the live policy (cameras) frames the loop did not take in time are dropped (counted).
Leaving the loop early (``break``), an exception in it, ``close()`` or garbage collection stops the
pipeline: capture stops, the frames in flight drain, recordings are finalised, every process
exits and nothing is left in the temporary folder or ``/dev/shm``. Errors raise
:class:`PipelineError` with a one-line message: a bad source, model, option or output path when
the pipeline is built (before the first frame); a stage that fails later after the results that
reached the output were yielded.
"""
from __future__ import annotations

import io
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cli import UserError
from .messages import Frame, now_ns
from .pipeline import PipelineConfig, PipelineError, Supervisor, validate_config

__all__ = ["Pipeline", "Estimator", "Result", "Person", "PipelineError"]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Person:
    """One person in one frame. ``keypoints``: (K, 3) float32 x, y, score in source pixels (score 0:
    not found); ``track_id``: stable per source across frames (-2 while tentative, -1 untracked)."""

    track_id: int
    score: float
    keypoints: np.ndarray


@dataclass(frozen=True)
class Result:
    """One output frame.

    Attributes:
        source_id: index of the source in the list given; ``source`` its name.
        frame_id: per-source frame counter (gaps are frames the live policy dropped).
        pts: the frame's time in seconds (file pts; capture clock for live sources).
        t_capture_ns: capture time (``time.monotonic_ns()``).
        epoch: stream epoch (a new one after a camera reconnects or changes size).
        people: the people found, tracked and smoothed.
        latency_ms: capture to this result.
        image: (H, W, 3) uint8 RGB source image (read-only) when the pipeline was built with
            ``images=True``, else None.
    """

    source_id: int
    source: str
    frame_id: int
    pts: float | None
    t_capture_ns: int
    epoch: int
    people: tuple
    latency_ms: float
    image: np.ndarray | None = None


def _people(p) -> tuple:
    if p is None or not len(p):
        return ()
    kps = np.asarray(p.keypoints, np.float32)
    return tuple(Person(int(p.track_ids[i]), float(p.scores[i]), kps[i]) for i in range(len(p)))


def _config_from(config) -> dict:
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    from posestream.models.config import ConfigError, load_yaml, locate

    try:
        d, _ = load_yaml(config)
    except ConfigError as e:
        raise PipelineError(str(e), user=True) from None
    return d


class Pipeline:
    """The pose pipeline on one or more sources, as an iterator of :class:`Result`.

    Args:
        sources: a source or a list of them: video files, image folders/globs, webcam indices
            (``0`` or ``"0"``, ``/dev/video0``), ``rtsp://`` URLs.
        model: ``"default"`` (the shipped model), a checkpoint, an ONNX file or a registered name.
        record, jsonl, summary: output files, as ``posestream run --record/--jsonl/--summary``.
        images: give each result the source image (read-only).
        show: a window with the overlay (needs a GUI OpenCV).
        policy: ``auto`` (live for cameras, lossless for files), ``live`` or ``lossless``.
        input_size, backend, device, precision: inference options (``infer`` section;
            precision: ``auto``, ``fp32``, ``bf16``, ``bf16-mixed`` or ``int8``).
        refine: accurate mode: refine every person with MoveNet Thunder (``refine`` section;
            live sources: at most ``refine.live_max_people`` per frame), as ``posestream run --refine``.
        realtime: read files at their own pace, like a camera.
        config: a pipeline YAML file or a dict with its sections (``infer``, ``track``, ``render``,
            ``sink``, ``source_options``, ...); the arguments above override it.
        status: print the status line to stderr.
    """

    def __init__(self, sources, model: str | None = None, *, record=None, jsonl=None, summary=None,
                 images: bool = False, show: bool = False, policy: str | None = None, input_size: int | None = None,
                 backend: str | None = None, device: str | None = None, refine: bool | None = None,
                 realtime: bool = False, config=None, status: bool = False, log_level: int = logging.WARNING,
                 precision: str | None = None) -> None:
        if isinstance(sources, (str, int, Path)):
            sources = [sources]
        try:
            d = _config_from(config)
            cfg = PipelineConfig.from_dict(d)
            cfg.sources = [str(s) for s in sources]
            infer = dict(cfg.infer)
            for key, val in (("model", model), ("input_size", input_size), ("backend", backend), ("device", device),
                             ("precision", precision)):
                if val is not None:
                    infer[key] = val
            cfg.infer = infer
            if refine is not None:
                cfg.refine = {**(cfg.refine or {}), "enabled": bool(refine)}
            sink = dict(cfg.sink)
            for key, val in (("record", record), ("jsonl", jsonl)):
                if val is not None:
                    sink[key] = str(val)
            if show:
                sink["show"] = True
            cfg.sink = sink
            if policy is not None:
                cfg.policy = policy
            if realtime:
                opts = dict(cfg.source_options or {})
                opts["file"] = {**(opts.get("file") or {}), "realtime": True}
                cfg.source_options = opts
            if summary is not None:
                cfg.summary = str(summary)
            if not status:
                cfg.status_interval = 0
            cfg.__post_init__()
            validate_config(cfg)
        except PipelineError:
            raise
        except ValueError as e:
            raise PipelineError(" ".join(str(e).split()), user=True) from None
        self.config = cfg
        self.images = bool(images)
        self._log_level = log_level
        self._sup: Supervisor | None = None
        self._rx = None
        self._ended: set[int] = set()
        self._done = False
        self._closed = False
        self._output_gone = False
        self.summary: dict | None = None
        self.meta: dict = {}
        self._finalizer = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> "Pipeline":
        """Start the processes and wait until every source is open and the model loaded. Raises
        :class:`PipelineError` (nothing left running) when one cannot start. Idempotent."""
        if self._sup is not None:
            return self
        if self._closed:
            raise PipelineError("the pipeline is closed")
        import sys

        sup = Supervisor(self.config, log_level=self._log_level, out=sys.stderr if self.config.status_interval
                         else io.StringIO(), results=("auto", self.images))
        self._sup = sup
        self._finalizer = weakref.finalize(self, _cleanup, sup)
        try:
            sup.start()
        except PipelineError:
            self.summary = sup.finish()
            self._closed = self._done = True
            raise
        except BaseException:
            self.summary = sup.finish()
            self._closed = self._done = True
            raise
        self._rx = sup.results_rx
        self.meta = sup.meta
        return self

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def close(self) -> dict | None:
        """Stop (if still running), finalise the outputs, wait for every process; returns the
        summary. Safe to call again."""
        if self._closed:
            return self.summary
        self._closed = True
        sup = self._sup
        if sup is None:
            return None
        if not self._done:
            sup.request_stop()
            # keep taking results (and dropping them) so that a lossless pipeline can drain
            while sup.step(0):
                if self._rx is not None:
                    self._rx.recv(timeout_ms=20)
        self.summary = sup.finish()
        self._done = True
        if self._finalizer is not None:
            self._finalizer.detach()
        return self.summary

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the pipeline's processes (capture0.., infer, track, output)."""
        return self._sup.pids() if self._sup is not None else {}

    # -- iteration ---------------------------------------------------------------------------------

    def __iter__(self):
        self.start()
        return self

    def __next__(self) -> Result:
        if self._done or self._closed:
            raise StopIteration
        sup = self._sup
        n = len(self.config.sources)
        while True:
            f = self._rx.recv(timeout_ms=0 if self._output_gone else 50)
            if f is not None:
                if f.meta is not None:
                    self.meta = dict(f.meta)
                    continue
                if f.eos:
                    self._ended.add(f.source_id)
                    continue
                return self._result(f)
            if self._output_gone or len(self._ended) >= n:
                if not self._output_gone:
                    while sup.step(50):  # the output process finishes its files
                        pass
                self._finish_iteration()
            if not sup.step(0):
                self._output_gone = True

    def _finish_iteration(self):
        self.summary = self._sup.finish()
        self._done = True
        self.close()
        s = self.summary
        sink_errors = [e for e in s["errors"] if e.startswith("output ")]
        if s["failed_stage"] or sink_errors:
            raise PipelineError("; ".join(s["errors"]))
        if s["errors"] and s["frames_out"] == 0:
            raise PipelineError(s["errors"][0], user=True)
        raise StopIteration

    def _result(self, f: Frame) -> Result:
        srcs = self.config.sources
        name = srcs[f.source_id] if 0 <= f.source_id < len(srcs) else str(f.source_id)
        return Result(source_id=f.source_id, source=name, frame_id=f.frame_id, pts=f.pts,
                      t_capture_ns=f.t_capture_ns, epoch=f.epoch, people=_people(f.people),
                      latency_ms=(now_ns() - f.t_capture_ns) / 1e6, image=f.image if self.images else None)


def _cleanup(sup: Supervisor) -> None:
    """Garbage collection or interpreter exit with a pipeline still running: stop it in order."""
    try:
        sup.request_stop()
        rx = getattr(sup, "results_rx", None)
        while sup.step(0):
            if rx is not None:
                rx.recv(timeout_ms=20)
        sup.finish()
    except Exception:  # noqa: BLE001
        pass


class Estimator:
    """Pose estimation in this process, one image at a time (no pipeline, no processes).

    Args:
        model, backend, device, input_size, precision, fp16: as for :class:`Pipeline` (``infer``
            section).
        track: keep track ids (and smoothing) across calls, as for one video source.
        refine: refine every person with MoveNet Thunder (the accurate mode); a dict is a
            ``refine`` section (e.g. ``{"max_people": 2}``).
    """

    def __init__(self, model: str = "default", *, backend: str | None = None, device: str | None = None,
                 input_size: int | None = None, fp16: bool = False, track: bool = False,
                 refine: bool | dict = False, precision: str | None = None) -> None:
        from .infer import InferConfig, InferenceStage

        d = {"model": model, "fp16": fp16}
        for key, val in (("backend", backend), ("device", device), ("input_size", input_size),
                         ("precision", precision)):
            if val is not None:
                d[key] = val
        try:
            cfg = PipelineConfig(sources=["-"], infer=d)
            cfg.sources = []
            _check_model(cfg)
            icfg = InferConfig.from_dict(d)
            self._stage = InferenceStage(icfg)
            self._refine = None
            rd = dict(refine) if isinstance(refine, dict) else {}
            if refine:
                from posestream.models.refine import RefineConfig

                from .pipeline import check_model_spec

                rcfg = RefineConfig.from_dict({**rd, "enabled": True})
                check_model_spec(rcfg.model, icfg.backend, "topdown")
            meta = self._stage.open({})
            if refine:
                from .refine import RefineStage

                self._refine = RefineStage(rcfg, icfg)
                meta.update(self._refine.open(meta) or {})
        except (ValueError, FileNotFoundError) as e:
            raise PipelineError(" ".join(str(e).split()), user=True) from None
        except UserError as e:
            raise PipelineError(str(e), user=True) from None
        self.meta = meta["model"]
        self._tracker = None
        if track:
            from .track import TrackStage

            self._tracker = TrackStage()
            self._tracker.open(meta)
        self._n = 0

    def __call__(self, image_rgb: np.ndarray, t_capture_ns: int | None = None) -> list[Person]:
        """People in an (H, W, 3) uint8 RGB image, in its pixels."""
        a = np.asarray(image_rgb)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or min(a.shape[:2]) < 1:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {a.dtype} array of shape {a.shape}")
        frame = Frame(source_id=0, frame_id=self._n, t_capture_ns=t_capture_ns or now_ns(), image=a)
        self._n += 1
        frame = self._stage.process(frame)
        if self._refine is not None:
            frame = self._refine.process(frame)
        if self._tracker is not None:
            frame = self._tracker.process(frame)
        return list(_people(frame.people))

    def close(self) -> None:
        self._stage.close()
        if self._refine is not None:
            self._refine.close()

    def __enter__(self) -> "Estimator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_model(cfg: PipelineConfig) -> None:
    """The model checks of :func:`validate_config` alone (no sources, no outputs)."""
    from .pipeline import check_model_spec

    check_model_spec(cfg.infer.get("model", "default"), cfg.infer.get("backend", "auto"), "bottomup")
