"""The capture stage: one source (file, RTSP, webcam, image folder) as the input of a pipeline process.

``open`` opens the source (an unreachable camera fails here, after its bounded start-up attempts,
so the run fails before its first frame); iterating yields its frames; the runner stamps
``timings["capture"]`` and sends them on. ``stop()`` may be called from another thread to end a
source blocked in a read or waiting to reconnect.
"""
from __future__ import annotations

from .cli import UserError
from .messages import Frame, now_ns
from .stage import BaseStage

__all__ = ["CaptureStage"]


class CaptureStage(BaseStage):
    name = "capture"

    def __init__(self, source: str, source_id: int = 0, options: dict | None = None) -> None:
        self.spec = str(source)
        self.source_id = int(source_id)
        self.options = dict(options or {})
        self.src = None
        self.last: Frame | None = None
        self.frames = 0

    def open(self, meta: dict) -> dict:
        from .sources import SourceError, make_source, source_kind

        kind = source_kind(self.spec)
        try:
            # built first, so that stop() reaches a source still connecting
            self.src = make_source(self.spec, self.source_id, **dict(self.options.get(str(kind)) or {}))
            self.src.open()
        except (SourceError, ValueError) as e:
            raise UserError(str(e)) from None
        return {"sources": {str(self.source_id): {"spec": self.spec, "kind": str(kind), "live": bool(kind.live),
                                                  "fps": self.src.fps}}}

    def __iter__(self):
        from .sources import SourceError

        try:
            for frame in self.src:
                self.last = frame
                self.frames += 1
                yield frame
        except SourceError as e:
            raise UserError(str(e)) from None

    def stop(self) -> None:
        stop = getattr(self.src, "stop", None)
        if stop is not None:
            stop()

    def eos_frame(self) -> Frame:
        last = self.last
        return Frame(source_id=self.source_id, frame_id=(last.frame_id + 1) if last else 0, t_capture_ns=now_ns(),
                     epoch=last.epoch if last else 0, eos=True)

    def summary(self) -> dict:
        src = self.src
        return {"captured": self.frames, "reconnects": getattr(src, "reconnects", 0),
                "outages": getattr(src, "outages", 0), "outage_s": float(getattr(src, "outage_s", 0.0) or 0.0),
                "source_dropped": getattr(src, "dropped", 0)}

    def close(self) -> None:
        if self.src is not None:
            self.src.close()
