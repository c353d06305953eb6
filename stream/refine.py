"""Refinement stage: after bottom-up grouping, every person (or the ``max_people`` largest on a
live source) is cropped and run through MoveNet Thunder in one batched call per frame, and the
refined keypoints replace the bottom-up ones (``posestream run --refine``; the algorithm is
:mod:`posestream.models.refine`).

It runs in the inference process right after the inference stage (it needs the frame's pixels,
and on a CPU the two networks share the same cores anyway), with the inference section's backend,
device and threads: ONNX Runtime or PyTorch, CPU or CUDA, like the bottom-up model.
"""
from __future__ import annotations

import logging

import numpy as np

from .messages import Frame, People
from .stage import BaseStage

LOG = logging.getLogger(__name__)

__all__ = ["RefineStage", "resolve_refine_model"]


def resolve_refine_model(spec: str) -> str:
    """``default`` -> the shipped Thunder checkpoint; anything else unchanged."""
    from posestream.models.shipped import DEFAULT_MODEL, shipped_refiner

    return str(shipped_refiner()) if spec == DEFAULT_MODEL else spec


class RefineStage(BaseStage):
    """``process(frame)`` replaces ``frame.people`` by the refined people.

    Args:
        config: a :class:`posestream.models.refine.RefineConfig`.
        infer: the pipeline's :class:`posestream.stream.infer.InferConfig` (backend, device,
            threads, export cache); its model is not used.
        live: the pipeline runs a live policy: ``max_people`` defaults to ``live_max_people``.
    """

    name = "refine"

    def __init__(self, config, infer, live: bool = False) -> None:
        self.cfg, self.infer_cfg, self.live = config, infer, bool(live)
        self.refiner = None
        self.cap = config.max_people if config.max_people is not None else (config.live_max_people if live else None)
        self.refined = self.seen = 0

    def open(self, meta: dict | None = None) -> dict:
        from dataclasses import replace

        from posestream.models.checkpoint import CheckpointError
        from posestream.models.refine import Refiner

        from .cli import UserError
        from .infer import load_network, network_device

        sk = ((meta or {}).get("model") or {}).get("skeleton", "coco17")
        if sk != "coco17":
            raise UserError(f"refine: the refinement model predicts the 17 COCO keypoints; the model's skeleton is {sk}")
        try:
            cfg = replace(self.infer_cfg, model=resolve_refine_model(self.cfg.model), input_size=None, slow_ms=0.0)
            run, tmeta, desc = load_network(cfg, kind="topdown")
        except (ValueError, FileNotFoundError, CheckpointError) as e:
            raise UserError("refine: " + " ".join(str(e).split())) from None
        self.refiner = Refiner(run, tmeta, self.cfg, network_device(desc))
        cap = "all people" if self.cap is None else f"at most {self.cap} people per frame"
        LOG.info("refinement: %s, %s, %d crop(s) per call", desc, cap, self.refiner.batch)
        return {"refine": {"model": tmeta.get("arch"), "description": desc, "max_people": self.cap}}

    def process(self, frame: Frame) -> Frame:
        people = frame.people
        if frame.image is None or people is None or len(people.scores) == 0:
            return frame
        from posestream.models.fields import Poses

        poses = self.refiner(frame.image, Poses(people.keypoints, people.scores), self.cap)
        self.seen += len(people.scores)
        self.refined += self.refiner.last_refined
        frame.people = People(poses.keypoints, poses.scores, np.full(len(poses.scores), -1, np.int64))
        return frame

    def close(self) -> None:
        if self.seen:
            LOG.info("refinement: %d of %d people refined", self.refined, self.seen)
        self.refiner = None
