"""The model that ships in the repository: what ``posestream run`` uses when no model is given.

``models/weights/movenet_paf.pt`` — the ``movenet_paf`` network (MoveNet MultiPose Lightning
backbone + FPN, Google, Apache-2.0; our heatmap + PAF heads) trained with
``configs/train/movenet_paf.yaml`` by ``posestream train`` and stored in float16 by
``posestream ship``. Its metadata carries the recipe, the training-time metrics and the held-out
evaluation. The ONNX file is produced from it on first use and cached (``~/.cache/posestream``).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL", "SHIPPED_CHECKPOINT", "SHIPPED_REFINER", "shipped_checkpoint", "shipped_refiner"]

DEFAULT_MODEL = "default"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "movenet_paf.pt"
# MoveNet SinglePose Thunder (Google, Apache-2.0), the published weights unchanged: the --refine model
SHIPPED_REFINER = Path(__file__).resolve().parent / "weights" / "movenet_thunder.pt"


def shipped_checkpoint() -> Path:
    """Path of the shipped checkpoint; FileNotFoundError (one line) when it is missing."""
    if not SHIPPED_CHECKPOINT.is_file():
        raise FileNotFoundError(f"{SHIPPED_CHECKPOINT}: the shipped model is missing from this checkout; "
                                f"give one with --model (a checkpoint, an ONNX file or a model name)")
    return SHIPPED_CHECKPOINT


def shipped_refiner() -> Path:
    """Path of the shipped refinement model (``movenet_thunder.pt``); FileNotFoundError when missing."""
    if not SHIPPED_REFINER.is_file():
        raise FileNotFoundError(f"{SHIPPED_REFINER}: the shipped refinement model is missing from this checkout; "
                                f"give one with refine.model (a movenet_thunder checkpoint or ONNX file)")
    return SHIPPED_REFINER
