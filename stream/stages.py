"""Factories that build the pipeline's stages from plain config dicts (what a spawned process gets)."""
from __future__ import annotations

__all__ = ["infer_stage", "track_stage"]


def infer_stage(config: dict | None = None):
    from .infer import InferConfig, InferenceStage

    return InferenceStage(InferConfig.from_dict(config))


def track_stage(config: dict | None = None):
    from .track import TrackerConfig, TrackStage

    return TrackStage(TrackerConfig.from_dict(config or {}))
