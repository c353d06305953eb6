"""The supervisor: starts the capture, inference, tracking and output processes, linked by ZeroMQ,
watches them, and shuts the pipeline down in order.

Start-up: every process starts at once (sources open while the model loads); captures wait for a
``go`` until every process reported ``ready``, so a bad source, model or output fails the run
before its first frame (:class:`PipelineError`, with ``user`` set for the user's mistakes).

Shutdown rules:
  * End of input: each capture sends an end-of-stream marker after its last frame; every stage
    forwards it and exits once all sources ended; the output stage finalises its files.
  * A stop request (Ctrl-C = SIGINT, SIGTERM from ``systemctl``/``docker stop`` to the supervisor
    or its whole group, SIGHUP from a closed terminal, or :meth:`Supervisor.request_stop`): capture
    stops, the frames already captured drain through, the recording is finalised with every frame
    that reached the output. A drain that takes longer than ``stop_timeout`` s, or a second
    request, aborts instead: the stages stop processing and close at once (the recording is still
    finalised, with the frames written so far). A third request kills the processes.
  * A stage process that dies (crash, SIGKILL): detected within ~0.2 s; it is not restarted (a
    restarted inference process would silently change what the recording holds). Capture stops,
    end-of-stream markers are sent past the dead stage so the output finalises the recording with
    every frame that reached it, and the run fails naming the stage and signal.
  * The supervisor itself killed: every process notices within ~0.1 s (see :mod:`stream.runner`)
    and ends within 1 s, finalising the recording and removing the private folder.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from posestream.models.registry import list_models, model_kind

from .messages import Frame, now_ns
from .runner import Control, StageSpec
from .stats import LatencyHistogram
from .transport import Sender, ipc_address, private_folder, remove_private_folder

LOG = logging.getLogger(__name__)

__all__ = ["PipelineConfig", "Supervisor", "PipelineError", "check_output_path", "validate_config", "flow_policy",
           "EXIT_SIGNALS"]

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STAGES = ("infer", "track", "output")


class PipelineError(Exception):
    """The pipeline could not start or a stage failed; the message is one line.

    ``user``: the user's input is at fault (bad source, model, config, output path): exit 2.
    """

    def __init__(self, message: str, user: bool = False) -> None:
        super().__init__(message)
        self.user = user


@dataclass
class PipelineConfig:
    sources: list = field(default_factory=list)
    policy: str = "auto"                 # auto: live for cameras/RTSP, lossless for files/folders
    infer: dict = field(default_factory=dict)
    refine: dict = field(default_factory=dict)  # top-down refinement (RefineConfig); off unless enabled
    track: dict = field(default_factory=dict)
    render: dict = field(default_factory=dict)
    sink: dict = field(default_factory=dict)
    source_options: dict = field(default_factory=dict)  # per kind: {file: {...}, rtsp: {...}, ...}
    summary: str | None = None           # where to write the JSON summary
    status_interval: float = 1.0         # seconds between status lines (0: none)
    startup_timeout: float = 120.0       # seconds for every process to be ready (model load, sources open)
    stop_timeout: float = 5.0            # seconds a stop may drain the frames in flight before it aborts
    workers: int = 1                     # inference processes fed from one queue (stream/pool.py)
    worker_timeout: float = 30.0         # --workers > 1: a worker that returns no frame for this long is hung (killed)
    batch: int = 1                       # frames (of any sources) per forward call of an inference worker
    batch_timeout_ms: float = 10.0       # --batch > 1: a batch waits at most this long after its first frame
    listen: str | None = None            # tcp://HOST:PORT: remote inference workers join here (results: PORT+1)
    keys: str | None = None              # with listen: the CurveZMQ keys folder (posestream keys)

    def __post_init__(self) -> None:
        if self.policy not in ("auto", "live", "lossless"):
            raise ValueError(f"policy must be auto, live or lossless, got {self.policy!r}")
        for name, lo in (("status_interval", 0.0), ("startup_timeout", 1.0), ("stop_timeout", 0.0),
                         ("worker_timeout", 0.1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= 86400:
                raise ValueError(f"{name} must be a number of seconds in [{lo:g}, 86400], got {v!r}")
        from .pool import MAX_BATCH, MAX_WORKERS

        w = self.workers
        lo = 0 if self.listen else 1   # with remote workers, every worker may be remote
        if isinstance(w, bool) or not isinstance(w, int) or not lo <= w <= MAX_WORKERS:
            raise ValueError(f"workers must be an integer in [{lo}, {MAX_WORKERS}], got {w!r}"
                             + (" (0: only remote workers, with listen)" if w == 0 else ""))
        if self.listen is not None:
            from .secure import check_tcp_address

            check_tcp_address(self.listen, "listen")
            if not self.keys:
                raise ValueError("listen needs keys: the folder made by `posestream keys DIR` (tcp links are "
                                 "CurveZMQ-encrypted and only known workers are accepted)")
        if self.keys is not None and not isinstance(self.keys, str):
            raise ValueError(f"keys must be a folder, got {self.keys!r}")
        b = self.batch
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_BATCH:
            raise ValueError(f"batch must be an integer in [1, {MAX_BATCH}], got {b!r}")
        t = self.batch_timeout_ms
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 10000:
            raise ValueError(f"batch_timeout_ms must be a number of milliseconds in [0, 10000], got {t!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "PipelineConfig":
        from posestream.models.config import from_section

        return from_section(cls, d, "pipeline option")


REMOTE = "remote:"


def remote_source(spec) -> str | None:
    """The capture's name of a ``remote:NAME`` source (a ``posestream capture --connect`` on
    another host sends its frames), else None."""
    s = str(spec).strip()
    return s[len(REMOTE):] if s.startswith(REMOTE) else None


def flow_policy(cfg: PipelineConfig) -> str:
    """``live`` when any source is live (webcam, RTSP; a remote capture counts as one) unless the
    config says otherwise."""
    if cfg.policy != "auto":
        return cfg.policy
    from .sources import source_kind

    return "live" if any(remote_source(s) is not None or source_kind(str(s)).live for s in cfg.sources) \
        else "lossless"


def check_output_path(path, what: str) -> Path:
    """Make sure ``path`` can be written before anything runs: its folder is created when missing;
    a folder, or a place that cannot be written, is a ``ValueError`` naming it. Leaves no file behind."""
    p = Path(path)
    if str(path).strip() == "" or p.name in ("", ".", ".."):
        raise ValueError(f"{what} {str(path)!r}: not a file name")
    if p.is_dir():
        raise ValueError(f"{what} {p}: is a folder; give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{what} {p}: cannot create its folder {p.parent} ({e.strerror or e})") from None
    existed = p.exists()
    try:
        with open(p, "ab"):
            pass
    except OSError as e:
        raise ValueError(f"{what} {p}: cannot be written ({e.strerror or e})") from None
    if not existed:
        p.unlink()
    return p


def validate_config(cfg: PipelineConfig) -> None:
    """Fail fast, in this process, on what a user can get wrong: every section's keys, types and
    ranges, sources that name missing files, the model, and every output path. Raises ValueError
    (a ``ConfigError`` where a config key is at fault) with a one-line message."""
    from posestream.models.config import ConfigError

    from .infer import InferConfig, cuda_available
    from .render import RenderConfig
    from .sinks import SinkConfig
    from .sources import source_kind
    from .track import TrackerConfig

    if not cfg.sources:
        raise ValueError("no source given")

    def section(name: str, fn, value):
        try:
            return fn(value)
        except ConfigError as e:
            raise e.under(*name.split(".")) from None

    infer = section("infer", InferConfig.from_dict, cfg.infer)
    from posestream.models.refine import RefineConfig

    refine = section("refine", RefineConfig.from_dict, cfg.refine)
    section("track", TrackerConfig.from_dict, cfg.track)
    section("render", RenderConfig.from_dict, cfg.render)
    sink = section("sink", SinkConfig.from_dict, cfg.sink)
    from .sources.kinds import SourceKind

    kinds = {k.value: k for k in SourceKind}
    opts = cfg.source_options or {}
    if not isinstance(opts, dict):
        raise ConfigError(f"source_options must be a mapping of source kinds, got {opts!r}", ("source_options",))
    for kind, o in opts.items():
        if kind not in kinds:
            raise ConfigError(f"unknown source kind {kind!r}; known: {', '.join(kinds)}", ("source_options", kind))
        section(f"source_options.{kind}", kinds[kind].config_class.from_dict, o)
    for s in cfg.sources:
        s = str(s)
        if not s.strip():
            raise ValueError("empty source name")
        name = remote_source(s)
        if name is not None:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(f"{s}: a remote capture's name is letters, digits, '_', '.', '-'")
            if cfg.listen is None:
                raise ValueError(f"{s}: a remote capture needs listen (tcp://HOST:PORT) and keys; it connects there")
            if sum(remote_source(x) == name for x in cfg.sources) > 1:
                raise ValueError(f"{s}: given twice")
            continue
        k = source_kind(s)
        if k == "file" and "://" not in s and not Path(s).exists():
            raise ValueError(f"{s}: file not found")
    check_model_spec(infer.model, infer.backend, "bottomup")
    if cfg.listen is not None:   # the keys of the tcp links, before anything binds
        from .secure import KeyFileError, server_options

        try:
            server_options(cfg.keys)
        except KeyFileError as e:
            raise ConfigError(f"{e} (make the keys with `posestream keys {cfg.keys}`)", ("keys",)) from None
        if not (Path(cfg.keys) / "authorized").is_dir():
            raise ConfigError(f"{Path(cfg.keys) / 'authorized'}: no such folder (the public keys of the workers "
                              f"to accept; `posestream keys {cfg.keys} --worker NAME` makes one)", ("keys",))
    if refine.enabled:
        check_model_spec(refine.model, infer.backend, "topdown")
    if infer.device == "cuda" and not cuda_available(infer.backend):
        raise ValueError("--device cuda: no CUDA device for this backend here (for ONNX Runtime install "
                         "onnxruntime-gpu; for PyTorch a CUDA build)")
    if infer.fp16 and infer.backend != "torch":
        raise ValueError("--fp16 needs the torch backend (--backend torch) on CUDA")
    outputs = {"--record": sink.record, "--jsonl": sink.jsonl, "--summary": cfg.summary}
    seen: dict[str, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        p = check_output_path(path, what)
        key = os.path.realpath(p)
        if key in seen:
            raise ValueError(f"{seen[key]} and {what} both write {p}")
        seen[key] = what
    for s in cfg.sources:
        if remote_source(s) is None and source_kind(str(s)) == "file" and os.path.realpath(str(s)) in seen:
            raise ValueError(f"{s}: would be overwritten by {seen[os.path.realpath(str(s))]}")


def check_model_spec(spec: str, backend: str = "auto", kind: str = "bottomup") -> None:
    """The checks of a model option that need no loading (``infer.model`` for ``bottomup``,
    ``refine.model`` for ``topdown``): the shipped file is there, a path exists, a registered name
    is of that kind, the torch backend is not given an ONNX file. ValueError (one line)."""
    from .infer import _KIND_HINT
    from .refine import resolve_refine_model
    from posestream.models.shipped import shipped_checkpoint

    label = "" if kind == "bottomup" else "refine.model "
    try:
        m = str(shipped_checkpoint()) if spec == "default" and kind == "bottomup" else resolve_refine_model(spec)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    if m.endswith((".pt", ".pth", ".onnx")) or "/" in m:
        if not Path(m).is_file():
            raise ValueError(f"{label}{m}: model file not found")
    elif m not in list_models():
        known = list_models() if kind == "bottomup" else list_models("topdown")
        raise ValueError(f"{label}{m}: not a checkpoint, ONNX file or registered model "
                         f"({'known' if kind == 'bottomup' else 'top-down models'}: {', '.join(known)})")
    elif model_kind(m) != kind:
        raise ValueError(f"{label}{m} is {_KIND_HINT[model_kind(m)]}")
    if backend == "torch" and m.endswith(".onnx"):
        raise ValueError(f"{label}{m}: the torch backend needs a checkpoint or model name, not an ONNX file")


def _ignore_stop_signals() -> None:
    for sig in EXIT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class _Child:
    """One pipeline process: ``python -m posestream.stream.runner SPEC_JSON`` (a fresh interpreter)."""

    def __init__(self, name: str, args: dict) -> None:
        self.name = name
        # the stop signals are ignored from the first instruction on (an ignored disposition survives
        # exec), so a Ctrl-C while the child still imports cannot kill it; the runner then arms its
        # own SIGTERM handler (the supervisor's death)
        self.popen = subprocess.Popen([sys.executable, "-m", "posestream.stream.runner", json.dumps(args)],
                                      stdin=subprocess.DEVNULL, close_fds=True, preexec_fn=_ignore_stop_signals)
        self.pid = self.popen.pid
        self.seen = False   # its exit has been looked at

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


class Supervisor:
    """Runs one pipeline. ``run()`` for a command line (installs signal handlers); or ``start()``,
    ``step()`` until it returns False, ``finish()`` (what :class:`posestream.Pipeline` does).

    Args:
        cfg: the pipeline configuration (validate it first: :func:`validate_config`).
        results: ``(address, images)``: also send every output frame to a receiver bound at that
            address (the Python API); None: no.
    """

    def __init__(self, cfg: PipelineConfig, log_level: int = logging.WARNING, out=sys.stderr,
                 results: tuple[str, bool] | None = None, on_ready=None) -> None:
        if not cfg.sources:
            raise PipelineError("no source given", user=True)
        self.cfg = cfg
        self.log_level = log_level
        self.out = out
        self.policy = flow_policy(cfg)
        self.results = results
        self.control: Control | None = None
        self.procs: dict[str, _Child] = {}
        self.stats: dict[str, dict] = {}
        self.ready: dict[str, dict] = {}
        self.errors: list[str] = []
        self.progress: dict = {}
        self.failed: str | None = None
        self.workers_lost: list[str] = []    # pool workers that died while the others carried on
        self.signal: int | None = None       # the signal that stopped the run
        self.stop_requests = 0
        self._t_stop: float | None = None
        self._t_abort: float | None = None
        self._folder: str | None = None
        self._ctx = self._status = None
        self._specs: list[StageSpec] = []
        self._t_start = 0.0
        self._next_line = 0.0
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self._started = self._finished = False
        self._summary: dict | None = None
        self._old_handlers: dict = {}
        self.results_rx = None
        self.on_ready = on_ready   # called with the metadata once every process is ready

    # -- public ------------------------------------------------------------------------------------

    @property
    def folder(self) -> str | None:
        return self._folder

    @property
    def meta(self) -> dict:
        """The metadata of the last stage (model, sources): what its ``ready`` message carried."""
        return dict((self.ready.get("output") or {}).get("meta") or {})

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.pid is not None}

    def run(self) -> dict:
        """Start, run to the end of all sources (or a stop), finish. Returns the summary."""
        self._install_signals()
        try:
            self.start()
            while self.step(200):
                pass
        finally:
            summary = self.finish()
            self._restore_signals()
        return summary

    def start(self) -> None:
        """Start every process and wait until all are ready (sources open, model loaded, outputs
        open); raises :class:`PipelineError` (and cleans up) if one fails or a stop arrives first."""
        self._started = True
        self._t_start = time.monotonic()
        self._folder = private_folder()
        self._ctx = zmq.Context()
        self._status = self._ctx.socket(zmq.PULL)
        status_addr = ipc_address(self._folder, "status")
        self._status.bind(status_addr)
        if self.results is not None:
            from .transport import Receiver

            address = ipc_address(self._folder, "results")
            self.results = (address, self.results[1])
            self.results_rx = Receiver(self._ctx, address, self.policy)
        self._specs = self._make_specs()
        control_path = os.path.join(self._folder, "control")
        self.control = Control(control_path, create=True)
        try:
            for spec in self._specs:
                self.procs[spec.name] = _Child(spec.name, {
                    "spec": dataclasses.asdict(spec), "status": status_addr, "control": control_path,
                    "parent": os.getpid(), "log_level": self.log_level})
            self._await_ready()
        except BaseException:
            self._abort()
            raise
        self.control.go.set()
        self._next_line = time.monotonic() + (self.cfg.status_interval or 1e9)

    def step(self, timeout_ms: int = 200) -> bool:
        """Handle status messages and failures for up to ``timeout_ms``; False once the output
        process has finished (or everything is gone)."""
        out = self.procs.get("output")
        if out is None or not out.is_alive():
            return False
        if self._status.poll(timeout_ms):
            while True:
                try:
                    self._handle(json.loads(self._status.recv(zmq.NOBLOCK)))
                except zmq.Again:
                    break
        self._check_processes()
        self._check_deadlines()
        if self.cfg.status_interval and time.monotonic() >= self._next_line:
            self._status_line()
            self._next_line = time.monotonic() + self.cfg.status_interval
        return out.is_alive()

    def request_stop(self, signum: int | None = None) -> None:
        """Stop capture and drain (first call), abort (second), kill (third). Safe from a signal handler."""
        if self.control is None:
            self.stop_requests += 1
            return
        self.stop_requests += 1
        if signum is not None and self.signal is None:
            self.signal = signum
        if self.stop_requests == 1:
            self._t_stop = time.monotonic()
            self.control.stop.set()
        elif self.stop_requests == 2:
            self._abort()
        else:
            for p in self.procs.values():
                if p.is_alive():
                    p.kill()

    def finish(self) -> dict:
        """Wait for (or stop) every process, clean up, and return the summary. Idempotent."""
        if self._finished:
            return self._summary
        self._finished = True
        if self.cfg.status_interval and self._started and self._tty:
            print("", file=self.out)
        if self.control is not None:
            self.control.stop.set()
        deadline = time.monotonic() + max(self.cfg.stop_timeout, 1.0) + 5.0
        while any(p.is_alive() for p in self.procs.values()) and time.monotonic() < deadline:
            if self._status is not None and self._status.poll(50):
                self._drain_status()
            if time.monotonic() > deadline - 5.0:
                self._abort()
            self._check_processes()
        for p in self.procs.values():
            p.join(timeout=0.5)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
        if self._status is not None:
            self._drain_status(300 if self.procs else 0)
            self._status.close()
            self._status = None
        if self.results_rx is not None:
            self.results_rx.close()
            self.results_rx = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self.control is not None:
            self.control.close()
        if self._folder is not None:
            remove_private_folder(self._folder)  # sockets, control file, rings a killed stage left
        self._summary = self._make_summary(time.monotonic() - self._t_start if self._started else 0.0)
        if self.cfg.summary:
            Path(self.cfg.summary).parent.mkdir(parents=True, exist_ok=True)
            Path(self.cfg.summary).write_text(json.dumps(self._summary, indent=2))
        return self._summary

    # -- processes -------------------------------------------------------------------------------------

    def _make_specs(self) -> list[StageSpec]:
        from .sinks import SinkConfig, build_sinks

        cfg, folder, n = self.cfg, self._folder, len(self.cfg.sources)
        a = {name: ipc_address(folder, name) for name in STAGES}
        sink_cfg = SinkConfig.from_dict(cfg.sink)
        render_needed = any(s.needs_image for s in build_sinks(sink_cfg))  # builds, opens nothing
        images_to_program = bool(self.results and self.results[1])
        out_chain: list = []
        if self.results is not None:
            out_chain.append(["posestream.stream.stages:ResultTap",
                              {"address": self.results[0], "policy": self.policy, "images": self.results[1]}])
        if render_needed:
            out_chain.append(["posestream.stream.stages:render_stage", {"config": cfg.render}])
        sink = dict(cfg.sink)
        if sink.get("fragmented") is None:  # live runs may last for ever: an MP4 index that does not grow
            sink["fragmented"] = self.policy == "live"
        out_chain.append(["posestream.stream.stages:output_stage", {"sink": sink}])
        keep = render_needed or images_to_program
        infer_chain: list = [["posestream.stream.stages:infer_stage", {"config": cfg.infer}]]
        if (cfg.refine or {}).get("enabled"):
            infer_chain.append(["posestream.stream.stages:refine_stage",
                                {"config": cfg.refine, "infer": cfg.infer, "live": self.policy == "live"}])
        pool = cfg.workers > 1 or cfg.listen is not None
        reorder = remote = None
        credits = 0
        if pool:
            from .pool import credits_for

            credits = credits_for(self.policy, cfg.batch)
            acks = ipc_address(folder, "acks") if self.policy == "lossless" else None
            reorder = {"workers": cfg.workers, "acks": acks}
            if cfg.listen is not None:   # remote workers: frames from the broker, results to tracking's inlet
                from .secure import check_tcp_address

                host, port = check_tcp_address(cfg.listen, "listen")
                results = f"tcp://{host}:{port + 1}"
                reorder["inlet"] = {"listen": results, "keys": str(cfg.keys), "to": a["track"]}
                remote = {"listen": cfg.listen, "keys": str(cfg.keys), "frames": f"tcp://{host}:{port + 2}",
                          "captures": {remote_source(src): i for i, src in enumerate(cfg.sources)
                                       if remote_source(src) is not None},
                          "capture_welcome": {"policy": self.policy, "frames_port": port + 2,
                                              "source_options": dict(cfg.source_options or {})},
                          "welcome": {"infer": dict(cfg.infer), "policy": self.policy, "n_sources": n,
                                      "results_port": port + 1, "keep_image": keep,
                                      "batch": {"size": cfg.batch, "timeout_ms": float(cfg.batch_timeout_ms)}}}
        specs = [
            StageSpec("output", out_chain, a["output"], None, self.policy, n, wait_meta=True, folder=folder,
                      terminal=True),
            StageSpec("track", [["posestream.stream.stages:track_stage", {"config": cfg.track}]], a["track"],
                      a["output"], self.policy, n, wait_meta=True, folder=folder, keep_image=keep, reorder=reorder),
        ]
        batch = {"size": cfg.batch, "timeout_ms": float(cfg.batch_timeout_ms)} if cfg.batch > 1 else None
        if not pool:
            specs.append(StageSpec("infer", infer_chain, a["infer"], a["track"], self.policy, n, folder=folder,
                                   keep_image=keep, batch=batch))
        else:  # capture -> dispatch (ZeroMQ's load-balancing broker) -> infer0..N-1 -> track (reorder)
            pool_addr = ipc_address(folder, "pool")
            specs.append(StageSpec("dispatch", [], a["infer"], None, self.policy, n, folder=folder, role="dispatch",
                                   pool={"address": pool_addr, "acks": reorder["acks"], "workers": cfg.workers,
                                         "timeout": float(cfg.worker_timeout), "credits": credits,
                                         "remote": remote, "track": a["track"]}))
            for w in range(cfg.workers):
                specs.append(StageSpec(f"infer{w}", infer_chain, pool_addr, a["track"], self.policy, n,
                                       folder=folder, keep_image=keep, batch=batch,
                                       pool={"index": w, "credits": credits}))
        for i, src in enumerate(cfg.sources):
            if remote_source(src) is not None:   # its frames come from another host, through the broker
                continue
            specs.append(StageSpec(f"capture{i}", [["posestream.stream.stages:capture_stage",
                                                    {"source": str(src), "source_id": i,
                                                     "options": dict(cfg.source_options or {})}]],
                                   None, a["infer"], self.policy, 1, folder=folder))
        return specs

    def _await_ready(self) -> None:
        names = set(self.procs)
        deadline = time.monotonic() + self.cfg.startup_timeout
        while set(self.ready) < names:
            if self.stop_requests:
                raise PipelineError("interrupted while starting")
            if self._status.poll(100):
                msg = json.loads(self._status.recv())
                self._handle(msg)
                if msg["type"] == "error":
                    raise PipelineError(f"{msg['stage']}: {msg['message']}" if not msg.get("user")
                                        else msg["message"], user=bool(msg.get("user")))
            for name in names - set(self.ready):
                p = self.procs[name]
                if not p.is_alive():
                    self._drain_status(200)
                    if self.errors:
                        raise PipelineError(self.errors[-1].split(": ", 1)[-1], user=p.exitcode == 2)
                    raise PipelineError(f"stage {name} exited with {self._how(p)} while starting")
            if time.monotonic() > deadline:
                raise PipelineError(f"stages {sorted(names - set(self.ready))} did not start within "
                                    f"{self.cfg.startup_timeout:.0f} s")
        model = (self._infer_ready().get("meta") or {}).get("model") or {}
        if self.cfg.status_interval and model:
            print(f"posestream: model {model.get('description', model.get('arch'))}", file=self.out)
            refine = (self._infer_ready().get("meta") or {}).get("refine") or {}
            if refine:
                cap = "every person" if refine.get("max_people") is None else f"up to {refine['max_people']} people per frame"
                print(f"posestream: refining {cap} with {refine.get('description')}", file=self.out)
        web = self.meta.get("web") or {}
        if web.get("url"):
            print(f"posestream: live view at {web['url']}", file=self.out, flush=True)
        if self.on_ready is not None:
            self.on_ready(self.meta)

    def _handle(self, msg: dict) -> None:
        t, stage = msg.get("type"), msg.get("stage", "?")
        if t == "error":
            self.errors.append(msg["message"] if msg.get("user") else f"{stage}: {msg['message']}")
        elif t == "stats":
            self.stats[stage] = msg
        elif t == "ready":
            self.ready[stage] = msg
            LOG.info("stage %s ready (pid %s)%s", stage, msg.get("pid"),
                     "".join(f", {k[2:]} +{msg[k] - self._t_start:.2f} s" for k in ("t_main", "t_built", "t_ready")
                             if k in msg))
        elif t == "progress":
            self.progress = msg

    def _drain_status(self, timeout_ms: int = 0) -> None:
        while self._status is not None and self._status.poll(timeout_ms):
            self._handle(json.loads(self._status.recv()))
            timeout_ms = min(timeout_ms, 50)

    @staticmethod
    def _how(p) -> str:
        code = p.exitcode
        if code is not None and code < 0:
            try:
                return f"signal {signal.Signals(-code).name}"
            except ValueError:
                return f"signal {-code}"
        return f"exit status {code}"

    def _check_processes(self) -> None:
        if self.control is None or not self.control.go.is_set():
            # a start that failed: the error that refused it is the one line to report; the other
            # processes exit because of it (one may see an end of stream before its metadata)
            return
        for name, p in self.procs.items():
            if p.seen or p.is_alive():
                continue
            p.seen = True
            if name.startswith("capture"):
                if p.exitcode in (0, 2):   # ended, or a user error it reported (its marker was sent)
                    continue
            elif p.exitcode == 0:
                if name == "dispatch" and self.cfg.listen is not None:
                    self._t_dispatch_done = time.monotonic()
                continue
            if name == "output":
                if self.failed is None:
                    self.failed = name
                    self.errors.append(f"stage output (pid {p.pid}) died ({self._how(p)})")
                continue
            how = self._how(p)
            if self._is_worker(name):
                # its end-of-stream markers, in its place: tracking waits for every worker's
                w = int(name[len("infer"):])
                self._send_eos(self._addr("track"), range(len(self.cfg.sources)), info={"worker": w})
                dispatch = self.procs.get("dispatch")
                others = [n for n, q in self.procs.items() if self._is_worker(n) and q.is_alive()]
                # with remote workers allowed (listen), the broker carries on with them, or waits for one
                if (others or self.cfg.listen is not None) and dispatch is not None and dispatch.is_alive():
                    self.workers_lost.append(f"{name} (pid {p.pid}, {how})")
                    what = ("the frames it held go to the other workers" if self.policy == "lossless"
                            else "the other workers carry on")
                    print(f"posestream: worker {name} died ({how}); {what}", file=self.out, flush=True)
                    continue
            self.errors.append(f"stage {name} (pid {p.pid}) died ({how})")
            if self.failed is None:
                self.failed = name
                print(f"posestream: stage {name} died ({how}); finishing the recording", file=self.out)
            self.control.stop.set()
            if name == "dispatch":   # the broker: every local worker's markers, past the pool
                keys = [f"w{w}" for w in range(self.cfg.workers)]
                for k in keys or ["dispatch"]:
                    self._send_eos(self._addr("track"), range(len(self.cfg.sources)), info={"worker": k, "of": keys})
            elif self._is_worker(name):
                pass   # its markers went to tracking above
            elif name in STAGES:
                self._end_past(name)
            else:  # a capture process: end its source's stream in its place
                self._send_eos(self._addr("infer"), [int(name[len("capture"):])])

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        t = getattr(self, "_t_dispatch_done", None)
        track = self.procs.get("track")
        if t is not None and track is not None and track.is_alive() and now - t > self.cfg.worker_timeout:
            # every source ended at the broker, but tracking still waits for a marker: a remote worker
            # died after it was sent its markers (nobody is left to pass them on in its place)
            LOG.warning("tracking still waits for a remote worker's end of stream %.0f s after the broker "
                        "finished: the sources end now", now - t)
            self._t_dispatch_done = None
            self._send_eos(self._addr("track"), range(len(self.cfg.sources)), info={"worker": "supervisor",
                                                                                  "force": True})
        if self._t_stop is not None and self._t_abort is None and now - self._t_stop > self.cfg.stop_timeout:
            LOG.warning("the frames in flight did not drain within %.1f s: aborting", self.cfg.stop_timeout)
            self._abort()
        if self._t_abort is not None and now - self._t_abort > 5.0:
            for p in self.procs.values():
                if p.is_alive():
                    p.kill()

    def _abort(self) -> None:
        if self._t_abort is None:
            self._t_abort = time.monotonic()
            self.control.stop.set()
            self.control.abort.set()

    def _addr(self, name: str) -> str:
        return ipc_address(self._folder, name)

    def _end_past(self, dead: str) -> None:
        """Send end-of-stream markers into the stage after ``dead`` so the rest can finish."""
        spec = next(s for s in self._specs if s.name == dead)
        if spec.out_addr is not None:
            self._send_eos(spec.out_addr, range(len(self.cfg.sources)))

    @staticmethod
    def _is_worker(name: str) -> bool:
        """A pool worker's process name (``infer0``, ``infer1``, ...; ``--workers 1`` runs ``infer``)."""
        return name.startswith("infer") and name[len("infer"):].isdigit()

    def _infer_ready(self) -> dict:
        """The ``ready`` message of the (first) inference process."""
        return self.ready.get("infer") or self.ready.get("infer0") or {}

    def _send_eos(self, address: str, source_ids, info: dict | None = None) -> None:
        tx = Sender(self._ctx, address, "lossless", shm=False)
        for i in source_ids:
            try:
                tx.send(Frame(source_id=i, frame_id=-1, t_capture_ns=now_ns(), eos=True, info=dict(info or {})),
                        timeout_ms=2000)
            except TimeoutError:
                break
        tx.sock.setsockopt(zmq.LINGER, 500)
        tx.close()

    # -- signals and status -------------------------------------------------------------------------

    def _install_signals(self) -> None:
        for sig in EXIT_SIGNALS:
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                break

    def _restore_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers = {}

    def _on_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.stop_requests == 0:
            print(f"\nposestream: {name}: stopping: finishing the frames in flight "
                  f"(again to stop at once)", file=self.out, flush=True)
        elif self.stop_requests == 1:
            print(f"posestream: {name}: stopping now; the recording is being finalised", file=self.out, flush=True)
        self.request_stop(signum)

    def _status_line(self) -> None:
        p = self.progress or {}
        lat = p.get("latency_ms")
        line = (f"frames {p.get('out', 0):6d}  {p.get('fps', 0.0):5.1f} fps  latency "
                f"{'-' if lat is None else f'{lat:6.0f}'} ms  dropped {p.get('gaps', 0)}")
        if self._tty:
            print("\r" + line, end="", file=self.out, flush=True)
        else:
            print(line, file=self.out, flush=True)

    # -- summary ------------------------------------------------------------------------------------

    def _batch_summary(self) -> dict:
        """``--batch``: the size asked for, forward calls and frames over every inference process,
        and how many calls had each size."""
        calls = frames = 0
        sizes: dict[str, int] = {}
        for name, v in self.stats.items():
            b = v.get("batch") if name.startswith("infer") else None
            if not b:
                continue
            calls += b.get("calls", 0)
            frames += b.get("frames", 0)
            for k, c in (b.get("sizes") or {}).items():
                sizes[k] = sizes.get(k, 0) + c
        return {"size": self.cfg.batch, "timeout_ms": self.cfg.batch_timeout_ms, "calls": calls, "frames": frames,
                "mean": round(frames / calls, 3) if calls else 0.0,
                "sizes": dict(sorted(sizes.items(), key=lambda kv: int(kv[0])))}

    def _make_summary(self, wall_s: float) -> dict:
        out = self.stats.get("output", {})
        caps = {k: v for k, v in self.stats.items() if k.startswith("capture")}
        dropped = sum(v.get("dropped", 0) + v.get("dropped_send", 0) + v.get("source_dropped", 0)
                      for v in self.stats.values())
        timings = {k: LatencyHistogram.from_dict(v) for k, v in (out.get("timings_ms") or {}).items()}
        e2e = LatencyHistogram.from_dict(out["capture_to_output_ms"]) if out.get("capture_to_output_ms") else \
            LatencyHistogram()
        per_source = []
        out_src = out.get("per_source") or {}
        for i, s in enumerate(self.cfg.sources):
            c = caps.get(f"capture{i}", {})
            if remote_source(s) is not None:   # counted by the broker, as they came in
                d = self.stats.get("dispatch") or {}
                c = {"captured": int((d.get("remote_captured") or {}).get(str(i), 0))
                     + int((d.get("remote_dropped") or {}).get(str(i), 0))}
            o = out_src.get(str(i), {})
            per_source.append({"source": str(s), "frames_in": c.get("captured", 0), "frames_out": o.get("frames_out", 0),
                               "gaps": o.get("gaps", 0), "reconnects": c.get("reconnects", 0),
                               "outages": c.get("outages", 0), "outage_s": round(c.get("outage_s", 0.0), 3)})
        model = (self._infer_ready().get("meta") or {}).get("model") or {}
        interrupted = self.signal is not None or self.stop_requests > 0
        errors = list(self.errors) + [f"output {name}: {msg}" for name, msg in (out.get("sink_errors") or {}).items()]
        summary = {
            "policy": self.policy, "sources": [str(s) for s in self.cfg.sources], "wall_s": wall_s,
            "frames_in": sum(p["frames_in"] for p in per_source), "frames_out": out.get("frames_out", 0),
            "frames_dropped": dropped, "frame_id_gaps": out.get("frame_id_gaps", 0), "fps_out": out.get("fps"),
            "stage_latency_ms": {k: h.percentiles((50, 95)) for k, h in timings.items()},
            "capture_to_output_ms": e2e.percentiles((50, 95, 99)),
            "reconnects": sum(v.get("reconnects", 0) for v in caps.values()),
            "per_source": per_source, "outputs": out.get("outputs", {}),
            "interrupted": interrupted, "signal": signal.Signals(self.signal).name if self.signal else None,
            "aborted": self._t_abort is not None, "failed_stage": self.failed, "errors": errors,
            "model": model.get("description", ""),
            "refine": ((self._infer_ready().get("meta") or {}).get("refine") or {}).get("description"),
            "workers": self.cfg.workers,
            "batch": self._batch_summary(),
            # per process, seconds after the supervisor started it: interpreter up (main), stages
            # imported and built (built), sources open / model loaded / outputs open (ready)
            "startup_s": {name: {k[2:]: round(m[k] - self._t_start, 3) for k in ("t_main", "t_built", "t_ready")
                                 if k in m} for name, m in self.ready.items()},
        }
        if "dispatch" in self.stats or self.cfg.workers > 1 or self.cfg.listen:
            d = self.stats.get("dispatch", {})
            track = self.stats.get("track", {})
            summary["pool"] = {"dispatched": d.get("dispatched", 0), "sent_again": d.get("resent", 0),
                               "per_worker": d.get("per_worker", {}), "workers_lost": list(self.workers_lost),
                               "workers_hung": d.get("workers_hung", []),
                               "lost_with_workers": d.get("lost_with_workers", 0),
                               "remote_joined": d.get("remote_joined", []), "remote_refused": d.get("refused", 0),
                               "reorder_held_max": track.get("reorder_held_max", 0),
                               "stale_dropped": track.get("reorder_stale", 0),
                               "duplicates": track.get("reorder_duplicates", 0)}
        return summary
