"""Capture a camera (or a file) on this host for a pipeline that runs on another one.

  posestream capture --connect tcp://PIPELINE-HOST:PORT --keys DIR --name NAME --source rtsp://...

The pipeline names the source ``remote:NAME`` (``posestream run --source remote:NAME --listen
tcp://HOST:PORT --keys DIR``). This process says hello on the pipeline's ``listen`` port, is told its
source id, and sends its frames to PORT+2 — CurveZMQ-encrypted and authenticated like the workers'
links: DIR holds this host's NAME.key_secret and the pipeline's server.key, and NAME.key must be in
the pipeline's authorized/ folder (``posestream keys DIR --worker NAME`` makes the pair). Frames
travel as raw RGB over tcp; the pipeline's flow policy applies (live: a frame the link
cannot take now is dropped and counted; lossless: it waits). The source options (``--realtime``
for a file, RTSP reconnection) are the pipeline's.

It runs until its source ends (exit 0), the pipeline stops (it ends its stream first, exit 0), or
SIGINT/SIGTERM (it ends its stream, exit 0). Exit 2 when the pipeline does not answer within
--timeout seconds or refuses this capture (an unknown name, or a key it does not know).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", required=True, metavar="tcp://HOST:PORT", help="the pipeline's --listen address")
    p.add_argument("--keys", required=True, metavar="DIR",
                   help="folder with this capture's NAME.key_secret and the pipeline's server.key")
    p.add_argument("--name", required=True,
                   help="the source's name: the pipeline has --source remote:NAME; also the key's name in DIR")
    p.add_argument("--source", required=True, help="what to capture: webcam index, /dev/videoN, rtsp:// URL, file")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the pipeline's welcome (default: %(default)s)")


def _fail(msg: str) -> int:
    print(f"posestream capture: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    import zmq

    from .capture import CaptureStage
    from .cli import UserError
    from .messages import now_ns
    from .pool import CONTROL
    from .runner import _send
    from .secure import StopOnSignals, connect_setup
    from .sources import SourceError
    from .transport import Sender

    try:
        host, options = connect_setup(args.connect, args.keys, args.name)
    except ValueError as e:
        return _fail(str(e))
    signals = StopOnSignals()
    stop = signals.event
    ctx = zmq.Context()
    ctl = ctx.socket(zmq.DEALER)
    ctl.setsockopt(zmq.ROUTING_ID, f"c:{args.name}@{socket.gethostname()}:{os.getpid()}".encode())
    ctl.setsockopt(zmq.LINGER, 1000)
    for k, v in options.items():
        ctl.setsockopt(k, v)
    ctl.connect(args.connect)
    tx = cap = None
    t_sent = [time.monotonic()]

    def say(msg: dict) -> None:
        ctl.send(json.dumps(msg).encode())
        t_sent[0] = time.monotonic()

    def control(timeout_ms: int) -> dict | None:
        if not ctl.poll(timeout_ms):
            return None
        parts = ctl.recv_multipart()
        return json.loads(parts[1]) if parts[0] == CONTROL and len(parts) > 1 else None

    try:
        say({"capture": args.name, "pid": os.getpid()})
        welcome = None
        deadline = time.monotonic() + args.timeout
        while welcome is None and time.monotonic() < deadline and not stop.is_set():
            msg = control(100)
            if msg and "bye" in msg:
                return _fail(f"{args.connect}: the pipeline refused this capture: {msg['bye']}")
            if msg and "welcome" in msg:
                welcome = msg["welcome"]
        if welcome is None:
            return _fail(f"{args.connect}: no answer in {args.timeout:g} s: no pipeline listening there, or it "
                         f"refused this capture's key ({os.path.join(args.keys, args.name + '.key')} must be in "
                         f"its keys' authorized/ folder)")
        sid, policy = int(welcome["source_id"]), welcome.get("policy", "live")
        cap = CaptureStage(args.source, sid, welcome.get("source_options") or {})
        try:
            cap.open({})
        except (SourceError, UserError, ValueError, OSError) as e:
            say({"leave": f"cannot open {args.source}"})
            return _fail(" ".join(str(e).split()))
        tx = Sender(ctx, f"tcp://{host}:{int(welcome['frames_port'])}", policy, shm=False, options=options)
        print(f"posestream capture: {args.source} -> {args.connect} as source {sid} (remote:{args.name})",
              file=sys.stderr, flush=True)

        done = threading.Event()
        bye: dict = {"reason": None}

        def keeper() -> None:
            # owns the control link from here on: heartbeats every second (also while the source
            # reconnects or a full link holds a send back), and the pipeline's bye; a stop also
            # stops a source blocked in a read or a reconnection wait
            while not stop.is_set() and not done.is_set():
                msg = control(200)
                if msg and "bye" in msg:
                    bye["reason"] = str(msg["bye"])
                    stop.set()
                elif time.monotonic() - t_sent[0] > 1.0:
                    say({"hb": 1})
            cap.stop()

        thread = threading.Thread(target=keeper, name="control", daemon=True)
        thread.start()
        sent = 0
        failed = None
        try:
            for frame in cap:
                frame.timings["capture"] = [frame.t_capture_ns, now_ns()]
                if not _send(tx, frame, stop.is_set):
                    break
                sent += 1
                if stop.is_set():
                    break
        except Exception as e:  # noqa: BLE001 - one line, and the stream still ends
            failed = " ".join(str(e).split()) or type(e).__name__
        done.set()
        thread.join(timeout=2)
        eos = cap.eos_frame()
        eos.info = {**eos.info, "dropped_send": tx.dropped}
        try:
            tx.send(eos, timeout_ms=5000)
        except TimeoutError:
            pass
        if failed is not None:
            print(f"posestream capture: error: {args.source}: {failed} (after {sent} frame(s); its stream ended)",
                  file=sys.stderr)
            return 1
        reason = bye["reason"] or signals.name
        print(f"posestream capture: {sent} frame(s) sent{f' ({reason})' if reason else ''}", file=sys.stderr)
        return 0
    finally:
        if cap is not None:
            cap.close()
        for s in (tx,):
            if s is not None:
                try:
                    s.close()
                except Exception:  # noqa: BLE001
                    pass
        ctl.close()
        ctx.term()
