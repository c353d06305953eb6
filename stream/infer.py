"""Inference stage: a registry model, checkpoint or ONNX file -> people on every frame.

Backends: ONNX Runtime (CUDA provider when ``onnxruntime-gpu`` is installed, else CPU — the
faster choice on CPUs) and PyTorch (CUDA when present, optional fp16; else CPU). Preprocessing is a
letterbox whose record maps the decoded poses back to source pixels; the decoder is the Numba PAF
grouping of ``models.fields`` with the checkpoint's stride and normalisation.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .messages import Frame, People

LOG = logging.getLogger(__name__)

__all__ = ["InferConfig", "InferenceStage", "load_network", "cuda_available", "MIN_INPUT", "MAX_INPUT"]

MIN_INPUT, MAX_INPUT = 32, 4096


def cuda_available(backend: str = "auto") -> bool:
    """Whether the chosen backend can run on CUDA here."""
    if backend in ("auto", "onnxruntime"):
        try:
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers():
                return True
        except ImportError:
            pass
        if backend == "onnxruntime":
            return False
    import torch

    return bool(torch.cuda.is_available())


@dataclass
class InferConfig:
    """Inference settings (YAML section ``infer``).

    model: ``default`` (the shipped, trained ``models/weights/movenet_paf.pt``), a posestream
        checkpoint (.pt), an ONNX export (.onnx) or a registered model name (random weights: tests).
    backend: auto (on a CPU: the fastest of ONNX Runtime and OpenVINO on this host, measured once
        and cached, see ``stream/backends.py``; on CUDA: ONNX Runtime's CUDA provider),
        onnxruntime, openvino or torch.
    precision: auto (fp32, or a reduced precision whose AP was measured within 0.005 of fp32),
        fp32, bf16 (OpenVINO on CPUs with bf16 arithmetic), bf16-mixed (the same with only the
        backbone in bf16, the FPN, heads and decoding in fp32) or int8 (the backbone in INT8, the
        rest in fp32; 7-bit weights on CPUs without VNNI; ONNX Runtime unless backend is
        openvino).
    int8_fallback: with precision int8, where INT8 cannot run for this model on this CPU (no
        calibration ranges for its weights, a CPU without AVX2), run as precision auto with a
        warning instead of failing (``--preset fast`` sets it).
    device: auto, cpu or cuda.
    spin: let ONNX Runtime's worker threads spin-wait between calls (default off: alone they make a
        call ~1.1x faster, but beside decoding, rendering and H.264 encoding on a 2-core machine
        the spinning takes the cores those need; the pipeline measured 21.8-22.6 fps with
        spinning, 25.1-25.4 without, vtest.avi recorded at 320 on an AVX2 EPYC).
    """

    model: str = "default"
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    fp16: bool = False
    input_size: int | None = None
    threads: int | None = None
    decoder: dict = field(default_factory=dict)
    cache_dir: str | None = None
    slow_ms: float = 0.0  # artificial extra latency per frame (tests of the live policy)
    spin: bool = False
    int8_fallback: bool = False

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "onnxruntime", "openvino", "torch"):
            raise ValueError(f"backend must be auto, onnxruntime, openvino or torch, got {self.backend!r}")
        if self.precision not in ("auto", "fp32", "bf16", "bf16-mixed", "int8"):
            raise ValueError(f"precision must be auto, fp32, bf16, bf16-mixed or int8, got {self.precision!r}")
        if self.precision == "int8" and self.backend == "torch":
            raise ValueError("precision int8 runs on ONNX Runtime or OpenVINO, not torch")
        if self.precision.startswith("bf16") and self.backend in ("onnxruntime", "torch"):
            raise ValueError(f"precision {self.precision} runs on OpenVINO (backend openvino or auto), not {self.backend}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.input_size is not None and (isinstance(self.input_size, bool) or not isinstance(self.input_size, int)
                                            or not MIN_INPUT <= self.input_size <= MAX_INPUT):
            raise ValueError(f"input_size must be an integer in {MIN_INPUT}..{MAX_INPUT} (pixels of the network "
                             f"input's long side), got {self.input_size!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or not 1 <= self.threads <= 1024):
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        if isinstance(self.slow_ms, bool) or not isinstance(self.slow_ms, (int, float)) or not 0 <= self.slow_ms < 1e5:
            raise ValueError(f"slow_ms must be a number >= 0, got {self.slow_ms!r}")
        if not isinstance(self.spin, bool):
            raise ValueError(f"spin must be true or false, got {self.spin!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a name or a path, got {self.model!r}")
        if self.decoder:  # checked here, before anything starts, not only in the inference process
            from posestream.models.config import ConfigError
            from posestream.models.fields import DecoderConfig

            try:
                DecoderConfig.from_dict(self.decoder)
            except ConfigError as e:
                raise e.under("decoder") from None

    @classmethod
    def from_dict(cls, d: dict | None) -> "InferConfig":
        """Build from a config section; an unknown key is an error that names it."""
        from posestream.models.config import from_section

        return from_section(cls, d, "infer option")


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _cache_dir(cfg: InferConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("POSESTREAM_CACHE", Path.home() / ".cache" / "posestream"))


_META_KEYS = ("arch", "stride", "input_size", "mean", "std", "skeleton")


def _check_meta(meta, where) -> dict:
    """The model metadata the predictor needs, or a ValueError naming the file and the key."""
    from posestream.models.skeleton import get_skeleton

    if not isinstance(meta, dict):
        raise ValueError(f"{where}: no model metadata (got {type(meta).__name__})")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{where}: the model metadata lacks {', '.join(missing)}")
    try:
        get_skeleton(meta["skeleton"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: {e.args[0] if e.args else e}") from None
    for key in ("stride", "input_size"):
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{where}: model metadata {key} must be a number > 0, got {v!r}")
    for key in ("mean", "std"):
        v = meta[key]
        if not (isinstance(v, (list, tuple)) and len(v) == 3
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            raise ValueError(f"{where}: model metadata {key} must be 3 numbers, got {v!r}")
    return meta


_KIND_HINT = {"topdown": "a top-down model (one person per crop): it refines the people a bottom-up model "
                         "finds; use it with --refine, not as --model",
              "bottomup": "a bottom-up model (every person in an image), not a top-down refiner; give it as "
                          "--model, and a movenet_thunder checkpoint to refine.model"}


def check_kind(meta: dict, where, kind: str) -> None:
    """ValueError (one line) when the model's kind is not ``kind`` (``bottomup`` / ``topdown``)."""
    got = meta.get("kind", "bottomup")
    if got != kind:
        arch = meta.get("arch", "this model")
        what = f"{where}: {arch} is" if str(where) != arch else f"{arch} is"
        raise ValueError(f"{what} {_KIND_HINT.get(got, got)}")


def load_network(cfg: InferConfig, kind: str = "bottomup", background_calibration: bool = False):
    """-> (run(x: (B,3,H,W) float32 ndarray) -> the network's output ndarrays, meta, description).

    ``kind``: the model kind the caller needs (``bottomup`` for ``--model``, ``topdown`` for the
    refinement); another kind is a ValueError that says which flag takes it.
    ``background_calibration``: on a host where ``--backend auto`` has not measured this model and
    size yet, start on ONNX Runtime fp32 and move to the fastest eligible candidate when the
    measurement (in a child process) is done, instead of waiting for it (the pipeline does this)."""
    from posestream.models.checkpoint import CheckpointError, load_checkpoint
    from posestream.models.export import ExportError, export_onnx, onnx_session, read_onnx_meta
    from posestream.models.registry import build_model, list_models

    from posestream.models.shipped import DEFAULT_MODEL, shipped_checkpoint

    from posestream.models import export as _export

    _export.ORT_SPINNING = bool(cfg.spin)  # every ONNX Runtime session this process makes from here on
    spec = cfg.model
    path = shipped_checkpoint() if spec == DEFAULT_MODEL else Path(spec)
    random_init = False
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX model not found")
        try:
            meta = read_onnx_meta(path)
        except ExportError as e:  # not one of ours (no metadata)
            raise ValueError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own types for a bad file
            raise ValueError(f"{path}: not a readable ONNX model ({_first_line(e)})") from None
        model = None
    elif path.suffix in (".pt", ".pth") or path.exists():
        model = meta = None
        ckpt_onnx = _checkpoint_export_path(cfg, path) if path.is_file() else None
        if cfg.backend != "torch" and ckpt_onnx is not None and ckpt_onnx.is_file():
            try:  # exported before: its metadata is in the export; no PyTorch, no checkpoint load
                meta = read_onnx_meta(ckpt_onnx)
            except Exception:  # noqa: BLE001 - a damaged cache entry: export again below
                meta = None
        if meta is None:
            try:
                model, meta = load_checkpoint(path)
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 - a readable file whose contents do not build a model
                raise ValueError(f"{path}: not a usable checkpoint ({_first_line(e)})") from None
    elif spec in list_models():
        import torch

        torch.manual_seed(0)
        model, random_init = build_model(spec).eval(), True
        meta = model.meta()
    else:
        raise ValueError(f"{spec}: not a checkpoint, ONNX file or registered model (known: {', '.join(list_models())})")
    meta = _check_meta(meta, path if not random_init else spec)
    check_kind(meta, spec if random_init or spec == DEFAULT_MODEL else path, kind)
    backend = cfg.backend
    if backend not in ("auto", "onnxruntime", "openvino", "torch"):
        raise ValueError(f"unknown backend {backend!r}: use auto, onnxruntime, openvino or torch")
    desc = f"{meta['arch']}{' (RANDOMLY INITIALISED: no trained weights)' if random_init else ''}"
    if backend == "torch":
        if model is None:
            raise ValueError(f"{spec}: the torch backend needs a checkpoint or model name, not an ONNX file")
        import torch

        from posestream.models.predictor import torch_runner

        dev = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        half = cfg.fp16 and dev == "cuda"
        model, meta = _with_graph_decode(model, meta)
        run = torch_runner(model, dev, half)
        return run, meta, f"{desc}, PyTorch on {dev}{' fp16' if half else ''}"
    import onnxruntime as ort

    if path.suffix != ".onnx":  # export once, cache by content (the checkpoint file's, or the weights')
        onnx_path = _checkpoint_export_path(cfg, path) if not random_init else _export_path(cfg, model, meta)
        if model is not None:  # (model None: the export's metadata was read above)
            if not onnx_path.is_file():
                export_onnx(model, onnx_path, meta=meta, graph_decode=True)
            meta = read_onnx_meta(onnx_path)  # with the export's graph_decode entry
        path = onnx_path
    cuda = (backend in ("auto", "onnxruntime") and cfg.device in ("auto", "cuda")
            and "CUDAExecutionProvider" in ort.get_available_providers())
    if cuda:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        sess = onnx_session(path, providers=providers, threads=cfg.threads)

        def run(x: np.ndarray):
            return tuple(sess.run(None, {"image": x}))

        return run, meta, f"{desc}, ONNX Runtime ({providers[0]})"
    return _cpu_network(cfg, backend, path, meta, desc, background_calibration)


def _with_graph_decode(model, meta: dict):
    """A bottom-up PyTorch model with the decoding head after it (as the ONNX exports have it)."""
    from posestream.models.decode_head import GraphDecoder, graph_factor
    from posestream.models.fields import DecoderConfig

    if not getattr(model, "with_pafs", False) or not graph_factor(model.stride, DecoderConfig().working_stride):
        return model, meta
    g = GraphDecoder(model, meta, DecoderConfig().working_stride).eval()
    return g, g.meta()


def _cpu_network(cfg: InferConfig, backend: str, onnx_path: Path, meta: dict, desc: str, background: bool = False):
    """The CPU backend: forced by --backend / --precision, or the fastest eligible one measured here
    (``background``: when it has not been measured yet, start on ONNX Runtime fp32 at once and
    measure in a child process, see :class:`stream.backends.BackgroundCalibration`)."""
    from . import backends as B

    precision = "fp32" if cfg.precision == "auto" and backend != "auto" else cfg.precision
    if precision == "int8" and cfg.int8_fallback:
        int8 = [n for n in B.available(onnx_path=onnx_path) if n.endswith("-int8")]
        if not int8:
            why = B.why_not_available(f"{'openvino' if backend == 'openvino' else 'onnxruntime'}-int8",
                                      onnx_path=onnx_path)
            precision = "fp32" if backend != "auto" else "auto"
            LOG.warning("INT8 cannot run here (%s): precision %s instead", why, precision)
    if backend == "onnxruntime" or (backend == "openvino" and precision != "auto"):
        name = B.candidate_name(backend, precision)
        how = "forced"
    elif backend == "auto" and precision.startswith("bf16"):
        name, how = f"openvino-{precision}", "forced"
    elif backend == "auto" and precision == "int8":
        name, how = "onnxruntime-int8", "forced"
    else:  # measure (once per host, model and size)
        size = int(cfg.input_size or meta["input_size"])
        cands = [n for n in B.available(onnx_path=onnx_path) if backend == "auto" or n.startswith(backend)]
        if precision == "fp32":
            cands = [n for n in cands if n.endswith("-fp32")]
        cached = B._cached(B.cache_path(onnx_path, size, cfg.threads, _cache_dir(cfg)), cands)
        if cached is None and background and len(cands) > 1:  # start now; move when the measurement is done
            run = B.BackgroundCalibration(onnx_path, size, cfg.threads, _cache_dir(cfg), cands)
            how = (f"onnxruntime-fp32 at {size} px while {', '.join(c for c in cands if c != run.name)} "
                   f"{'is' if len(cands) == 2 else 'are'} measured in the background; the fastest eligible then")
            LOG.info("backend: %s", how)
            return run, meta, f"{desc}, ONNX Runtime (CPUExecutionProvider) fp32 [{how}]"
        rec = cached or B.calibrate_isolated(onnx_path, size, cfg.threads, _cache_dir(cfg), cands)
        name = B.choose({"results": {n: r for n, r in rec["results"].items() if n in cands}})
        how = B.summary({**rec, "chosen": name})
        LOG.info("backend: %s", how)
    if (background and name.endswith("-int8") and name in B.available(onnx_path=onnx_path)
            and not B.int8_built(onnx_path)):  # a cold start: serve fp32 while the INT8 graph is built
        run = B.DeferredInt8(name, onnx_path, cfg.threads, _cache_dir(cfg))
        how += "; onnxruntime-fp32 until the INT8 graph is built in the background"
        LOG.info("backend: %s", how)
    else:
        try:
            run = B.make_runner(name, onnx_path, cfg.threads, _cache_dir(cfg))
        except ValueError as e:
            raise ValueError(f"--backend {backend} --precision {cfg.precision}: {e}") from None
    label = {"onnxruntime": "ONNX Runtime (CPUExecutionProvider)", "openvino": "OpenVINO CPU"}[name.split("-")[0]]
    return run, meta, f"{desc}, {label} {name.partition('-')[2]} [{how}]"


def _export_path(cfg: InferConfig, model, meta: dict) -> Path:
    from posestream.models.export import EXPORT_REVISION

    h = hashlib.sha1(repr((EXPORT_REVISION, sorted(meta.items()))).encode())
    for v in model.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes())
    return _cache_dir(cfg) / f"{meta['arch']}-{h.hexdigest()[:16]}.onnx"


def _checkpoint_export_path(cfg: InferConfig, path: Path) -> Path:
    """The export of a checkpoint file, keyed by the file's bytes and the exporter's revision, so a
    later start finds it without loading the checkpoint (or importing PyTorch)."""
    from posestream.models.export import EXPORT_REVISION

    h = hashlib.sha1(repr(EXPORT_REVISION).encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return _cache_dir(cfg) / f"{path.stem}-{h.hexdigest()[:16]}.onnx"


def onnx_export_path(cfg: InferConfig, meta: dict) -> Path:
    """Where :func:`load_network` keeps the ONNX export of ``cfg.model`` (a checkpoint or name)."""
    from posestream.models.registry import build_model, list_models
    from posestream.models.shipped import DEFAULT_MODEL, shipped_checkpoint

    spec = cfg.model
    if spec in list_models() and not Path(spec).exists():
        import torch

        torch.manual_seed(0)
        model = build_model(spec).eval()
        return _export_path(cfg, model, model.meta())
    return _checkpoint_export_path(cfg, shipped_checkpoint() if spec == DEFAULT_MODEL else Path(spec))


def network_device(description: str) -> str:
    """``cuda`` or ``cpu``: where a network from :func:`load_network` runs (from its description)."""
    return "cuda" if "cuda" in description.lower() else "cpu"


class InferenceStage:
    """Pipeline stage: ``process(frame)`` sets ``frame.people`` (source pixels).

    ``open`` loads the network and returns the model's metadata (``{"model": {...}}``, see
    :func:`stream.stage.model_meta`, plus ``description``), which travels to the later stages:
    tracking and rendering use its skeleton. A heatmap-only model decodes one person per frame.
    """

    name = "infer"

    def __init__(self, config: InferConfig) -> None:
        self.cfg = config
        self.predictor = None

    def open(self, meta: dict | None = None) -> dict:
        from posestream.models.fields import DecoderConfig
        from posestream.models.predictor import Predictor

        from .stage import model_meta

        from posestream.models.checkpoint import CheckpointError

        from .cli import UserError

        try:
            run, self.meta, self.description = load_network(self.cfg, background_calibration=True)
        except (ValueError, FileNotFoundError, CheckpointError) as e:  # a model that cannot be used: the user's input
            raise UserError(" ".join(str(e).split())) from None
        self.predictor = Predictor(run, self.meta, DecoderConfig.from_dict(self.cfg.decoder), self.cfg.input_size)
        LOG.info("inference: %s, input %d", self.description, self.predictor.input_size)
        info = model_meta(self.meta)
        info["input_size"] = self.predictor.input_size
        info["description"] = f"{self.description}, input {self.predictor.input_size}"
        return {"model": info}

    def reset(self, source_id: int) -> None:
        pass

    def end(self, source_id: int) -> None:
        pass

    def process(self, frame: Frame) -> Frame:
        if frame.eos or frame.image is None:
            return frame
        poses = self.predictor(frame.image).poses
        frame.people = People(poses.keypoints, poses.scores, np.full(len(poses.scores), -1, np.int64))
        if self.cfg.slow_ms:
            time.sleep(self.cfg.slow_ms / 1000.0)
        return frame

    def process_batch(self, frames: list[Frame]) -> list[Frame]:
        """Several frames (of any sources) in one forward call (``--batch``); the same people as
        :meth:`process` on each."""
        todo = [f for f in frames if not (f.eos or f.image is None)]
        if todo:
            for f, pred in zip(todo, self.predictor.batch([f.image for f in todo])):
                poses = pred.poses
                f.people = People(poses.keypoints, poses.scores, np.full(len(poses.scores), -1, np.int64))
            if self.cfg.slow_ms:
                time.sleep(self.cfg.slow_ms / 1000.0)
        return frames

    def close(self) -> None:
        run = getattr(self.predictor, "run", None)
        if hasattr(run, "close"):  # a background calibration still measuring
            run.close()
        self.predictor = None
