"""Print the keypoints a running pipeline publishes (posestream run --publish), one JSON line each.

Subscribes to a ZeroMQ PUB address (tcp://HOST:PORT or ipc://PATH) and writes every message's
body to stdout: the frame's JSON record, the same line as --jsonl writes ("source_id",
"frame_id", "pts", "t_capture_ns", "epoch", "people"). Messages published before the
subscription reached the publisher are not received (ZeroMQ PUB/SUB keeps no history).

  posestream listen tcp://127.0.0.1:5555
  posestream listen tcp://127.0.0.1:5555 --topic 1 --count 100 > source1.jsonl
  posestream listen ipc:///tmp/posestream.sock --timeout 10

Exit status: 0 after --count messages, on Ctrl-C, or when stdout is closed (| head); 1 when
--timeout seconds passed without a message; 2 bad input (address, options).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", metavar="ADDRESS", help="publisher address: tcp://HOST:PORT or ipc://PATH")
    p.add_argument("--topic", default=None, metavar="SRC",
                   help="only this source id (exact match; default: every source)")
    p.add_argument("--keys", default=None, metavar="DIR",
                   help="a CurveZMQ publisher (sink.publish_keys): DIR holds this subscriber's NAME.key_secret and "
                        "the publisher's server.key (posestream keys DIR --worker NAME)")
    p.add_argument("--name", default="worker", help="with --keys: this subscriber's key name (default: %(default)s)")
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit after N messages")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="exit with status 1 when no message arrived for S seconds")


def _fail(msg: str, code: int) -> int:
    print(f"posestream listen: error: {msg}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    import math

    import zmq

    from .publish import AddressError, parse_address

    try:
        addr = parse_address(args.address, bind=False)
    except AddressError as e:
        return _fail(str(e), 2)
    topic = args.topic
    if topic is not None and not (topic.isdigit() and topic.isascii()):
        return _fail(f"--topic must be a source id (0, 1, ...), got {topic!r}", 2)
    if args.count is not None and args.count < 1:
        return _fail(f"--count must be >= 1, got {args.count}", 2)
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        return _fail(f"--timeout must be a number of seconds > 0, got {args.timeout}", 2)
    want = None if topic is None else str(int(topic)).encode()

    options = None
    if args.keys is not None:
        from .secure import KeyFileError, client_options

        try:
            options = client_options(os.path.join(args.keys, f"{args.name}.key_secret"),
                                     os.path.join(args.keys, "server.key"))
        except KeyFileError as e:
            return _fail(str(e), 2)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        for k, v in (options or {}).items():
            sock.setsockopt(k, v)
        if addr.ipv6:
            sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.SUBSCRIBE, want or b"")
        sock.connect(addr.endpoint())
    except zmq.ZMQError as e:
        sock.close(0)
        ctx.term()
        return _fail(f"cannot connect to {args.address}: {zmq.strerror(e.errno) if e.errno else e}", 2)

    out = sys.stdout.buffer
    received = 0
    last = time.monotonic()
    try:
        while args.count is None or received < args.count:
            if not sock.poll(100):
                if args.timeout is not None and time.monotonic() - last >= args.timeout:
                    if received == 0:
                        return _fail(f"no message from {args.address} within {args.timeout:g} s", 1)
                    return _fail(f"no message from {args.address} for {args.timeout:g} s "
                                 f"(after {received})", 1)
                continue
            parts = sock.recv_multipart(zmq.NOBLOCK)
            if want is not None and parts[0] != want:  # topics are prefixes: "1" also matches "10"
                continue
            last = time.monotonic()
            out.write(parts[-1].rstrip(b"\r\n") + b"\n")
            out.flush()
            received += 1
        return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # | head: the reader is gone; no flush error at exit either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        sock.close(0)
        ctx.term()
