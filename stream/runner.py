"""Stage processes: the one loop that owns sockets, end-of-stream, epochs, timings and statistics.

Every pipeline process — capture (one per source), inference, tracking, output — runs
:func:`stage_main` on a :class:`StageSpec`: a chain of stages (see :mod:`stream.stage`) built in
the child from ``"module:factory"`` names and keyword arguments (picklable, so it works under
``spawn``). A capture process's input is its source; every other process's input is a ZeroMQ link
(:class:`stream.transport.Receiver`). The loop, for each input frame:

* control frames: the metadata frame of the stage upstream (``Frame.meta``) is awaited before
  ``open`` when ``wait_meta`` is set; an end-of-stream marker calls ``end(source_id)`` on every
  stage and is forwarded; the process ends once all its sources ended;
* a frame with another epoch than the last of its source calls ``reset(source_id)`` first;
* each stage's ``process`` is timed (``frame.timings[name]``) into a bounded histogram;
* the last process (``terminal``) also measures capture-to-output latency, frames out, fps and
  gaps (frames dropped upstream), and reports progress every 0.5 s.

Every process reports to the supervisor on a status socket with JSON messages (never pickle):
``{"stage", "type": "ready"|"stats"|"progress"|"error", "pid", ...}``.

Lifecycle. Children ignore SIGINT, SIGTERM and SIGHUP while their supervisor lives (Ctrl-C,
``systemctl stop`` and a closed terminal reach the whole process group; the supervisor alone
decides, and shuts the pipeline down in order). They watch their parent: when it dies (SIGKILL,
OOM killer), capture stops, every stage ends its streams and closes (the recording is finalised),
the private folder is removed, and the process exits — within 1 s, by a hard exit if closing
takes longer. Linux also delivers SIGTERM at once on the parent's death (``PR_SET_PDEATHSIG``).
Shared events from the supervisor: ``stop`` (captures end their streams; the rest drains),
``abort`` (stages stop processing and close now), ``go`` (captures start reading once every
source is open, so a bad source fails the run before the first frame).
"""
from __future__ import annotations

import collections
import ctypes
import importlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

import zmq

from .messages import Frame, now_ns
from .stats import LatencyHistogram
from .transport import Receiver, Sender, remove_private_folder

LOG = logging.getLogger("posestream.stream.runner")

__all__ = ["StageSpec", "Control", "stage_main", "Status", "ORPHAN_EXIT_S", "main"]

ORPHAN_EXIT_S = 0.8   # after the supervisor died: hard exit if closing takes longer than this
_POLL_MS = 100


@dataclass
class StageSpec:
    """What one process runs.

    Attributes:
        name: the process's name (``capture0``, ``infer``, ``track``, ``output``).
        stages: ``[["module:factory", {kwargs}], ...]`` run in order on every frame.
        in_addr: the link this process binds and receives from; None for a capture process.
        out_addr: the link it sends to; None for the last process.
        policy: ``live`` or ``lossless``.
        n_sources: end-of-stream markers to wait for.
        wait_meta: wait for the upstream's metadata frame before ``open``.
        folder: the pipeline's private folder (removed by an orphaned process).
        keep_image: send images on (False when no later stage needs them).
        terminal: measure output latency, fps and gaps; report progress.
        role: ``stage`` (the loop above) or ``dispatch`` (the worker pool's broker, :mod:`stream.pool`;
            ``pool`` then holds ``{"address", "acks", "workers"}``).
        pool: for a pool worker, ``{"index", "credits"}``: its input is the broker (``in_addr``).
        reorder: for the process after a pool, ``{"workers", "acks"}``: its input restores
            per-source order (:class:`stream.pool.Reorder`).
        batch: ``{"size", "timeout_ms"}``: the first stage takes up to ``size`` ready frames per call
            (:class:`_Batched`); None or size 1: one frame per call.
    """

    name: str
    stages: list = field(default_factory=list)
    in_addr: str | None = None
    out_addr: str | None = None
    policy: str = "lossless"
    n_sources: int = 1
    wait_meta: bool = False
    folder: str | None = None
    keep_image: bool = True
    terminal: bool = False
    role: str = "stage"
    pool: dict | None = None
    reorder: dict | None = None
    batch: dict | None = None


class _Flag:
    """One byte of the control file: set by the supervisor, read by every process."""

    def __init__(self, mm, index: int) -> None:
        self.mm, self.index = mm, index

    def is_set(self) -> bool:
        return self.mm[self.index] != 0

    def set(self) -> None:
        self.mm[self.index] = 1

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.02))
        return True


class Control:
    """Flags shared by the supervisor and its processes: a small memory-mapped file in the private
    folder (no pickles, no inherited handles). ``stop``: captures end their streams; ``abort``:
    stages stop processing and close; ``go``: captures start reading."""

    SIZE = 8

    def __init__(self, path: str, create: bool = False) -> None:
        import mmap

        self.path = path
        if create:
            with open(path, "wb") as f:
                f.write(b"\0" * self.SIZE)
        with open(path, "r+b") as f:
            self.mm = mmap.mmap(f.fileno(), self.SIZE)
        self.stop, self.abort, self.go = _Flag(self.mm, 0), _Flag(self.mm, 1), _Flag(self.mm, 2)

    def close(self) -> None:
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass


class Status:
    """A process's line to the supervisor."""

    def __init__(self, ctx: zmq.Context, address: str, stage: str) -> None:
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(address)
        self.stage = stage

    def send(self, kind: str, **data) -> None:
        try:
            self.sock.send(json.dumps({"stage": self.stage, "type": kind, "pid": os.getpid(), **data}).encode(),
                           flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def close(self) -> None:
        self.sock.close()


def _build(factory: str, kwargs: dict):
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)(**(kwargs or {}))


def _error_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# -- lifecycle --------------------------------------------------------------------------------------


class _Orphan:
    """Watches the parent: ``event`` is set when it is gone; a hard exit follows ``ORPHAN_EXIT_S`` later."""

    def __init__(self, parent_pid: int, folder: str | None) -> None:
        self.parent_pid = parent_pid
        self.folder = folder
        self.event = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="parent-watch", daemon=True).start()

    def gone(self) -> bool:
        return os.getppid() != self.parent_pid

    def _watch(self) -> None:
        while not self.event.is_set() and not self._done.is_set():
            if self.gone():
                self.event.set()
                break
            self.event.wait(0.05)
        if self._done.is_set():
            return
        LOG.warning("the supervisor (pid %d) is gone: shutting down", self.parent_pid)
        if not self._done.wait(ORPHAN_EXIT_S):
            self.cleanup()
            os._exit(3)

    def on_signal(self, signum, _frame) -> None:
        if self.gone():  # SIGTERM from PR_SET_PDEATHSIG, or a group signal after the supervisor died
            self.event.set()

    def cleanup(self) -> None:
        if self.folder and self.gone():
            try:
                remove_private_folder(self.folder)
            except OSError:
                pass

    def done(self) -> None:
        self._done.set()


def _child_setup(log_level: int, parent_pid: int, folder: str | None) -> _Orphan:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    orphan = _Orphan(parent_pid, folder)
    # SIGINT (Ctrl-C), SIGTERM (systemctl / docker stop) and SIGHUP (terminal closed) reach the whole
    # group; only the supervisor reacts, and shuts the pipeline down in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, orphan.on_signal)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if orphan.gone():  # died before the signal was armed
        orphan.event.set()
    return orphan


# -- statistics ---------------------------------------------------------------------------------------


class RunStats:
    """Bounded statistics of one process: fixed-size histograms, no per-frame lists."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.busy = {}                                    # stage name -> LatencyHistogram of process()
        self.timings: dict[str, LatencyHistogram] = {}    # terminal: every stage's time, from frame.timings
        self.e2e = LatencyHistogram()                     # terminal: capture -> output
        self.recent = collections.deque(maxlen=30)
        self.out = 0
        self.gaps = 0
        self.late = 0
        self.last_id: dict[int, int] = {}
        self.per_source: dict[int, dict] = {}
        self.t_first = self.t_last = None

    def stage(self, name: str, ns: int) -> None:
        h = self.busy.get(name)
        if h is None:
            h = self.busy[name] = LatencyHistogram()
        h.add(ns / 1e6)

    def output(self, frame: Frame) -> None:
        t = now_ns()
        self.out += 1
        sid = frame.source_id
        src = self.per_source.setdefault(sid, {"frames_out": 0, "gaps": 0})
        src["frames_out"] += 1
        prev = self.last_id.get(sid)
        if prev is not None and frame.frame_id > prev + 1:
            gap = frame.frame_id - prev - 1  # frames dropped on the way (live policy)
            self.gaps += gap
            src["gaps"] += gap
        self.last_id[sid] = frame.frame_id
        for name, (t0, t1) in frame.timings.items():
            h = self.timings.get(name)
            if h is None:
                h = self.timings[name] = LatencyHistogram()
            h.add((t1 - t0) / 1e6)
        ms = (t - frame.t_capture_ns) / 1e6
        self.e2e.add(ms)
        self.recent.append(ms)
        self.t_first = self.t_first or t
        self.t_last = t

    def fps(self) -> float:
        if self.out > 1 and self.t_last > self.t_first:
            return (self.out - 1) / ((self.t_last - self.t_first) / 1e9)
        return 0.0

    def progress(self) -> dict:
        recent = sorted(self.recent)
        return {"out": self.out, "fps": self.fps(), "gaps": self.gaps,
                "latency_ms": recent[len(recent) // 2] if recent else None,
                "stage_ms": {k: h.percentile(50) for k, h in self.timings.items()}}

    def summary(self) -> dict:
        d = {"busy_ms": {k: h.to_dict() for k, h in self.busy.items()}}
        if self.terminal:
            d.update({"frames_out": self.out, "frame_id_gaps": self.gaps, "fps": self.fps(),
                      "per_source": {str(k): v for k, v in self.per_source.items()},
                      "timings_ms": {k: h.to_dict() for k, h in self.timings.items()},
                      "capture_to_output_ms": self.e2e.to_dict()})
        return d


# -- inputs ------------------------------------------------------------------------------------------


class _LinkInput:
    def __init__(self, rx: Receiver) -> None:
        self.rx = rx

    def next(self) -> Frame | None:
        return self.rx.recv(timeout_ms=_POLL_MS)


class _Batched:
    """The input of a process whose first stage takes several frames per call (``--batch B``):
    up to ``size`` frames that are ready, of any sources, waiting at most ``timeout_ms`` after the
    first of them (so no camera waits longer than that for the others), go through the stage's
    ``process_batch`` in one call; then they come out one by one, with ``applied`` set (the loop
    runs the later stages on them). A control frame (end of stream, metadata) ends a batch and comes
    out after it, in its place."""

    def __init__(self, rx, stage, size: int, timeout_ms: float, stats: RunStats) -> None:
        self.rx, self.stage, self.size, self.timeout_s = rx, stage, int(size), float(timeout_ms) / 1000.0
        self.stats = stats
        self.out: collections.deque = collections.deque()
        self.applied = False
        self.calls = 0
        self.frames = 0
        self.sizes: collections.Counter = collections.Counter()
        if hasattr(rx, "flush_credits"):   # a pool worker: a batch's credits go back once it is done
            rx.hold_credits = True

    def next(self) -> Frame | None:
        if not self.out:
            self._fill()
        if not self.out:
            return None
        frame, self.applied = self.out.popleft()
        return frame

    def _fill(self) -> None:
        first = self.rx.recv(timeout_ms=_POLL_MS)
        if first is None:
            return
        if first.control or first.meta is not None:
            self.out.append((first, False))
            return
        batch, tail = [first], None
        deadline = time.monotonic() + self.timeout_s
        while len(batch) < self.size:
            f = self.rx.recv(timeout_ms=max(0, int(math.ceil((deadline - time.monotonic()) * 1000))))
            if f is None:
                break
            if f.control or f.meta is not None:
                tail = f
                break
            batch.append(f)
        t0 = now_ns()
        self.stage.process_batch(batch)
        t1 = now_ns()
        if hasattr(self.rx, "flush_credits"):
            self.rx.flush_credits()
        self.calls += 1
        self.frames += len(batch)
        self.sizes[len(batch)] += 1
        for f in batch:
            f.timings[self.stage.name] = [t0, t1]
            self.stats.stage(self.stage.name, (t1 - t0) // len(batch))
            self.out.append((f, True))
        if tail is not None:
            self.out.append((tail, False))

    def summary(self) -> dict:
        return {"batch": {"size": self.size, "calls": self.calls, "frames": self.frames,
                          "mean": round(self.frames / self.calls, 3) if self.calls else 0.0,
                          "sizes": {str(k): v for k, v in sorted(self.sizes.items())}}}


class _SourceInput:
    """A capture stage's source as the loop's input: frames, then one end-of-stream marker."""

    def __init__(self, capture) -> None:
        self.capture = capture
        self.it = iter(capture)
        self.done = False

    def next(self) -> Frame | None:
        if self.done:
            return None
        try:
            return next(self.it)
        except StopIteration:
            self.done = True
            return self.capture.eos_frame()


# -- the loop ------------------------------------------------------------------------------------------


def _send(tx: Sender, frame: Frame, halt) -> bool:
    """Send, waiting (lossless) in short steps so that a halt is noticed. False if halted first."""
    while True:
        try:
            return tx.send(frame, timeout_ms=200) or True
        except TimeoutError:
            if halt():
                return False


def main(argv: list[str] | None = None) -> None:
    """``python -m posestream.stream.runner JSON``: the entry point the supervisor starts every
    process with (a fresh interpreter: nothing inherited, nothing of the caller's ``__main__``
    imported, the spec as JSON)."""
    args = json.loads((argv if argv is not None else sys.argv[1:])[0])
    stage_main(StageSpec(**args["spec"]), args["status"], Control(args["control"]), int(args["parent"]),
               int(args.get("log_level", logging.WARNING)))


def stage_main(spec: StageSpec, status_addr: str, control: Control, parent_pid: int,
               log_level: int = logging.WARNING) -> None:
    """Process entry point of every pipeline process."""
    t_main = time.monotonic()
    orphan = _child_setup(log_level, parent_pid, spec.folder)
    ctx = zmq.Context()
    status = Status(ctx, status_addr, spec.name)
    stats = RunStats(spec.terminal)
    stages: list = []
    opened: list = []
    rx = tx = None
    code = 0
    capture = spec.in_addr is None
    ended: set[int] = set()
    epochs: dict[int, int] = {}

    def halted() -> bool:
        return orphan.event.is_set() or control.abort.is_set()

    def stopped() -> bool:  # captures end their streams
        return halted() or control.stop.is_set()

    try:
        if spec.role == "dispatch":
            from .pool import dispatch_main

            status.send("stats", **dispatch_main(spec, ctx, status, halted, stopped))
            return   # the finally below closes what is open; the process exits 0
        stages = [_build(f, kw) for f, kw in spec.stages]
        t_built = time.monotonic()
        if capture:
            inp = _SourceInput(stages[0])
            # a source blocked in a read or a reconnection wait is told to stop from this thread
            threading.Thread(target=_stop_source_when, args=(stages[0], stopped), daemon=True).start()
        elif spec.pool is not None:   # a pool worker: frames from the broker
            from .pool import PoolReceiver

            rx = PoolReceiver(ctx, spec.in_addr, int(spec.pool["index"]), int(spec.pool["credits"]))
            inp = _LinkInput(rx)
        else:
            rx = Receiver(ctx, spec.in_addr, spec.policy)
            if spec.reorder is not None:   # after a pool: per-source order restored
                from .pool import Reorder

                rx = Reorder(rx, int(spec.reorder["workers"]), spec.policy, ctx, spec.reorder.get("acks"),
                             spec.reorder.get("inlet"))
            inp = _LinkInput(rx)
        tx = Sender(ctx, spec.out_addr, spec.policy) if spec.out_addr else None
        meta: dict = {}
        if spec.wait_meta:
            meta = _await_meta(rx, halted)
        for st in stages:
            if halted():
                break
            if hasattr(st, "halted"):
                st.halted = halted
            meta.update(st.open(dict(meta)) or {})
            opened.append(st)
        batcher = None
        if spec.batch and int(spec.batch.get("size", 1)) > 1 and opened and hasattr(opened[0], "process_batch") \
                and not capture:
            batcher = inp = _Batched(rx, opened[0], int(spec.batch["size"]), float(spec.batch.get("timeout_ms", 0)),
                                     stats)
        # start-up timings (monotonic seconds; the supervisor reports them relative to its start)
        status.send("ready", meta=meta, t_main=t_main, t_built=t_built, t_ready=time.monotonic())
        if tx is not None and not halted():
            _send(tx, Frame(source_id=-1, frame_id=-1, t_capture_ns=now_ns(), meta=meta), halted)
        if capture:
            while not control.go.wait(0.05):
                if stopped():
                    break
        next_progress = time.monotonic() + 0.5
        while len(ended) < spec.n_sources and not halted():
            if capture and stopped():
                break
            if spec.terminal and time.monotonic() >= next_progress:
                status.send("progress", **stats.progress())
                next_progress = time.monotonic() + 0.5
            frame = inp.next()
            if frame is None or frame.meta is not None:  # nothing yet, or a late upstream's metadata
                continue
            sid = frame.source_id
            if frame.eos:
                LOG.debug("%s: end of stream %d", spec.name, sid)
                if sid not in ended:
                    ended.add(sid)
                    epochs.pop(sid, None)
                    for st in opened:
                        st.end(sid)
                    if tx is not None:
                        _send(tx, frame, halted)
                continue
            if sid in ended:
                stats.late += 1
                continue
            prev = epochs.get(sid)
            if prev is not None and prev != frame.epoch:
                for st in opened:
                    st.reset(sid)
            epochs[sid] = frame.epoch
            if capture:
                frame.timings["capture"] = [frame.t_capture_ns, now_ns()]
            out = frame
            for i, st in enumerate(opened):
                if i == 0 and batcher is not None and batcher.applied:
                    continue   # run (and timed) with the others of its batch
                t0 = now_ns()
                out = st.process(out)
                t1 = now_ns()
                stats.stage(st.name, t1 - t0)
                if out is None:
                    break
                if not capture:
                    out.timings[st.name] = [t0, t1]
            if out is None:
                continue
            if spec.terminal:
                stats.output(out)
            if tx is not None:
                if not spec.keep_image:
                    out.image = None
                _send(tx, out, halted)
        extra = {}
        if capture and stages:
            extra = stages[0].summary()
        status.send("stats", received=rx.received if rx else 0, dropped=rx.dropped if rx else 0,
                    dropped_send=tx.dropped if tx else 0, late=stats.late, **stats.summary(), **extra,
                    **_stage_summaries(opened), **(rx.summary() if hasattr(rx, "summary") else {}),
                    **(batcher.summary() if batcher is not None else {}))
    except Exception as e:  # one line to the supervisor; the traceback only in debug logs
        LOG.debug("stage %s failed:\n%s", spec.name, traceback.format_exc())
        user = bool(getattr(e, "user_error", False))
        status.send("error", message=_error_line(e), user=user)
        code = 2 if user else 1
    finally:
        code = _finish(spec, opened, ended, tx, status, code, halted, stages if capture else [])
        if tx is not None and halted():
            # aborted: nobody downstream waits for what is still in the ring
            tx.linger_s = min(tx.linger_s, 0.5)
        for s in (rx, tx):
            if s is not None:
                try:
                    s.close()
                except Exception:  # noqa: BLE001 - closing what is left
                    pass
        status.close()
        ctx.term()
        if orphan.event.is_set():
            orphan.cleanup()
        orphan.done()
    sys.exit(code)


def _finish(spec, opened, ended, tx, status, code, halted, capture_stages) -> int:
    """End every stream not yet ended, forward the markers, close every stage (always)."""
    n = spec.n_sources
    sids = [s.source_id for s in capture_stages] if capture_stages else range(n)
    for sid in sids:
        if sid in ended:
            continue
        for st in opened:
            try:
                st.end(sid)
            except Exception as e:  # noqa: BLE001
                status.send("error", message=f"ending stream {sid}: {_error_line(e)}")
                code = code or 1
        if tx is not None:
            eos = capture_stages[0].eos_frame() if capture_stages else Frame(
                source_id=sid, frame_id=-1, t_capture_ns=now_ns(), eos=True,
                info={"worker": int(spec.pool["index"])} if spec.pool is not None else {})
            try:
                tx.send(eos, timeout_ms=2000 if not halted() else 200)
            except TimeoutError:
                pass
    for st in reversed(opened):
        try:
            st.close()
        except Exception as e:  # noqa: BLE001
            status.send("error", message=f"closing {getattr(st, 'name', '?')}: {_error_line(e)}")
            code = code or 1
    for st in capture_stages:  # built but maybe never opened: release what open() may hold
        if st not in opened:
            try:
                st.close()
            except Exception:  # noqa: BLE001
                pass
    return code


def _stage_summaries(stages) -> dict:
    out: dict = {}
    for st in stages:
        if hasattr(st, "summary") and not hasattr(st, "eos_frame"):
            out.update(st.summary() or {})
    return out


def _await_meta(rx: Receiver, halted) -> dict:
    """The upstream stage's metadata frame (the first message on the link)."""
    while not halted():
        f = rx.recv(timeout_ms=_POLL_MS)
        if f is not None and f.meta is not None:
            return dict(f.meta)
        if f is not None:
            raise RuntimeError(f"expected the upstream stage's metadata first, got frame {f.frame_id}")
    return {}


def _stop_source_when(capture, stopped) -> None:
    while not stopped():
        time.sleep(0.05)
    capture.stop()


if __name__ == "__main__":
    main()
