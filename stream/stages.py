"""Factories that build the pipeline's stages from plain config dicts (what a spawned process gets),
and the result tap that hands frames to a Python program (:class:`posestream.Pipeline`)."""
from __future__ import annotations

import logging

from .messages import Frame, now_ns
from .stage import BaseStage

__all__ = ["capture_stage", "infer_stage", "refine_stage", "track_stage", "render_stage", "output_stage", "ResultTap"]

LOG = logging.getLogger(__name__)


def capture_stage(source: str, source_id: int = 0, options: dict | None = None):
    from .capture import CaptureStage

    return CaptureStage(source, source_id, options)


def infer_stage(config: dict | None = None):
    from .infer import InferConfig, InferenceStage

    return InferenceStage(InferConfig.from_dict(config))


def refine_stage(config: dict | None = None, infer: dict | None = None, live: bool = False):
    from posestream.models.refine import RefineConfig

    from .infer import InferConfig
    from .refine import RefineStage

    return RefineStage(RefineConfig.from_dict(config), InferConfig.from_dict(infer), live)


def track_stage(config: dict | None = None):
    from .track import TrackerConfig, TrackStage

    return TrackStage(TrackerConfig.from_dict(config or {}))


def render_stage(config: dict | None = None):
    from .render import RenderConfig, RenderStage

    return RenderStage(RenderConfig.from_dict(config or {}))


def output_stage(sink: dict | None = None):
    from .sinks import OutputStage, SinkConfig, build_sinks

    return OutputStage(build_sinks(SinkConfig.from_dict(sink or {})))


class ResultTap(BaseStage):
    """Sends every frame (people, and the source image when ``images``) to the program that runs
    the pipeline, then passes it on. ``policy`` is the pipeline's: lossless waits for the program
    (a generator over a file yields every frame), live drops what the program has not taken."""

    name = "results"

    def __init__(self, address: str, policy: str = "lossless", images: bool = False) -> None:
        self.address, self.policy, self.images = address, policy, bool(images)
        self.ctx = self.tx = None
        self.halted = lambda: False  # the runner sets it: waiting for the program ends on abort

    def open(self, meta: dict) -> None:
        import zmq

        from .transport import Sender

        self.ctx = zmq.Context()
        self.tx = Sender(self.ctx, self.address, self.policy, linger_s=2.0)
        self.tx.send(Frame(source_id=-1, frame_id=-1, t_capture_ns=now_ns(), meta=meta))

    def process(self, frame: Frame) -> Frame:
        out = Frame(source_id=frame.source_id, frame_id=frame.frame_id, t_capture_ns=frame.t_capture_ns,
                    epoch=frame.epoch, pts=frame.pts, image=frame.image if self.images else None,
                    people=frame.people, timings=dict(frame.timings), info=frame.info)
        self._send(out)
        return frame

    def _send(self, frame: Frame) -> None:
        while True:
            try:
                self.tx.send(frame, timeout_ms=500)
                return
            except TimeoutError:
                if self.halted():
                    return
                LOG.debug("the program is not taking results; waiting")

    def end(self, source_id: int) -> None:
        self._send(Frame(source_id=source_id, frame_id=-1, t_capture_ns=now_ns(), eos=True))

    def close(self) -> None:
        if self.tx is not None:
            self.tx.close()
            self.tx = None
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None
