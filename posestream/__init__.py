"""posestream: real-time multi-person pose estimation for cameras and video files.

The public API (see the README, *Python API*)::

    import posestream

    with posestream.Pipeline(["clip.mp4"], model="default", record="out.mp4") as pipe:
        for r in pipe:               # posestream.Result, one per output frame
            print(r.source_id, r.frame_id, len(r.people))

    est = posestream.Estimator("default")   # in this process, one image at a time
    people = est(image_rgb)                 # list of posestream.Person

The packages live under this one name: ``posestream.models`` (skeletons, fields, networks,
checkpoints), ``posestream.stream`` (the pipeline and the CLI), ``posestream.training``.
Importing ``posestream`` itself is cheap: the API's names load on first use.
"""
from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["__version__", "Pipeline", "Estimator", "Result", "Person", "PipelineError"]

_API = {"Pipeline", "Estimator", "Result", "Person", "PipelineError"}


def __getattr__(name: str):
    if name in _API:
        from .stream import api

        return getattr(api, name)
    raise AttributeError(f"module 'posestream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)
