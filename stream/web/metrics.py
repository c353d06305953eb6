"""Per-source statistics of the frames that reach the web output, and their Prometheus text.

:class:`SourceMetrics` is updated by :meth:`WebSink.write` (the pipeline's thread) and read by the
server thread through :meth:`SourceMetrics.snapshot` (a copy taken under the sink's lock, rendered
outside it, so a scrape never holds the pipeline up for more than a copy of a few counters).

:func:`prometheus_text` writes the text exposition format (version 0.0.4) by hand; no runtime
dependency on ``prometheus_client`` (the tests parse it with ``prometheus_client.parser``).
Histogram buckets: ``le`` bounds at 10**(k/4) seconds, 0.1 ms .. 10 s (1, 1.78, 3.16, 5.62 per
decade). They are edges of :class:`LatencyHistogram`'s default layout (20 buckets per decade from
0.01 ms), so the cumulative counts are exact; labels are printed to 6 significant digits.
"""
from __future__ import annotations

import math
from collections import deque

from posestream.stream.stats import LatencyHistogram, RecentWindow

__all__ = ["SourceMetrics", "prometheus_text", "LE_BOUNDS_S"]

LE_BOUNDS_S = tuple(10.0 ** (k / 4) for k in range(-16, 5))  # 0.0001 .. 10 s
_FPS_WINDOW_NS = 2_000_000_000
_RECENT = 60  # frames in the HUD's "recent" medians


def _copy(h: LatencyHistogram) -> LatencyHistogram:
    return LatencyHistogram(h.lo_ms, h.hi_ms, h.per_decade).merge(h)


class SourceMetrics:
    """Counters and latency histograms of one source (not thread-safe: the sink locks around it).

    * ``frames_out``: frames written to the sink; ``frames_dropped``: gaps in ``frame_id`` (frames
      dropped anywhere upstream: capture, live links); ``reconnects``: epoch changes seen.
    * ``stages[name]``: ``t1 - t0`` of ``frame.timings[name]``; ``capture_to_output``: time from
      ``t_capture_ns`` to :meth:`add` (both :func:`stream.messages.now_ns`, one host).
    * ``fps``: frames per second over the last 2 s of writes (0 after 2 s without a frame).
    """

    def __init__(self, source_id: int) -> None:
        self.source_id = int(source_id)
        self.name: str | None = None
        self.size: tuple[int, int] | None = None
        self.frames_out = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.epoch: int | None = None
        self.last_frame_id: int | None = None
        self.last_write_ns: int | None = None
        self.ended = False
        self.stages: dict[str, LatencyHistogram] = {}
        self.capture_to_output = LatencyHistogram()
        self._recent_stages: dict[str, RecentWindow] = {}
        self._recent_c2o = RecentWindow(_RECENT)
        self.recent_points: deque[tuple[int, float]] = deque(maxlen=64)  # (frame_id, capture->output ms)
        self._times: deque[int] = deque(maxlen=512)

    def add(self, frame, now_ns: int) -> None:
        """Count one frame written at ``now_ns``."""
        self.frames_out += 1
        self.ended = False
        fid = int(frame.frame_id)
        if self.last_frame_id is not None and fid > self.last_frame_id + 1:
            self.frames_dropped += fid - self.last_frame_id - 1
        if self.last_frame_id is None or fid > self.last_frame_id:
            self.last_frame_id = fid
        if self.epoch is not None and frame.epoch != self.epoch:
            self.reconnects += 1
        self.epoch = int(frame.epoch)
        info = frame.info if isinstance(frame.info, dict) else {}
        if self.name is None and isinstance(info.get("source"), str):
            self.name = info["source"]
        if frame.image is not None and getattr(frame.image, "ndim", 0) >= 2:
            self.size = (int(frame.image.shape[1]), int(frame.image.shape[0]))
        timings = frame.timings if isinstance(frame.timings, dict) else {}
        for stage, span in timings.items():
            try:
                ms = (int(span[1]) - int(span[0])) / 1e6
            except (TypeError, ValueError, IndexError):
                continue
            h = self.stages.get(stage)
            if h is None:
                h = self.stages[stage] = LatencyHistogram()
                self._recent_stages[stage] = RecentWindow(_RECENT)
            h.add(ms)
            self._recent_stages[stage].add(ms)
        c2o = (now_ns - int(frame.t_capture_ns)) / 1e6
        self.capture_to_output.add(c2o)
        self._recent_c2o.add(c2o)
        self.recent_points.append((fid, round(c2o, 3)))
        self._times.append(now_ns)
        self.last_write_ns = now_ns

    def fps(self, now_ns: int) -> float:
        t = self._times
        if len(t) < 2 or now_ns - t[-1] > _FPS_WINDOW_NS:
            return 0.0
        first, n = t[-1], 0
        for x in reversed(t):
            if now_ns - x > _FPS_WINDOW_NS:
                break
            first, n = x, n + 1
        return (n - 1) * 1e9 / (t[-1] - first) if n >= 2 and t[-1] > first else 0.0

    def snapshot(self, now_ns: int) -> dict:
        """A copy of everything the server shows (taken under the sink's lock)."""
        return {
            "source_id": self.source_id, "name": self.name, "size": self.size,
            "frames_out": self.frames_out, "frames_dropped": self.frames_dropped, "reconnects": self.reconnects,
            "epoch": self.epoch, "last_frame_id": self.last_frame_id, "ended": self.ended,
            "fps": self.fps(now_ns),
            "last_frame_age_s": None if self.last_write_ns is None else (now_ns - self.last_write_ns) / 1e9,
            "stages": {k: _copy(h) for k, h in self.stages.items()},
            "capture_to_output": _copy(self.capture_to_output),
            "recent_ms": {**{k: w.median() for k, w in self._recent_stages.items()},
                          "capture_to_output": self._recent_c2o.median()},
            "recent_points": list(self.recent_points),
        }


# ------------------------------------------------------------------------------------ exposition

def _esc(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}" if kv else ""


def _num(x) -> str:
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


def _le(b: float) -> str:
    return "+Inf" if b == math.inf else f"{b:.6g}"


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value, **labels) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_num(value)}")

    def histogram(self, name: str, h: LatencyHistogram, **labels) -> None:
        for le, count in h.cumulative_buckets(LE_BOUNDS_S):
            self.sample(f"{name}_bucket", count, **labels, le=_le(le))
        self.sample(f"{name}_sum", h.sum / 1000.0, **labels)
        self.sample(f"{name}_count", h.count, **labels)


def prometheus_text(sources: list[dict], viewers: int, viewer_drops: dict[int, int], jpeg_encoded: int,
                    rejected: int) -> str:
    """Text exposition of :meth:`SourceMetrics.snapshot` dicts plus the server's own counters."""
    o = _Out()
    src = sorted(sources, key=lambda s: s["source_id"])
    counters = (("frames_out", "Frames that reached the web output."),
                ("frames_dropped", "Frames dropped upstream (gaps in frame_id)."),
                ("reconnects", "Stream epochs started after the first (reconnects, size changes)."))
    for key, help_ in counters:
        name = f"posestream_{key}_total"
        o.family(name, "counter", help_)
        for s in src:
            o.sample(name, s[key], source=s["source_id"])
    o.family("posestream_fps", "gauge", "Frames per second at the output over the last 2 s.")
    for s in src:
        o.sample("posestream_fps", round(s["fps"], 3), source=s["source_id"])
    o.family("posestream_last_frame_age_seconds", "gauge", "Seconds since the source's last frame.")
    for s in src:
        if s["last_frame_age_s"] is not None:
            o.sample("posestream_last_frame_age_seconds", round(s["last_frame_age_s"], 6), source=s["source_id"])
    o.family("posestream_stage_latency_seconds", "histogram", "Processing time of each pipeline stage per frame.")
    for s in src:
        for stage in sorted(s["stages"]):
            o.histogram("posestream_stage_latency_seconds", s["stages"][stage], source=s["source_id"], stage=stage)
    o.family("posestream_capture_to_output_seconds", "histogram", "Time from capture to the web output per frame.")
    for s in src:
        o.histogram("posestream_capture_to_output_seconds", s["capture_to_output"], source=s["source_id"])
    o.family("posestream_viewers", "gauge", "Connected live viewers (WebSocket and MJPEG).")
    o.sample("posestream_viewers", viewers)
    o.family("posestream_viewer_frames_dropped_total", "counter",
             "Video frames a viewer skipped because it was not ready for them (summed over viewers).")
    for sid in sorted(set(viewer_drops) | {s["source_id"] for s in src}):
        o.sample("posestream_viewer_frames_dropped_total", viewer_drops.get(sid, 0), source=sid)
    o.family("posestream_viewers_rejected_total", "counter", "Viewers refused with 503 (max_viewers reached).")
    o.sample("posestream_viewers_rejected_total", rejected)
    o.family("posestream_jpeg_encoded_total", "counter", "JPEG images encoded (once per frame shown, any viewers).")
    o.sample("posestream_jpeg_encoded_total", jpeg_encoded)
    return "\n".join(o.lines) + "\n"
