"""Stage processes: the loop that owns sockets, serialisation, timing and shutdown.

Stages (plain classes with ``open/process/close[/reset]``, no ZeroMQ) are built in the child
process from a picklable :class:`StageSpec` (``"module:factory"`` + keyword arguments), so the
same code runs under ``spawn``. Every process reports to the supervisor on a status socket with
JSON messages (never pickle): ``{"stage", "type": "ready"|"stats"|"progress"|"error", ...}``.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field

import zmq

from .messages import Frame, now_ns
from .transport import Receiver, Sender

LOG = logging.getLogger(__name__)

__all__ = ["StageSpec", "stage_main", "capture_main", "Status"]


@dataclass
class StageSpec:
    name: str
    factory: str                      # "module:callable" returning a stage
    kwargs: dict = field(default_factory=dict)
    in_addr: str | None = None
    out_addr: str | None = None
    policy: str = "lossless"
    n_sources: int = 1


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


def _build(spec: StageSpec):
    module, _, attr = spec.factory.partition(":")
    return getattr(importlib.import_module(module), attr)(**spec.kwargs)


def _child_setup(log_level: int) -> None:
    # Ctrl-C goes to the whole process group: only the supervisor reacts, and it shuts the
    # pipeline down in order (so the recording is finalised); children ignore SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _error_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg


def stage_main(spec: StageSpec, status_addr: str, log_level: int = logging.WARNING) -> None:
    """Process entry point of a processing stage (infer, track, output)."""
    _child_setup(log_level)
    ctx = zmq.Context()
    status = Status(ctx, status_addr, spec.name)
    rx = tx = stage = None
    code = 0
    try:
        stage = _build(spec)
        rx = Receiver(ctx, spec.in_addr, spec.policy)
        tx = Sender(ctx, spec.out_addr, spec.policy) if spec.out_addr else None
        stage.open()
        status.send("ready", info=getattr(stage, "description", ""))
        ended: set[int] = set()
        busy_ns = 0
        next_progress = time.monotonic() + 0.5
        while len(ended) < spec.n_sources:
            if hasattr(stage, "progress") and time.monotonic() >= next_progress:
                status.send("progress", **stage.progress())
                next_progress = time.monotonic() + 0.5
            frame = rx.recv(timeout_ms=200)
            if frame is None:
                if os.getppid() == 1:  # the supervisor is gone
                    break
                continue
            if frame.eos:
                ended.add(frame.source_id)
                out = stage.process(frame)
                if tx is not None:
                    tx.send(out if out is not None else frame)
                continue
            t0 = now_ns()
            out = stage.process(frame)
            t1 = now_ns()
            busy_ns += t1 - t0
            if out is None:
                continue
            out.timings[spec.name] = [t0, t1]
            if tx is not None:
                tx.send(out)
        status.send("stats", received=rx.received, dropped=rx.dropped,
                    dropped_send=tx.dropped if tx else 0, busy_s=busy_ns / 1e9,
                    **(stage.summary() if hasattr(stage, "summary") else {}))
    except Exception as e:  # one line to the supervisor; the traceback only in debug logs
        LOG.debug("stage %s failed:\n%s", spec.name, traceback.format_exc())
        status.send("error", message=_error_line(e))
        code = 1
    finally:
        if stage is not None:
            try:
                stage.close()
            except Exception as e:
                status.send("error", message=f"closing: {_error_line(e)}")
                code = 1
        for s in (rx, tx):
            if s is not None:
                s.close()
        status.close()
        ctx.term()
    sys.exit(code)


def capture_main(spec: StageSpec, source: str, source_id: int, source_options: dict, status_addr: str,
                 stop_event, log_level: int = logging.WARNING) -> None:
    """Process entry point of a capture stage: one per source."""
    _child_setup(log_level)
    ctx = zmq.Context()
    status = Status(ctx, status_addr, spec.name)
    tx = Sender(ctx, spec.out_addr, spec.policy)
    code = 0
    frames = 0
    last = None
    src = None
    try:
        from .sources import SourceError, open_source, source_kind
    except Exception as e:  # keep the end-of-stream guarantee below even for a broken install
        SourceError, open_source = RuntimeError, None
        status.send("error", message=_error_line(e))
    try:
        if open_source is None:
            raise RuntimeError("sources unavailable")
        # options are given per kind of source: {file: {...}, rtsp: {...}, webcam: {...}, images: {...}}
        src = open_source(source, source_id, **dict(source_options.get(source_kind(source)) or {}))
        # an RTSP source retrying forever never reaches the loop below: stop it from a thread
        if hasattr(src, "stop"):
            import threading

            threading.Thread(target=lambda: (stop_event.wait(), src.stop()), daemon=True).start()
        with src:
            status.send("ready", info=f"{getattr(src, 'kind', '?')} {source}", fps=getattr(src, "fps", None),
                        live=bool(getattr(src, "live", False)))
            for frame in src:
                if stop_event.is_set():
                    break
                frame.timings["capture"] = [frame.t_capture_ns, now_ns()]
                tx.send(frame)
                frames += 1
                last = frame
    except (SourceError, ValueError) as e:
        status.send("error", message=_error_line(e), user=True)
        code = 2
    except Exception as e:
        LOG.debug("capture %s failed:\n%s", source, traceback.format_exc())
        status.send("error", message=_error_line(e))
        code = 1
    finally:
        eos = Frame(source_id=source_id, frame_id=(last.frame_id + 1) if last else 0, t_capture_ns=now_ns(),
                    epoch=last.epoch if last else 0, eos=True)
        try:
            tx.send(eos, timeout_ms=10000)
        except TimeoutError:
            pass
        status.send("stats", captured=frames, dropped_send=tx.dropped,
                    reconnects=getattr(src, "reconnects", 0) if src is not None else 0,
                    source_dropped=getattr(src, "dropped", 0) if src is not None else 0)
        tx.close()
        status.close()
        ctx.term()
    sys.exit(code)


def wait_ready(poller_sock, names: set[str], timeout_s: float) -> dict:
    """Collect "ready" messages until all ``names`` reported (or an error / timeout)."""
    got: dict = {}
    deadline = time.monotonic() + timeout_s
    while names - set(got) and time.monotonic() < deadline:
        if poller_sock.poll(100):
            msg = json.loads(poller_sock.recv())
            if msg["type"] == "error":
                return {"error": msg}
            if msg["type"] == "ready":
                got[msg["stage"]] = msg
    return got
