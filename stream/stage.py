"""The stage contract: what a pipeline stage is, and what the runner does for it.

A stage is a plain object with no ZeroMQ in it (MediaPipe's calculator contract: the framework
owns timestamps and stream ends, the calculator only processes)::

    class MyStage(BaseStage):
        name = "mine"
        def open(self, meta):            # acquire resources; meta: what the stages upstream said
            return {"mine": {...}}       # metadata this stage adds (travels downstream)
        def process(self, frame):        # one frame in -> a frame out (or None: consumed)
            return frame
        def reset(self, source_id):      # that source started a new epoch (reconnect, new size)
            ...
        def end(self, source_id):        # that source's stream ended: no more frames of it
            ...
        def close(self):                 # release everything; called once, also after errors
            ...

The runner (:mod:`stream.runner`) calls them, and nothing else does:

* ``open(meta)`` once, before the first frame, with the metadata of the stages upstream (the
  inference stage reports ``meta["model"]``: skeleton, keypoints, outputs; see
  :func:`model_meta`); what it returns is merged into the metadata and sent on downstream in a
  control frame, ahead of every frame, and reported to the supervisor in the ``ready`` message.
* ``process(frame)`` for every frame (never for end-of-stream markers or control frames). The
  runner stamps ``frame.timings[stage.name] = [start_ns, end_ns]`` around it and keeps bounded
  statistics of those times; a stage never stamps timings itself.
* ``reset(source_id)`` when a frame of that source arrives with an epoch other than the last one
  seen (the runner keeps the epochs; stages keep no epoch bookkeeping of their own).
* ``end(source_id)`` at that source's end-of-stream marker (the runner forwards the marker).
* ``close()`` once, always (end of input, interruption, failure).

A process may run a chain of stages (the output process runs render, then the sinks); each is
timed on its own.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from .messages import Frame

__all__ = ["Stage", "BaseStage", "model_meta"]


@runtime_checkable
class Stage(Protocol):
    name: str

    def open(self, meta: dict) -> dict | None: ...

    def process(self, frame: Frame) -> Frame | None: ...

    def reset(self, source_id: int) -> None: ...

    def end(self, source_id: int) -> None: ...

    def close(self) -> None: ...


class BaseStage:
    """A stage whose hooks do nothing; subclasses override what they need."""

    name = "stage"

    def open(self, meta: dict) -> dict | None:
        return None

    def process(self, frame: Frame) -> Frame | None:
        return frame

    def reset(self, source_id: int) -> None:
        pass

    def end(self, source_id: int) -> None:
        pass

    def close(self) -> None:
        pass


def model_meta(meta: dict) -> dict:
    """The part of a model's metadata later stages use: ``{"arch", "skeleton", "num_keypoints",
    "outputs", "multi_person", "input_size", "stride"}`` (JSON-serialisable)."""
    from posestream.models.skeleton import get_skeleton

    sk = get_skeleton(meta["skeleton"])
    pafs = bool(meta.get("with_pafs", True))
    return {"arch": meta.get("arch"), "skeleton": sk.name, "num_keypoints": sk.num_keypoints,
            "outputs": ["heatmaps", "pafs"] if pafs else ["heatmaps"], "multi_person": pafs,
            "input_size": meta.get("input_size"), "stride": meta.get("stride")}
