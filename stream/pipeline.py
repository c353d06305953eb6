"""The supervisor: starts capture, inference, tracking and output processes, linked by ZeroMQ,
watches them, and shuts the pipeline down in order.

Shutdown rules:
  * End of input: each capture process sends an end-of-stream marker after its last frame; every
    stage forwards it and exits once all sources ended; the output stage finalises its files.
  * Ctrl-C (SIGINT) or SIGTERM to the supervisor: capture stops, the frames already captured drain
    through the pipeline, the recording is finalised (every processed frame is in it).
  * A stage process that dies (crash, SIGKILL): detected within ~0.2 s; the pipeline fails
    cleanly — it is not restarted (a restarted inference process would silently change what
    the recording holds). The supervisor stops capture, sends end-of-stream markers past the dead
    stage so the output stage finalises the recording with every frame that reached it, and
    exits with status 1 naming the stage and signal.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import signal
import sys
import time
from dataclasses import dataclass, field

import zmq

from .messages import Frame, now_ns
from .runner import StageSpec, capture_main, stage_main
from .transport import Sender, ipc_address, private_folder, remove_private_folder

LOG = logging.getLogger(__name__)

__all__ = ["PipelineConfig", "Pipeline", "PipelineError"]


class PipelineError(Exception):
    """The pipeline could not start or a stage failed; the message is one line."""


@dataclass
class PipelineConfig:
    sources: list = field(default_factory=list)
    policy: str = "auto"                 # auto: live for cameras/RTSP, lossless for files/folders
    infer: dict = field(default_factory=dict)
    track: dict = field(default_factory=dict)
    render: dict = field(default_factory=dict)
    sink: dict = field(default_factory=dict)
    source_options: dict = field(default_factory=dict)  # per kind: {file: {...}, rtsp: {...}, ...}
    summary: str | None = None           # where to write the JSON summary
    status_interval: float = 1.0         # seconds between status lines (0: none)
    startup_timeout: float = 120.0

    @classmethod
    def from_dict(cls, d: dict | None) -> "PipelineConfig":
        from posestream.models.config import from_section

        return from_section(cls, d, "pipeline option")


def _is_live(spec: str) -> bool:
    return spec.isdigit() or spec.lower().startswith(("rtsp://", "rtsps://", "http://", "https://"))


class Pipeline:
    def __init__(self, cfg: PipelineConfig, log_level: int = logging.WARNING, out=sys.stderr) -> None:
        if not cfg.sources:
            raise PipelineError("no source given")
        self.cfg = cfg
        self.log_level = log_level
        self.out = out
        policy = cfg.policy
        if policy == "auto":
            policy = "live" if any(_is_live(str(s)) for s in cfg.sources) else "lossless"
        if policy not in ("live", "lossless"):
            raise PipelineError(f"unknown flow policy {policy!r}: use auto, live or lossless")
        self.policy = policy
        self.stop_event = mp.get_context("spawn").Event()
        self.procs: dict[str, mp.Process] = {}
        self.stats: dict[str, dict] = {}
        self.errors: list[str] = []
        self._interrupted = False

    def _specs(self, folder: str) -> tuple[list[StageSpec], str]:
        a = {n: ipc_address(folder, n) for n in ("infer", "track", "output", "status")}
        n = len(self.cfg.sources)
        stages = [
            StageSpec("output", "posestream.stream.output:OutputStage", {"render": self.cfg.render, "sink": self.cfg.sink},
                      a["output"], None, self.policy, n),
            StageSpec("track", "posestream.stream.stages:track_stage", {"config": self.cfg.track}, a["track"], a["output"],
                      self.policy, n),
            StageSpec("infer", "posestream.stream.stages:infer_stage", {"config": self.cfg.infer}, a["infer"], a["track"],
                      self.policy, n),
        ]
        return stages, a["status"]

    def run(self) -> dict:
        """Run to the end of all sources (or an interruption). Returns the summary dict."""
        folder = private_folder()
        ctx = zmq.Context()
        status = ctx.socket(zmq.PULL)
        spawn = mp.get_context("spawn")
        stages, status_addr = self._specs(folder)
        status.bind(status_addr)
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        t_start = time.monotonic()
        try:
            for spec in stages:  # downstream first: they bind
                p = spawn.Process(target=stage_main, args=(spec, status_addr, self.log_level), name=spec.name,
                                  daemon=True)
                p.start()
                self.procs[spec.name] = p
            self._await_ready(status, {s.name for s in stages})
            infer_addr = stages[-1].in_addr
            for i, src in enumerate(self.cfg.sources):
                spec = StageSpec(f"capture{i}", "", {}, None, infer_addr, self.policy, 1)
                p = spawn.Process(target=capture_main, args=(spec, str(src), i, dict(self.cfg.source_options),
                                                             status_addr, self.stop_event, self.log_level),
                                  name=spec.name, daemon=True)
                p.start()
                self.procs[spec.name] = p
            failed = self._watch(status, stages, ctx)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            for p in self.procs.values():
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
            self._drain(status)
            status.close()
            ctx.term()
            remove_private_folder(folder)  # sockets, and shared-memory rings a killed stage left
        summary = self._summary(time.monotonic() - t_start, failed)
        if self.cfg.summary:
            from pathlib import Path

            Path(self.cfg.summary).parent.mkdir(parents=True, exist_ok=True)
            Path(self.cfg.summary).write_text(json.dumps(summary, indent=2))
        return summary

    # -- internals -------------------------------------------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        if self._interrupted:  # a second Ctrl-C: give up waiting
            raise KeyboardInterrupt
        self._interrupted = True
        print("\nposestream: stopping: finishing the frames in flight (Ctrl-C again to abort)", file=self.out)
        self.stop_event.set()

    def _handle(self, msg: dict) -> None:
        t = msg["type"]
        if t == "error":
            self.errors.append(f"{msg['stage']}: {msg['message']}")
            if msg["stage"].startswith("capture") or msg.get("user"):
                self.stop_event.set()
        elif t == "stats":
            self.stats[msg["stage"]] = msg
        elif t == "ready":
            self.stats.setdefault("ready", {})[msg["stage"]] = msg.get("info", "")
            if msg["stage"].startswith("capture"):
                LOG.info("stage %s ready (pid %d)", msg["stage"], msg["pid"])
        elif t == "progress":
            self.progress = msg

    def _await_ready(self, status, names: set[str]) -> None:
        deadline = time.monotonic() + self.cfg.startup_timeout
        ready: set[str] = set()
        while ready < names:
            if status.poll(100):
                msg = json.loads(status.recv())
                self._handle(msg)
                if msg["type"] == "ready":
                    ready.add(msg["stage"])
                    LOG.info("stage %s ready (pid %d)", msg["stage"], msg["pid"])
                    if msg["stage"] == "infer" and self.cfg.status_interval:
                        print(f"posestream: model {msg.get('info', '')}", file=self.out)
                if msg["type"] == "error":
                    self.stop_event.set()
                    raise PipelineError(self.errors[-1])
            for name in names - ready:
                p = self.procs[name]
                if not p.is_alive():
                    raise PipelineError(self.errors[-1] if self.errors else f"stage {name} exited with {p.exitcode}")
            if time.monotonic() > deadline:
                raise PipelineError(f"stages {sorted(names - ready)} did not start within {self.cfg.startup_timeout:.0f} s")

    def _watch(self, status, stages: list[StageSpec], ctx) -> str | None:
        """Until the output stage exits. Returns the name of a stage that died, if any."""
        order = [s.name for s in reversed(stages)]  # infer, track, output
        next_line = time.monotonic() + (self.cfg.status_interval or 1e9)
        self.progress = {}
        failed = None
        while self.procs["output"].is_alive():
            if status.poll(200):
                self._handle(json.loads(status.recv()))
                continue
            for name in order + [n for n in self.procs if n.startswith("capture")]:
                p = self.procs[name]
                if p.is_alive() or failed:
                    continue
                if p.exitcode not in (0, 2) or (name in order and p.exitcode == 2):
                    if name == "output":
                        break
                    failed = name
                    sig = -p.exitcode if p.exitcode and p.exitcode < 0 else None
                    how = f"signal {signal.Signals(sig).name}" if sig else f"exit status {p.exitcode}"
                    self.errors.append(f"stage {name} (pid {p.pid}) died ({how})")
                    print(f"posestream: stage {name} died ({how}); finishing the recording", file=self.out)
                    self.stop_event.set()
                    if name in order:
                        self._end_past(ctx, stages, name)
                    else:  # a capture process: end its source's stream in its place
                        self._send_eos(ctx, stages[-1].in_addr, [int(name[len("capture"):])])
            if self.cfg.status_interval and time.monotonic() >= next_line:
                self._status_line()
                next_line = time.monotonic() + self.cfg.status_interval
        if self.cfg.status_interval:
            print("", file=self.out)
        return failed

    def _end_past(self, ctx, stages: list[StageSpec], dead: str) -> None:
        """Send end-of-stream markers into the stage after ``dead`` so the rest can finish."""
        spec = next(s for s in stages if s.name == dead)
        if spec.out_addr is not None:
            self._send_eos(ctx, spec.out_addr, range(len(self.cfg.sources)))

    @staticmethod
    def _send_eos(ctx, address: str, source_ids) -> None:
        tx = Sender(ctx, address, "lossless")
        for i in source_ids:
            try:
                tx.send(Frame(source_id=i, frame_id=-1, t_capture_ns=now_ns(), eos=True), timeout_ms=2000)
            except TimeoutError:
                break
        tx.close()

    def _status_line(self) -> None:
        p = getattr(self, "progress", {}) or {}
        lat = p.get("latency_ms")
        line = (f"\rframes {p.get('out', 0):6d}  {p.get('fps', 0.0):5.1f} fps  latency "
                f"{'-' if lat is None else f'{lat:6.0f}'} ms  dropped {p.get('gaps', 0)}")
        print(line, end="", file=self.out, flush=True)

    def _drain(self, status) -> None:
        while status.poll(300):
            self._handle(json.loads(status.recv()))

    def _summary(self, wall_s: float, failed: str | None) -> dict:
        out = self.stats.get("output", {})
        captured = sum(v.get("captured", 0) for k, v in self.stats.items() if k.startswith("capture"))
        dropped = sum(v.get("dropped", 0) + v.get("dropped_send", 0) for k, v in self.stats.items()
                      if isinstance(v, dict) and k != "ready")
        stage_lat = dict(out.get("stage_latency_ms", {}))
        return {
            "policy": self.policy, "sources": [str(s) for s in self.cfg.sources], "wall_s": wall_s,
            "frames_in": captured, "frames_out": out.get("frames_out", 0), "frames_dropped": dropped,
            "frame_id_gaps": out.get("frame_id_gaps", 0), "fps_out": out.get("fps"),
            "stage_latency_ms": stage_lat, "capture_to_output_ms": out.get("capture_to_output_ms", {}),
            "reconnects": sum(v.get("reconnects", 0) for k, v in self.stats.items() if k.startswith("capture")),
            "outputs": out.get("outputs", {}), "interrupted": self._interrupted, "failed_stage": failed,
            "errors": self.errors, "model": self.stats.get("ready", {}).get("infer", ""),
        }
