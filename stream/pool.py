"""Inference worker pool (``posestream run --workers N``): one queue, N inference processes, order
restored before tracking.

Processes and links (N > 1; ``--workers 1`` keeps the plain capture -> infer -> track chain)::

    capture0..  --PUSH/PULL (ring)-->  dispatch  --ROUTER/DEALER (inline)-->  infer0..inferN-1
    infer0..    --PUSH/PULL (a ring per worker)-->  track (reorder buffer)  --> output
    track       --PUSH/PULL (watermarks, lossless)--> dispatch

* **dispatch** (:func:`dispatch_main`) is ZeroMQ's load-balancing broker (the zguide's LRU queue):
  each worker's DEALER sends credits (``{"pid", "credit"}``: how many more frames it can take), the
  broker's ROUTER sends the head of its queue to the worker whose credit came first. Nothing else
  decides who gets a frame. It stamps every frame with its per-source sequence number
  (``info["seq"]``: 0, 1, 2, ... in the order the broker took the source's frames, so a source whose
  own frame ids have gaps — a webcam's reader dropping — is still gap-free) and broadcasts each
  source's end-of-stream marker to every worker (``info["worker"]`` says to which).
* **Pixels**: the captures' rings are single-consumer (the broker is their one receiver). From the
  broker to the workers the image travels *inline* in the ZeroMQ message (``copy=False`` from the
  capture's ring slot; the kernel copies it through the ``ipc://`` socket), so any worker can take
  any frame and a frame can be sent again to another worker. From each worker to tracking, every
  worker owns its own ring, whose one receiver is the track process (as before).
* **Order** (:class:`Reorder`, the track process's input): lossless — a reorder buffer per source
  keyed by ``seq`` hands frames on in exact input order (a duplicate of one already passed is
  dropped); live — the newest frame wins: a frame older than one already passed on for its source
  is dropped and counted. A source ends when every worker's marker for it arrived.
* **A worker that dies** (lossless): the track process reports how far each source got
  (``{"sid", "next"}``, the next ``seq`` it waits for) to the broker, which keeps every frame it
  sent until it is past that watermark. The broker watches its workers' pids; when one dies, the
  frames it held are sent again (same ``seq``) to the others, and a source's end-of-stream marker
  goes out only once every frame of it was passed on. The supervisor sends the dead worker's
  end-of-stream markers in its place. The output has every frame, in order, as with one worker.
  Live: the frames a dead worker held (sent, not credited back) are lost and counted as drops
  (``pool.lost_with_workers``); the others carry on.
* **A worker that hangs**: the broker notes when it sent each frame; a worker whose oldest frame
  has had no credit back for ``worker_timeout`` seconds (pipeline option, default 30) is killed
  (SIGKILL) and handled as one that died.

Everything on the sockets is JSON or raw bytes (no pickle).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import time

import zmq

from .messages import Frame, decode, encode

LOG = logging.getLogger(__name__)

__all__ = ["dispatch_main", "PoolReceiver", "Reorder", "credits_for", "MAX_WORKERS", "MAX_BATCH"]

MAX_WORKERS = 64


MAX_BATCH = 64


def credits_for(policy: str, batch: int = 1) -> int:
    """Frames a worker holds at once: lossless 2 batches (one being processed, one waiting: the
    worker never idles between calls); live 1 batch (a waiting frame would only get older — the
    broker keeps the newest). ``batch``: frames per forward call (``--batch``)."""
    return (2 if policy == "lossless" else 1) * max(1, int(batch))


def _pid_alive(pid: int) -> bool:
    from .transport import _pid_alive as alive

    return alive(pid)


# -- the worker's input -------------------------------------------------------------------------------


class PoolReceiver:
    """A worker's end of the broker link (DEALER, connects): the Receiver interface the runner uses
    (``recv(timeout_ms)``, ``received``, ``dropped``, ``close()``). It sends its credits first, then
    one credit back each time it asks for the next frame (the previous one is done)."""

    def __init__(self, ctx: zmq.Context, address: str, index: int, credits: int) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, f"w{index}".encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)   # what arrives is what this worker asked for
        self.sock.connect(address)
        self.index = index
        self.received = 0
        self.dropped = 0
        self._owed = 0
        self._send({"pid": os.getpid(), "credit": int(credits)})

    def _send(self, msg: dict) -> None:
        self.sock.send(json.dumps(msg).encode())

    def recv(self, timeout_ms: int | None = None) -> Frame | None:
        if self._owed:
            self._send({"credit": self._owed})
            self._owed = 0
        if timeout_ms is not None and not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        frame = decode(self.sock.recv_multipart(copy=False))
        self.received += 1
        if not frame.control:
            self._owed += 1
        return frame

    def close(self) -> None:
        self.sock.close()


# -- the track process's input: order restored -----------------------------------------------------------


class Reorder:
    """Merges the N workers' links back into per-source order (see the module docstring); the
    Receiver interface the runner uses. ``acks``: the broker's watermark address (lossless)."""

    def __init__(self, rx, workers: int, policy: str, ctx: zmq.Context | None = None, acks: str | None = None) -> None:
        self.rx = rx
        self.workers = int(workers)
        self.live = policy == "live"
        self.stale = 0          # live: frames older than one already passed on (drops)
        self.duplicates = 0     # lossless: frames sent again after a worker died that had arrived too
        self.held_max = 0       # the reorder buffer's largest size
        self._buf: dict[int, dict[int, Frame]] = collections.defaultdict(dict)
        self._next: dict[int, int] = collections.defaultdict(int)   # lossless: next seq to pass on
        self._last: dict[int, int] = {}                              # live: last seq passed on
        self._eos: dict[int, set] = collections.defaultdict(set)
        self._done: set[int] = set()
        self._ready: collections.deque = collections.deque()
        self._ack = None
        if acks is not None and not self.live and ctx is not None:
            self._ack = ctx.socket(zmq.PUSH)
            self._ack.setsockopt(zmq.LINGER, 0)
            self._ack.setsockopt(zmq.SNDHWM, 10000)
            self._ack.connect(acks)

    @property
    def received(self) -> int:
        return self.rx.received

    @property
    def dropped(self) -> int:
        return self.rx.dropped + self.stale

    def recv(self, timeout_ms: int | None = None) -> Frame | None:
        if self._ready:
            return self._ready.popleft()
        frame = self.rx.recv(timeout_ms=timeout_ms)
        if frame is None:
            return None
        self._take(frame)
        # everything already waiting: one call may complete a run of buffered frames
        while not self._ready:
            f = self.rx.recv(timeout_ms=0)
            if f is None:
                break
            self._take(f)
        return self._ready.popleft() if self._ready else None

    def _take(self, frame: Frame) -> None:
        if frame.meta is not None:
            self._ready.append(frame)
            return
        sid = frame.source_id
        if frame.eos:
            self._eos[sid].add(frame.info.get("worker"))
            if len(self._eos[sid]) >= self.workers and sid not in self._done:
                self._done.add(sid)
                left = self._buf.pop(sid, {})
                if left:   # only after a failure (frames lost with a worker): what arrived, in order
                    LOG.warning("source %d: %d frame(s) passed on behind a gap", sid, len(left))
                self._ready.extend(left[k] for k in sorted(left))
                self._ready.append(Frame(source_id=sid, frame_id=frame.frame_id, t_capture_ns=frame.t_capture_ns,
                                         epoch=frame.epoch, pts=frame.pts, eos=True))
            return
        seq = frame.info.pop("seq", None)
        if sid in self._done or seq is None:
            self._ready.append(frame)   # the runner counts a frame after its source's end as late
            return
        if self.live:
            if seq <= self._last.get(sid, -1):
                self.stale += 1
                return
            self._last[sid] = seq
            self._ready.append(frame)
            return
        buf = self._buf[sid]
        if seq < self._next[sid] or seq in buf:
            self.duplicates += 1
            return
        buf[seq] = frame
        self.held_max = max(self.held_max, len(buf))
        n = self._next[sid]
        while n in buf:
            self._ready.append(buf.pop(n))
            n += 1
        if n != self._next[sid]:
            self._next[sid] = n
            if self._ack is not None:
                try:
                    self._ack.send(json.dumps({"sid": sid, "next": n}).encode(), zmq.NOBLOCK)
                except zmq.Again:
                    pass

    def summary(self) -> dict:
        return {"reorder_held_max": self.held_max, "reorder_stale": self.stale, "reorder_duplicates": self.duplicates}

    def close(self) -> None:
        if self._ack is not None:
            self._ack.close()
        self._buf.clear()
        self._ready.clear()
        self.rx.close()


# -- the broker --------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, ident: bytes, pid: int | None) -> None:
        self.ident, self.pid = ident, pid
        self.inflight: dict[tuple[int, int], Frame] = {}   # lossless: (sid, seq) -> frame, until passed on
        self.dead = False
        self.sent = 0
        self.pending: collections.deque = collections.deque()   # when each frame not yet credited back was sent


class Broker:
    """The load-balancing broker's state and steps (the process loop is :func:`dispatch_main`)."""

    def __init__(self, ctx: zmq.Context, in_addr: str, pool_addr: str, acks_addr: str | None, policy: str,
                 n_sources: int, n_workers: int, timeout: float | None = None) -> None:
        from .transport import Receiver

        self.timeout = timeout            # seconds without a credit back: the worker is hung
        self.hung: list[int] = []

        self.policy = policy
        self.lossless = policy == "lossless"
        self.n_sources, self.n_workers = n_sources, n_workers
        self.rx = Receiver(ctx, in_addr, policy)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.SNDHWM, 0)     # bounded by the credits (+ a few markers)
        self.router.setsockopt(zmq.LINGER, 2000)
        self.router.bind(pool_addr)
        self.acks = None
        if acks_addr is not None and self.lossless:
            self.acks = ctx.socket(zmq.PULL)
            self.acks.setsockopt(zmq.LINGER, 0)
            self.acks.bind(acks_addr)
        self.workers: dict[bytes, _Worker] = {}
        self.lru: collections.deque = collections.deque()   # one entry per credit, in arrival order
        self.queue: collections.deque = collections.deque()  # frames and markers, in arrival order
        self.resend: collections.deque = collections.deque()  # frames of dead workers, before the queue
        self.seq: dict[int, int] = collections.defaultdict(int)      # next seq per source
        self.passed: dict[int, int] = collections.defaultdict(int)   # lossless: watermark per source
        self.eos_wait: dict[int, Frame] = {}   # markers waiting until every frame of the source was passed on
        self.ended: set[int] = set()           # sources whose marker went to every worker
        self.dropped = 0                       # live: older frames replaced by a newer one of the source
        self.resent = 0
        self.dispatched = 0
        self.lost_workers: list[int] = []
        self.lost_frames = 0                   # live: frames a dead worker held (counted as drops)
        # lossless: frames sent but not yet passed on by tracking (what a dead worker may have held);
        # reading from the captures pauses above this, so memory stays bounded
        self.max_retained = 8 + 4 * n_workers
        self.max_queue = 2 + n_workers

    # -- sockets -----------------------------------------------------------------------------------

    def poll(self, timeout_ms: int) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.acks is not None:
            poller.register(self.acks, zmq.POLLIN)
        reading = self._want_input()
        if reading:
            poller.register(self.rx.sock, zmq.POLLIN)
        ready = dict(poller.poll(0 if (reading and self.rx._pending) else timeout_ms))
        if self.router in ready:
            self._credits()
        if self.acks is not None and self.acks in ready:
            self._acks()
        if reading and (self.rx._pending or self.rx.sock in ready):
            self._input()
        self.dispatch()

    def _want_input(self) -> bool:
        if not self.lossless:
            return True   # live: always drain (the newest frame wins)
        return len(self.queue) < self.max_queue and self._retained() < self.max_retained

    def _retained(self) -> int:
        return sum(len(w.inflight) for w in self.workers.values())

    def _credits(self) -> None:
        while True:
            try:
                ident, msg = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                d = json.loads(msg)
            except ValueError:
                continue
            w = self.workers.get(ident)
            if w is None:
                w = self.workers[ident] = _Worker(ident, d.get("pid"))
                LOG.debug("worker %s (pid %s) connected", ident, w.pid)
            if w.dead:
                continue
            n = max(0, int(d.get("credit", 0)))
            for _ in range(min(n, len(w.pending))):   # (its first credits follow no frame)
                w.pending.popleft()
            self.lru.extend([ident] * n)

    def _acks(self) -> None:
        while True:
            try:
                d = json.loads(self.acks.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            sid, nxt = int(d["sid"]), int(d["next"])
            if nxt <= self.passed[sid]:
                continue
            self.passed[sid] = nxt
            for w in self.workers.values():
                for key in [k for k in w.inflight if k[0] == sid and k[1] < nxt]:
                    del w.inflight[key]

    def _input(self) -> None:
        for _ in range(64):
            f = self.rx.recv(timeout_ms=0)
            if f is None:
                return
            if f.meta is not None:    # the captures' metadata: nothing the workers need
                continue
            if not self.lossless and not f.eos:
                for i, old in enumerate(self.queue):   # the newest frame of a source wins
                    if old.source_id == f.source_id and not old.eos:
                        del self.queue[i]
                        self.dropped += 1
                        break
            self.queue.append(f)
            if self.lossless and not self._want_input():
                return

    # -- dispatching ----------------------------------------------------------------------------------

    def _next_worker(self) -> _Worker | None:
        while self.lru:
            w = self.workers.get(self.lru[0])
            if w is not None and not w.dead:
                return w
            self.lru.popleft()
        return None

    def _send(self, w: _Worker, frame: Frame) -> bool:
        try:
            self.router.send_multipart([w.ident] + encode(frame), copy=False)
            if not frame.control:   # (the worker credits back frames, not markers)
                w.pending.append(time.monotonic())
            return True
        except zmq.ZMQError as e:   # EHOSTUNREACH: the worker is gone
            LOG.debug("worker %s unreachable (%s)", w.ident, e)
            return False

    def dispatch(self) -> None:
        while True:
            if self.resend:
                w = self._next_worker()
                if w is None:
                    return
                frame = self.resend[0]
                if not self._send(w, frame):
                    self.worker_died(w)
                    continue
                self.resend.popleft()
                self.lru.popleft()
                w.inflight[(frame.source_id, frame.info["seq"])] = frame
                self.resent += 1
                continue
            if not self.queue:
                break
            f = self.queue[0]
            if f.eos:
                self.queue.popleft()
                self.eos_wait[f.source_id] = f
                continue
            w = self._next_worker()
            if w is None:
                break
            f.info = {**f.info, "seq": self.seq[f.source_id]}
            if not self._send(w, f):
                self.worker_died(w)
                continue
            self.queue.popleft()
            self.lru.popleft()
            self.seq[f.source_id] += 1
            self.dispatched += 1
            w.sent += 1
            if self.lossless and self.acks is not None:
                w.inflight[(f.source_id, f.info["seq"])] = f
        self._end_sources()

    def _end_sources(self) -> None:
        for sid, marker in list(self.eos_wait.items()):
            if self.acks is not None and (self.passed[sid] < self.seq[sid] or any(
                    f.source_id == sid for f in self.resend)):
                continue   # frames of it are still on their way: a dead worker's may need sending again
            del self.eos_wait[sid]
            for w in self.workers.values():
                if not w.dead:
                    idx = int(w.ident[1:]) if w.ident[1:].isdigit() else -1
                    out = Frame(source_id=sid, frame_id=marker.frame_id, t_capture_ns=marker.t_capture_ns,
                                epoch=marker.epoch, pts=marker.pts, info={**marker.info, "worker": idx}, eos=True)
                    if not self._send(w, out):
                        self.worker_died(w)
            self.ended.add(sid)

    def check_workers(self) -> None:
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.dead:
                continue
            if w.pid is not None and not _pid_alive(int(w.pid)):
                self.worker_died(w)
            elif self.timeout and w.pending and now - w.pending[0] > self.timeout:
                LOG.warning("worker %s (pid %s) returned no frame for %.1f s: hung, killed", w.ident.decode(),
                            w.pid, now - w.pending[0])
                self.hung.append(int(w.ident[1:]) if w.ident[1:].isdigit() else -1)
                if w.pid is not None:
                    import signal

                    try:
                        os.kill(int(w.pid), signal.SIGKILL)
                    except OSError:
                        pass
                self.worker_died(w)

    def worker_died(self, w: _Worker) -> None:
        if w.dead:
            return
        w.dead = True
        idx = int(w.ident[1:]) if w.ident[1:].isdigit() else -1
        self.lost_workers.append(idx)
        held = sorted(w.inflight.items(), key=lambda kv: (kv[1].t_capture_ns, kv[0]))
        w.inflight = {}
        self.lru = collections.deque(i for i in self.lru if i != w.ident)
        if not self.lossless:   # live: what it held is lost, counted as drops
            self.lost_frames += len(w.pending)
            LOG.warning("worker %s (pid %s) died; the %d frame(s) it held are counted as dropped", w.ident.decode(),
                        w.pid, len(w.pending))
            w.pending.clear()
            return
        LOG.warning("worker %s (pid %s) died; %d frame(s) it held go to the others", w.ident.decode(),
                    w.pid, len(held))
        self.resend.extendleft(f for _, f in reversed(held))

    def done(self) -> bool:
        return len(self.ended) >= self.n_sources

    def alive_workers(self) -> int:
        return sum(not w.dead for w in self.workers.values())

    def close(self) -> None:
        self.queue.clear()
        self.resend.clear()
        for w in self.workers.values():
            w.inflight = {}
        self.rx.close()
        self.router.close()
        if self.acks is not None:
            self.acks.close()


def dispatch_main(spec, ctx: zmq.Context, status, halted) -> dict:
    """The broker process's loop (run by :func:`stream.runner.stage_main` for ``role="dispatch"``):
    until every source's marker went to every worker, or a halt. Returns its statistics."""
    pool = spec.pool or {}
    b = Broker(ctx, spec.in_addr, pool["address"], pool.get("acks"), spec.policy, spec.n_sources,
               int(pool["workers"]), pool.get("timeout"))
    try:
        status.send("ready", meta={})
        next_check = 0.0
        while not b.done() and not halted():
            b.poll(50)
            now = time.monotonic()
            if now >= next_check:
                b.check_workers()
                next_check = now + 0.05
        return {"received": b.rx.received, "dropped": b.rx.dropped + b.dropped + b.lost_frames,
                "lost_with_workers": b.lost_frames, "dispatched": b.dispatched,
                "resent": b.resent, "workers_lost": b.lost_workers, "workers_hung": b.hung,
                "per_worker": {w.ident.decode(): w.sent for w in b.workers.values()}}
    finally:
        b.close()
