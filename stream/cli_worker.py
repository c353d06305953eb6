"""Join a running pipeline as an extra inference worker, from this host or another one.

  posestream worker --connect tcp://PIPELINE-HOST:PORT --keys DIR [--name NAME]

The pipeline runs with ``--listen tcp://HOST:PORT --keys DIR`` (or the config keys ``listen`` and
``keys``). This worker connects to its broker (the worker pool's queue: frames of any source come
in as this worker asks for them) and sends its results to PORT+1 — both links CurveZMQ-encrypted
and authenticated: DIR holds this worker's NAME.key_secret and the pipeline's server.key (both made
by ``posestream keys``); the pipeline accepts it only if NAME.key is in its authorized/ folder. The
inference settings (model, input size, batch) come from the pipeline; ``--model`` / ``--threads``
/ ``--device`` override them here (e.g. the same model's file at another path, or this host's GPU).

It runs until the pipeline's run is over (exit 0), or until SIGINT/SIGTERM (it tells the broker it
is leaving; in lossless runs the frames it held are sent to the other workers). Exit 2 when the
pipeline does not answer within --timeout seconds: not there, or this worker's key is refused.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

LOG = logging.getLogger("posestream.worker")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", required=True, metavar="tcp://HOST:PORT", help="the pipeline's --listen address")
    p.add_argument("--keys", required=True, metavar="DIR",
                   help="folder with this worker's NAME.key_secret and the pipeline's server.key")
    p.add_argument("--name", default="worker", help="this worker's key name in DIR (default: %(default)s)")
    p.add_argument("--model", default=None, help="the model here (default: the pipeline's)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: the pipeline's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: the pipeline's")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the pipeline's welcome (default: %(default)s)")


def _fail(msg: str) -> int:
    print(f"posestream worker: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    import zmq

    from .infer import InferConfig, InferenceStage
    from .messages import now_ns
    from .pool import PoolReceiver
    from .runner import _Batched, RunStats, _LinkInput, _send
    from .secure import StopOnSignals, connect_setup
    from .transport import Sender

    try:
        host, options = connect_setup(args.connect, args.keys, args.name)
    except ValueError as e:
        return _fail(str(e))
    signals = StopOnSignals()
    stop = signals.event
    ctx = zmq.Context()
    ident = f"r:{args.name}@{socket.gethostname()}:{os.getpid()}".encode()
    rx = PoolReceiver(ctx, args.connect, -1, 0, ident=ident, options=options)
    tx = stage = None
    try:
        rx.hello(args.name)
        welcome = rx.welcome(args.timeout)
        if welcome is None:
            if rx.bye:
                return _fail(f"{args.connect}: the pipeline sent this worker away ({rx.bye})")
            return _fail(f"{args.connect}: no answer in {args.timeout:g} s: no pipeline listening there, or it "
                         f"refused this worker's key ({os.path.join(args.keys, args.name + '.key')} must be in "
                         f"its keys' authorized/ folder)")
        infer = dict(welcome.get("infer") or {})
        for key, val in (("model", args.model), ("threads", args.threads), ("device", args.device)):
            if val is not None:
                infer[key] = val
        policy = welcome.get("policy", "lossless")
        try:
            cfg = InferConfig.from_dict(infer)  # (errors of the model: one line below, not a traceback)
            if cfg.device == "cuda":
                from .infer import cuda_available

                if not cuda_available(cfg.backend):
                    raise ValueError("--device cuda: no CUDA device for this backend here (for ONNX Runtime "
                                     "install onnxruntime-gpu; for PyTorch a CUDA build)")
            stage = InferenceStage(cfg)
            meta = stage.open({})
        except Exception as e:  # noqa: BLE001 - a bad model or a runtime that cannot start: one line
            rx.leave(f"cannot load the model: {e}")
            return _fail(f"model: {' '.join(str(e).split()) or type(e).__name__}")
        print(f"posestream worker: joined {args.connect} as {args.name}: {meta['model'].get('description', '')}",
              file=sys.stderr, flush=True)
        tx = Sender(ctx, f"tcp://{host}:{int(welcome['results_port'])}", policy, shm=False, options=options)
        from .messages import Frame

        halted = stop.is_set
        _send(tx, Frame(source_id=-1, frame_id=-1, t_capture_ns=now_ns(), meta=meta), halted)
        stats = RunStats(False)
        batch = welcome.get("batch") or {}
        inp = (_Batched(rx, stage, int(batch["size"]), float(batch.get("timeout_ms", 0)), stats)
               if int(batch.get("size", 1)) > 1 else _LinkInput(rx))
        rx.start(int(welcome.get("credits", 2)))
        keep = bool(welcome.get("keep_image", True))
        done = 0
        try:
            while not stop.is_set() and rx.bye is None:
                frame = inp.next()
                if frame is None or frame.meta is not None:
                    continue
                if frame.eos:
                    _send(tx, frame, halted)
                    continue
                if not getattr(inp, "applied", False):
                    t0 = now_ns()
                    stage.process(frame)
                    frame.timings[stage.name] = [t0, now_ns()]
                if not keep:
                    frame.image = None
                _send(tx, frame, halted)
                done += 1
        except Exception as e:  # noqa: BLE001 - one line; the broker sends what it held to the others
            msg = " ".join(str(e).split()) or type(e).__name__
            rx.leave(f"failed: {msg}")
            return _fail(f"after {done} frame(s): {msg}")
        if stop.is_set():
            rx.leave(f"stopped ({signals.name})")
            print(f"posestream worker: {signals.name}: left after {done} frame(s)", file=sys.stderr)
            return 0
        print(f"posestream worker: {rx.bye}; {done} frame(s) done", file=sys.stderr)
        return 1 if "join again" in rx.bye else 0   # dropped: a service manager starts it again
    finally:
        if stage is not None:
            stage.close()
        for s in (rx, tx):
            if s is not None:
                try:
                    s.close()
                except Exception:  # noqa: BLE001 - closing what is left
                    pass
        ctx.term()
