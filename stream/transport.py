"""ZeroMQ links between stage processes, and the two flow policies.

A link is PUSH (upstream, connects) -> PULL (downstream, binds); several upstream processes (one
capture process per source) may connect to one downstream stage. Frames travel as
:func:`stream.messages.encode` multipart messages, buffers sent with ``copy=False``.

Flow policies:
  * ``lossless`` (files, recording): small high-water marks and *blocking* sends, so a slow stage
    holds its upstream back and every frame arrives, in order.
  * ``live`` (webcams, RTSP): sends never block (a full queue drops the frame being sent, and
    counts it), and a receiver drains everything that is waiting and keeps only the newest frame
    per source (counting the others), so latency cannot build up behind a slow stage.

Addresses default to ``ipc://`` files in a private temporary folder; ``tcp://`` on loopback (or a
configured host) for links across machines. Nothing binds to all interfaces unless configured.
"""
from __future__ import annotations

import os
import tempfile

import zmq

from .messages import Frame, decode, encode

__all__ = ["POLICIES", "Sender", "Receiver", "ipc_address", "Closed"]

POLICIES = ("live", "lossless")
_HWM = {"live": 2, "lossless": 4}


class Closed(Exception):
    """The link was closed while waiting."""


def ipc_address(folder: str, name: str) -> str:
    return f"ipc://{os.path.join(folder, name)}.sock"


def private_folder() -> str:
    return tempfile.mkdtemp(prefix="posestream-")


class Sender:
    """Upstream end of a link (PUSH, connects)."""

    def __init__(self, ctx: zmq.Context, address: str, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown flow policy {policy!r}; known: {', '.join(POLICIES)}")
        self.policy = policy
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, _HWM[policy])
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(address)
        self.dropped = 0
        self.sent = 0

    def send(self, frame: Frame, timeout_ms: int | None = None) -> bool:
        """Send a frame. Live: never blocks, returns False (and counts a drop) if the queue is full.
        Lossless: blocks (up to ``timeout_ms`` if given; then raises ``TimeoutError``)."""
        parts = encode(frame)
        if self.policy == "live" and not frame.eos:
            try:
                self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.dropped += 1
                return False
            self.sent += 1
            return True
        if timeout_ms is not None:
            if not self.sock.poll(timeout_ms, zmq.POLLOUT):
                raise TimeoutError("downstream stage is not receiving")
        self.sock.send_multipart(parts, copy=False)
        self.sent += 1
        return True

    def close(self) -> None:
        self.sock.close()


class Receiver:
    """Downstream end of a link (PULL, binds)."""

    def __init__(self, ctx: zmq.Context, address: str, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown flow policy {policy!r}; known: {', '.join(POLICIES)}")
        self.policy = policy
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.RCVHWM, _HWM[policy])
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(address)
        self.dropped = 0
        self.received = 0
        self._pending: list[Frame] = []

    def _recv(self, flags: int = 0) -> Frame:
        return decode(self.sock.recv_multipart(flags=flags, copy=False))

    def recv(self, timeout_ms: int | None = None) -> Frame | None:
        """Next frame (None on timeout). Live: the newest waiting frame of its source; older
        waiting frames of the same source are dropped and counted (end-of-stream markers are
        never dropped)."""
        if self._pending:
            return self._take(self._pending.pop(0))
        if timeout_ms is not None and not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        frame = self._recv()
        if self.policy == "live":
            newest: dict[int, Frame] = {frame.source_id: frame}
            order = [frame]
            while True:
                try:
                    f = self._recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                old = newest.get(f.source_id)
                if old is not None and not old.eos and not f.eos:
                    order.remove(old)
                    self.dropped += 1
                newest[f.source_id] = f
                order.append(f)
            frame, self._pending = order[0], order[1:]
        return self._take(frame)

    def _take(self, frame: Frame) -> Frame:
        self.received += 1
        return frame

    def close(self) -> None:
        self.sock.close()
