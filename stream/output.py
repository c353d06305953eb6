"""The last stage: render, write sinks, and measure the pipeline (latencies, drops)."""
from __future__ import annotations

import numpy as np

from .messages import Frame, now_ns

__all__ = ["OutputStage", "percentiles"]


def percentiles(values, ps=(50, 95, 99)) -> dict:
    if not len(values):
        return {f"p{p}": None for p in ps}
    a = np.asarray(values, dtype=np.float64)
    return {f"p{p}": float(np.percentile(a, p)) for p in ps}


class OutputStage:
    """Render + sinks + metrics. ``summary()`` is reported to the supervisor at the end."""

    def __init__(self, render: dict | None = None, sink: dict | None = None) -> None:
        from .render import RenderConfig, RenderStage
        from .sinks import SinkConfig, SinkStage

        self.render = RenderStage(RenderConfig.from_dict(render or {}))
        self.sink = SinkStage(SinkConfig.from_dict(sink or {}))
        self.stage_ms: dict[str, list[float]] = {}
        self.e2e_ms: list[float] = []
        self.out = 0
        self.gaps = 0
        self.last_id: dict[int, int] = {}
        self.t_first = self.t_last = None

    def open(self) -> None:
        self.render.open()
        self.sink.open()

    def process(self, frame: Frame) -> Frame | None:
        if frame.eos:
            self.sink.process(frame)
            return None
        frame = self.render.process(frame)
        self.sink.process(frame)
        t = now_ns()
        self.out += 1
        prev = self.last_id.get(frame.source_id)
        if prev is not None and frame.frame_id > prev + 1:
            self.gaps += frame.frame_id - prev - 1  # frames dropped on the way (live policy)
        self.last_id[frame.source_id] = frame.frame_id
        for name, (t0, t1) in frame.timings.items():
            self.stage_ms.setdefault(name, []).append((t1 - t0) / 1e6)
        self.e2e_ms.append((t - frame.t_capture_ns) / 1e6)
        self.t_first = self.t_first or t
        self.t_last = t
        return None

    def progress(self) -> dict:
        recent = self.e2e_ms[-30:]
        fps = (self.out - 1) / ((self.t_last - self.t_first) / 1e9) if self.out > 1 and self.t_last > self.t_first else 0.0
        return {"out": self.out, "fps": fps, "latency_ms": float(np.median(recent)) if recent else None,
                "gaps": self.gaps}

    def summary(self) -> dict:
        return {"frames_out": self.out, "frame_id_gaps": self.gaps,
                "stage_latency_ms": {k: percentiles(v, (50, 95)) for k, v in self.stage_ms.items()},
                "capture_to_output_ms": percentiles(self.e2e_ms), **self.progress(),
                "outputs": getattr(self.sink, "paths", {})}

    def reset(self) -> None:
        self.render.reset()

    def close(self) -> None:
        try:
            self.render.close()
        finally:
            self.sink.close()
