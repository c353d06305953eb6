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
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .messages import Frame, People

LOG = logging.getLogger(__name__)

__all__ = ["InferConfig", "InferenceStage", "load_network"]


@dataclass
class InferConfig:
    """Inference settings (YAML section ``infer``).

    model: ``default`` (the shipped, trained ``models/weights/movenet_paf.pt``), a posestream
        checkpoint (.pt), an ONNX export (.onnx) or a registered model name (random weights: tests).
    backend: auto (ONNX Runtime when available), onnxruntime or torch.
    device: auto, cpu or cuda.
    """

    model: str = "default"
    backend: str = "auto"
    device: str = "auto"
    fp16: bool = False
    input_size: int | None = None
    threads: int | None = None
    decoder: dict = field(default_factory=dict)
    cache_dir: str | None = None
    slow_ms: float = 0.0  # artificial extra latency per frame (tests of the live policy)

    @classmethod
    def from_dict(cls, d: dict | None) -> "InferConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        for k in d:
            if k not in known:
                raise ValueError(f"unknown key infer.{k}; known: {', '.join(sorted(known))}")
        return cls(**d)


def _cache_dir(cfg: InferConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("POSESTREAM_CACHE", Path.home() / ".cache" / "posestream"))


def load_network(cfg: InferConfig):
    """-> (run(x: (1,3,H,W) float32 ndarray) -> (heatmaps, pafs) ndarrays, meta, description)."""
    from posestream.models.checkpoint import load_checkpoint
    from posestream.models.export import export_onnx, onnx_session, read_onnx_meta
    from posestream.models.registry import build_model, list_models

    from posestream.models.shipped import DEFAULT_MODEL, shipped_checkpoint

    spec = cfg.model
    path = shipped_checkpoint() if spec == DEFAULT_MODEL else Path(spec)
    random_init = False
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX model not found")
        meta = read_onnx_meta(path)
        model = None
    elif path.suffix in (".pt", ".pth") or path.exists():
        model, meta = load_checkpoint(path)
    elif spec in list_models():
        import torch

        torch.manual_seed(0)
        model, random_init = build_model(spec).eval(), True
        meta = model.meta()
    else:
        raise ValueError(f"{spec}: not a checkpoint, ONNX file or registered model (known: {', '.join(list_models())})")
    backend = cfg.backend
    if backend == "auto":
        backend = "onnxruntime"
    if backend not in ("onnxruntime", "torch"):
        raise ValueError(f"unknown backend {backend!r}: use auto, onnxruntime or torch")
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
        run = torch_runner(model, dev, half)
        return run, meta, f"{desc}, PyTorch on {dev}{' fp16' if half else ''}"
    import onnxruntime as ort

    if model is not None:  # export once, cache by content
        from posestream.models.export import EXPORT_REVISION

        h = hashlib.sha1(repr((EXPORT_REVISION, sorted(meta.items()))).encode())
        for v in model.state_dict().values():
            h.update(v.detach().cpu().numpy().tobytes())
        onnx_path = _cache_dir(cfg) / f"{meta['arch']}-{h.hexdigest()[:16]}.onnx"
        if not onnx_path.is_file():
            export_onnx(model, onnx_path, meta=meta)
        path = onnx_path
    providers = ["CPUExecutionProvider"]
    if cfg.device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sess = onnx_session(path, providers=providers, threads=cfg.threads)

    def run(x: np.ndarray):
        return tuple(sess.run(None, {"image": x}))

    return run, meta, f"{desc}, ONNX Runtime ({providers[0]})"


class InferenceStage:
    """Plain stage: ``process(frame)`` sets ``frame.people`` (source pixels)."""

    def __init__(self, config: InferConfig) -> None:
        self.cfg = config
        self.predictor = None

    def open(self) -> None:
        from posestream.models.fields import DecoderConfig
        from posestream.models.predictor import Predictor

        run, self.meta, self.description = load_network(self.cfg)
        self.predictor = Predictor(run, self.meta, DecoderConfig.from_dict(self.cfg.decoder), self.cfg.input_size)
        LOG.info("inference: %s, input %d", self.description, self.predictor.input_size)

    def process(self, frame: Frame) -> Frame:
        if frame.eos or frame.image is None:
            return frame
        poses = self.predictor(frame.image).poses
        frame.people = People(poses.keypoints, poses.scores, np.full(len(poses.scores), -1, np.int64))
        if self.cfg.slow_ms:
            time.sleep(self.cfg.slow_ms / 1000.0)
        return frame

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self.predictor = None
