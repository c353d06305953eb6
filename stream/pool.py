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
CONTROL = b"posestream-control"   # first part of the broker's own messages to a worker (welcome, bye)


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
    one credit back each time it asks for the next frame (the previous one is done).

    A remote worker (``posestream worker``) gives its own ``ident`` and the CurveZMQ client
    ``options``, and calls :meth:`hello` / :meth:`welcome` before its credits (``credits=0`` here,
    :meth:`start` later). It sends a heartbeat while idle, so the broker can tell a silent worker
    from a busy one. ``bye``: the broker said the run is over (or dropped this worker)."""

    HEARTBEAT_S = 1.0

    def __init__(self, ctx: zmq.Context, address: str, index: int, credits: int, ident: bytes | None = None,
                 options: dict | None = None) -> None:
        from .secure import apply

        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, ident or f"w{index}".encode())
        self.sock.setsockopt(zmq.LINGER, 0 if options is None else 1000)
        self.sock.setsockopt(zmq.RCVHWM, 0)   # what arrives is what this worker asked for
        apply(self.sock, options)
        self.sock.connect(address)
        self.index = index
        self.received = 0
        self.dropped = 0
        self.bye: str | None = None
        self._owed = 0
        self._t_sent = time.monotonic()
        if credits:
            self.start(credits)

    def _send(self, msg: dict) -> None:
        self.sock.send(json.dumps(msg).encode())
        self._t_sent = time.monotonic()

    def start(self, credits: int) -> None:
        self._send({"pid": os.getpid(), "credit": int(credits)})

    def hello(self, name: str) -> None:
        self._send({"hello": name, "pid": os.getpid()})

    def welcome(self, timeout_s: float) -> dict | None:
        """The broker's answer to :meth:`hello` (``{"infer", "policy", ...}``), None when none came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.sock.poll(100, zmq.POLLIN):
                parts = self.sock.recv_multipart()
                if parts[0] == CONTROL and len(parts) > 1:
                    msg = json.loads(parts[1])
                    if "welcome" in msg:
                        return msg["welcome"]
                    if "bye" in msg:
                        self.bye = str(msg["bye"])
                        return None
        return None

    def leave(self, why: str) -> None:
        try:
            self._send({"leave": why})
        except zmq.ZMQError:
            pass

    hold_credits = False   # set by a batching input: the credits go back after the batch (flush_credits)

    def flush_credits(self) -> None:
        if self._owed:
            self._send({"credit": self._owed})
            self._owed = 0

    def recv(self, timeout_ms: int | None = None) -> Frame | None:
        if self._owed and not self.hold_credits:
            self.flush_credits()
        elif time.monotonic() - self._t_sent > self.HEARTBEAT_S:
            self._send({"hb": 1})
        if timeout_ms is not None and not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        parts = self.sock.recv_multipart(copy=False)
        if parts[0].bytes == CONTROL:
            msg = json.loads(parts[1].bytes) if len(parts) > 1 else {}
            if "bye" in msg:
                self.bye = str(msg["bye"])
            return None
        frame = decode(parts)
        self.received += 1
        if not frame.control:
            self._owed += 1
        return frame

    def close(self) -> None:
        self.sock.close()


def _key(worker) -> str:
    """A worker's key in end-of-stream markers: ``w0``, ``w1``, ... (local) or its routing id."""
    return f"w{worker}" if isinstance(worker, int) else str(worker)


# -- the track process's input: order restored -----------------------------------------------------------


class Reorder:
    """Merges the N workers' links back into per-source order (see the module docstring); the
    Receiver interface the runner uses. ``acks``: the broker's watermark address (lossless)."""

    def __init__(self, rx, workers: int, policy: str, ctx: zmq.Context | None = None, acks: str | None = None,
                 inlet: dict | None = None) -> None:
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
        self._of: dict[int, set] = {}
        self._done: set[int] = set()
        self._ready: collections.deque = collections.deque()
        self._ack = None
        if acks is not None and not self.live and ctx is not None:
            self._ack = ctx.socket(zmq.PUSH)
            self._ack.setsockopt(zmq.LINGER, 0)
            self._ack.setsockopt(zmq.SNDHWM, 10000)
            self._ack.connect(acks)
        self.inlet = None   # remote workers' results (tcp, CurveZMQ) into this process's input
        if inlet is not None and ctx is not None:
            self.inlet = TcpInlet(ctx, inlet["listen"], inlet["keys"], inlet["to"])

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
            # a source ends when every worker the broker sent its marker to (``of``) has passed it on
            # (or the broker / the supervisor passed it on in place of a worker that died)
            self._eos[sid].add(_key(frame.info.get("worker")))
            if frame.info.get("of") is not None:
                self._of.setdefault(sid, set()).update(_key(k) for k in frame.info["of"])
            if frame.info.get("force"):   # (the supervisor: nobody is left to pass the others on)
                self._of[sid] = set(self._eos[sid])
            if sid in self._of and self._of[sid] <= self._eos[sid] and sid not in self._done:
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
        if self.inlet is not None:
            self.inlet.close()
        self._buf.clear()
        self._ready.clear()
        self.rx.close()


# -- the broker --------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, ident: bytes, pid: int | None, router: zmq.Socket, remote: str | None = None) -> None:
        self.ident, self.pid, self.router = ident, pid, router
        self.remote = remote                  # a remote worker's name (posestream worker), None: local
        self.inflight: dict[tuple[int, int], Frame] = {}   # lossless: (sid, seq) -> frame, until passed on
        self.dead = False
        self.sent = 0
        self.pending: collections.deque = collections.deque()   # when each frame not yet credited back was sent
        self.markers: set[int] = set()        # sources whose end-of-stream marker it was sent
        self.last_seen = time.monotonic()
        self.started = False                  # sent its first credits (a remote one: its model is loaded)

    @property
    def key(self):
        """Its key in end-of-stream markers: the index of a local worker, else its routing id."""
        tail = self.ident[1:]
        return int(tail) if self.remote is None and tail.isdigit() else self.ident.decode(errors="replace")


class _Capture:
    """A remote capture (``posestream capture --connect``) that said hello for source ``sid``."""

    def __init__(self, name: str, sid: int, ident: bytes, router: zmq.Socket) -> None:
        self.name, self.sid, self.ident, self.router = name, sid, ident, router
        self.last_seen = time.monotonic()
        self.gone = False


class Broker:
    """The load-balancing broker's state and steps (the process loop is :func:`dispatch_main`).

    ``remote``: ``{"listen", "keys", "welcome"}``: also accept remote workers (``posestream worker
    --connect``) on a CurveZMQ ROUTER bound to ``listen``; ``welcome`` is what each is told (the
    inference settings, where results go). ``track``: the track process's address, where the broker
    passes a dead worker's end-of-stream markers on in its place (and every marker, when no worker
    is left)."""

    def __init__(self, ctx: zmq.Context, in_addr: str, pool_addr: str, acks_addr: str | None, policy: str,
                 n_sources: int, n_workers: int, timeout: float | None = None, credits: int = 2,
                 remote: dict | None = None, track: str | None = None) -> None:
        from .transport import Receiver

        self.timeout = timeout            # seconds without a credit back: the worker is hung
        self.hung: list = []

        self.policy = policy
        self.lossless = policy == "lossless"
        self.n_sources, self.n_workers = n_sources, n_workers
        self.credits = max(1, int(credits))
        self.rx = Receiver(ctx, in_addr, policy)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.SNDHWM, 0)     # bounded by the credits (+ a few markers)
        self.router.setsockopt(zmq.LINGER, 2000)
        self.router.bind(pool_addr)
        self.routers = [self.router]
        self.auth = None
        self.remote_router = None
        self.welcome = None
        if remote:
            from .secure import Authenticator, apply, server_options

            self.auth = Authenticator(ctx, os.path.join(remote["keys"], "authorized"), "dispatch")
            r = self.remote_router = ctx.socket(zmq.ROUTER)
            r.setsockopt(zmq.ROUTER_MANDATORY, 1)
            r.setsockopt(zmq.SNDHWM, 0)
            r.setsockopt(zmq.LINGER, 1000)
            apply(r, server_options(remote["keys"]))
            r.bind(remote["listen"])
            self.routers.append(r)
            self.welcome = remote.get("welcome") or {}
            LOG.info("remote workers: listening on %s (CurveZMQ)", remote["listen"])
        self.capture_sids: dict[str, int] = dict((remote or {}).get("captures") or {})   # name -> source id
        self.capture_welcome = (remote or {}).get("capture_welcome") or {}
        self.captures: dict[str, _Capture] = {}
        self.remote_captured: dict[int, int] = collections.defaultdict(int)
        self.remote_dropped = 0
        self.remote_dropped_per: dict[int, int] = collections.defaultdict(int)
        self.stopping = False
        self.frames_inlet = None
        if self.capture_sids:   # remote captures' frames: into this process's input, with the local ones'
            self.frames_inlet = TcpInlet(ctx, remote["frames"], remote["keys"], in_addr, auth=self.auth)
        self.track = None
        if track is not None:
            self.track = ctx.socket(zmq.PUSH)
            self.track.setsockopt(zmq.LINGER, 2000)
            self.track.connect(track)
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
        self.lost_workers: list = []
        self.joined: list[str] = []            # remote workers that joined (their names)
        self.lost_frames = 0                   # live: frames a dead worker held (counted as drops)
        self._got_eos: set[int] = set()        # remote captures' sources whose marker came (or was made)
        self.sent_at: dict[tuple[int, int], float] = {}   # lossless: when each retained frame was last sent
        self.stuck_resent = 0

    # -- limits ------------------------------------------------------------------------------------

    @property
    def max_retained(self) -> int:
        """Lossless: frames sent but not yet passed on by tracking (what a dead worker may have
        held); reading from the captures pauses above this, so memory stays bounded."""
        return 8 + 2 * self.credits * max(1, self.alive_workers())

    @property
    def max_queue(self) -> int:
        return 2 + self.credits * max(1, self.alive_workers())

    # -- sockets -----------------------------------------------------------------------------------

    def poll(self, timeout_ms: int) -> None:
        poller = zmq.Poller()
        for r in self.routers:
            poller.register(r, zmq.POLLIN)
        if self.acks is not None:
            poller.register(self.acks, zmq.POLLIN)
        reading = self._want_input()
        if reading:
            poller.register(self.rx.sock, zmq.POLLIN)
        ready = dict(poller.poll(0 if (reading and self.rx._pending) else timeout_ms))
        for r in self.routers:
            if r in ready:
                self._credits(r)
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

    def _control(self, router: zmq.Socket, ident: bytes, msg: dict) -> bool:
        try:
            router.send_multipart([ident, CONTROL, json.dumps(msg).encode()])
            return True
        except zmq.ZMQError:
            return False

    def _credits(self, router: zmq.Socket) -> None:
        while True:
            try:
                ident, msg = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:   # not [ident, message]: not one of ours
                continue
            try:
                d = json.loads(msg)
                if not isinstance(d, dict):
                    continue
            except ValueError:
                continue
            remote = router is self.remote_router
            if remote and ("capture" in d or ident in self._capture_idents()):
                self._capture_message(router, ident, d)
                continue
            w = self.workers.get(ident)
            if w is not None and w.router is not router:   # (a remote peer may not pose as a local worker)
                continue
            if w is None:
                if remote and ("hello" not in d or not ident.startswith(b"r:")):
                    # not known here (dropped, or connected to this pipeline's predecessor): start again
                    self._control(router, ident, {"bye": "unknown worker: join again (hello first)"})
                    continue
                w = self.workers[ident] = _Worker(ident, d.get("pid") if not remote else None, router,
                                                  str(d["hello"])[:64] if remote else None)
                if remote:
                    self.joined.append(w.remote)
                    LOG.warning("remote worker %s (%s) joined", w.remote, ident.decode(errors="replace"))
                    if not self._control(router, ident, {"welcome": {**self.welcome, "credits": self.credits}}):
                        self.worker_died(w)
                else:
                    LOG.debug("worker %s (pid %s) connected", ident, w.pid)
            if w.dead:
                if w.remote is not None:   # dropped (silent or hung): told, so that it can start again
                    self._control(router, ident, {"bye": "dropped by the pipeline: join again"})
                continue
            w.last_seen = time.monotonic()
            if "leave" in d:
                LOG.warning("worker %s left (%s)", w.remote or ident.decode(), str(d["leave"])[:200])
                self.worker_died(w)
                continue
            try:
                n = min(max(0, int(d.get("credit", 0) or 0)), 4 * MAX_BATCH)
            except (TypeError, ValueError):
                continue
            if n:
                w.started = True
            for _ in range(min(n, len(w.pending))):   # (its first credits follow no frame)
                w.pending.popleft()
            self.lru.extend([ident] * n)

    # -- remote captures (posestream capture --connect) ----------------------------------------------

    def _capture_idents(self) -> set:
        return {c.ident for c in self.captures.values()}

    def _capture_message(self, router: zmq.Socket, ident: bytes, d: dict) -> None:
        c = next((c for c in self.captures.values() if c.ident == ident), None)
        if c is None:
            name = str(d.get("capture"))[:64]
            sid = self.capture_sids.get(name)
            old = self.captures.get(name)
            why = None
            if sid is None:
                why = (f"no source remote:{name} in this pipeline (its remote sources: "
                       f"{', '.join('remote:' + n for n in self.capture_sids) or 'none'})")
            elif old is not None and not old.gone:
                why = f"remote:{name} is already connected"
            elif sid in self.remote_ended or self.stopping:
                why = f"remote:{name}: its stream has ended"
            if why is not None:
                LOG.warning("remote capture %s refused: %s", name, why)
                self._control(router, ident, {"bye": why})
                return
            c = self.captures[name] = _Capture(name, sid, ident, router)
            LOG.warning("remote capture %s joined as source %d", name, sid)
            self._control(router, ident, {"welcome": {**self.capture_welcome, "source_id": sid}})
            return
        if c.gone:   # its source was ended in its place: told, once more
            self._control(router, ident, {"bye": f"remote:{c.name}: its stream was ended"})
            return
        c.last_seen = time.monotonic()
        if "leave" in d:
            c.gone = True

    @property
    def remote_ended(self) -> set:
        return {sid for sid in self.capture_sids.values() if sid in self._got_eos}

    def _end_remote_source(self, sid: int, why: str) -> None:
        """A remote capture's stream ends without its marker (gone, or never came before a stop)."""
        if sid in self._got_eos:
            return
        LOG.warning("source %d (remote capture): %s; its stream ends here", sid, why)
        self._got_eos.add(sid)
        self.queue.append(Frame(source_id=sid, frame_id=-1, t_capture_ns=time.monotonic_ns(), eos=True))

    def stop(self) -> None:
        """The pipeline stops: remote captures are told to end their streams; sources whose capture is
        not connected end now."""
        if self.stopping:
            return
        self.stopping = True
        for name, sid in self.capture_sids.items():
            c = self.captures.get(name)
            if c is None or c.gone:
                self._end_remote_source(sid, "the pipeline stops and its capture is not connected")
            else:
                self._control(c.router, c.ident, {"bye": "the pipeline stops"})

    def _check_captures(self, now: float) -> None:
        for c in self.captures.values():
            if c.sid in self._got_eos:
                continue
            if c.gone or (self.timeout and now - c.last_seen > self.timeout):
                why = "its capture left" if c.gone else f"remote capture {c.name} silent for {now - c.last_seen:.1f} s"
                if not c.gone:
                    self._control(c.router, c.ident, {"bye": f"remote:{c.name}: silent for too long, its stream was "
                                                             f"ended"})
                c.gone = True
                self._end_remote_source(c.sid, why)

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
                    self.sent_at.pop(key, None)

    def _input(self) -> None:
        for _ in range(64):
            f = self.rx.recv(timeout_ms=0)
            if f is None:
                return
            if f.meta is not None:    # the captures' metadata: nothing the workers need
                continue
            if f.source_id in self.capture_sids.values():   # a remote capture's
                if f.source_id in self._got_eos:
                    continue   # (after its stream was ended in its place)
                c = next((c for c in self.captures.values() if c.sid == f.source_id), None)
                if c is not None:
                    c.last_seen = time.monotonic()
                if f.eos:
                    self._got_eos.add(f.source_id)
                    try:   # what its sender dropped (live) was captured too
                        n = max(0, int(f.info.pop("dropped_send", 0) or 0))
                    except (TypeError, ValueError):
                        n = 0
                    self.remote_dropped += n
                    self.remote_dropped_per[f.source_id] += n
                else:
                    self.remote_captured[f.source_id] += 1
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
            w.router.send_multipart([w.ident] + encode(frame), copy=False)
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
                self.sent_at[(frame.source_id, frame.info["seq"])] = time.monotonic()
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
                self.sent_at[(f.source_id, f.info["seq"])] = time.monotonic()
        self._end_sources()

    @staticmethod
    def _marker(marker: Frame, sid: int, info: dict) -> Frame:
        return Frame(source_id=sid, frame_id=marker.frame_id, t_capture_ns=marker.t_capture_ns, epoch=marker.epoch,
                     pts=marker.pts, info={**marker.info, **info}, eos=True)

    def _end_sources(self) -> None:
        for sid, marker in list(self.eos_wait.items()):
            if self.acks is not None and (self.passed[sid] < self.seq[sid] or any(
                    f.source_id == sid for f in self.resend)):
                continue   # frames of it are still on their way: a dead worker's may need sending again
            alive = [w for w in self.workers.values() if not w.dead]
            if not self.workers:
                continue   # no worker has joined yet (workers: 0): the marker waits for one
            del self.eos_wait[sid]
            of = [w.key for w in alive]
            for w in alive:
                w.markers.add(sid)
                if not self._send(w, self._marker(marker, sid, {"worker": w.key, "of": of})):
                    self.worker_died(w)
            if not alive:   # no worker left (or none joined): tracking is told directly
                self._to_track(self._marker(marker, sid, {"worker": "dispatch", "of": []}))
            self.ended.add(sid)

    def _to_track(self, frame: Frame) -> None:
        if self.track is None:
            return
        try:
            self.track.send_multipart(encode(frame), zmq.NOBLOCK)
        except zmq.ZMQError as e:
            LOG.warning("could not pass on an end-of-stream marker of source %d (%s)", frame.source_id, e)

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
                self.hung.append(w.key)
                if w.pid is not None:
                    import signal

                    try:
                        os.kill(int(w.pid), signal.SIGKILL)
                    except OSError:
                        pass
                else:   # a remote worker: told to go (it may be unreachable)
                    self._control(w.router, w.ident, {"bye": "no frame returned in time: dropped"})
                self.worker_died(w)
            elif w.remote is not None and w.started and self.timeout and now - w.last_seen > self.timeout:
                LOG.warning("remote worker %s silent for %.1f s: gone", w.remote, now - w.last_seen)
                self._control(w.router, w.ident, {"bye": "silent for too long: dropped, join again"})
                self.worker_died(w)
        self._check_captures(now)
        self._check_stuck(now)

    def _check_stuck(self, now: float) -> None:
        """Lossless: a frame not passed on by tracking 2 x worker_timeout after it was sent (its
        result was lost on the way, e.g. a tcp connection that reset) goes to a worker again;
        tracking drops whichever copy comes second."""
        if not self.timeout or not self.sent_at:
            return
        limit = 2 * self.timeout
        for w in self.workers.values():
            if w.dead:
                continue
            for key in [k for k in w.inflight if now - self.sent_at.get(k, now) > limit]:
                frame = w.inflight.pop(key)
                self.sent_at.pop(key, None)
                LOG.warning("frame %d of source %d not passed on %.0f s after it went to worker %s: sent again",
                            key[1], key[0], limit, w.ident.decode(errors="replace"))
                self.resend.append(frame)
                self.stuck_resent += 1

    def worker_died(self, w: _Worker) -> None:
        if w.dead:
            return
        w.dead = True
        self.lost_workers.append(w.key)
        held = sorted(w.inflight.items(), key=lambda kv: (kv[1].t_capture_ns, kv[0]))
        w.inflight = {}
        self.lru = collections.deque(i for i in self.lru if i != w.ident)
        for sid in sorted(w.markers):   # markers it may not have passed on: in its place
            self._to_track(Frame(source_id=sid, frame_id=-1, t_capture_ns=0, eos=True, info={"worker": w.key}))
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
        for w in self.workers.values():   # remote workers: the run is over
            if w.remote is not None and not w.dead:
                self._control(w.router, w.ident, {"bye": "the run is over"})
        for c in self.captures.values():
            if not c.gone:
                self._control(c.router, c.ident, {"bye": "the run is over"})
        if self.frames_inlet is not None:
            self.frames_inlet.close()
        self.queue.clear()
        self.resend.clear()
        for w in self.workers.values():
            w.inflight = {}
        self.rx.close()
        for r in self.routers:
            r.close()
        if self.track is not None:
            self.track.close()
        if self.acks is not None:
            self.acks.close()
        if self.auth is not None:
            self.auth.close()


def dispatch_main(spec, ctx: zmq.Context, status, halted, stopped=None) -> dict:
    """The broker process's loop (run by :func:`stream.runner.stage_main` for ``role="dispatch"``):
    until every source's marker went to every worker, or a halt. Returns its statistics."""
    pool = spec.pool or {}
    b = Broker(ctx, spec.in_addr, pool["address"], pool.get("acks"), spec.policy, spec.n_sources,
               int(pool["workers"]), pool.get("timeout"), int(pool.get("credits", 2)), pool.get("remote"),
               pool.get("track"))
    try:
        status.send("ready", meta={})
        next_check = 0.0
        while not b.done() and not halted():
            b.poll(50)
            if stopped is not None and stopped():
                b.stop()
            now = time.monotonic()
            if now >= next_check:
                b.check_workers()
                next_check = now + 0.05
        return {"received": b.rx.received, "dropped": b.rx.dropped + b.dropped + b.lost_frames + b.remote_dropped,
                "remote_captured": {str(k): v for k, v in b.remote_captured.items()},
                "remote_dropped": {str(k): v for k, v in b.remote_dropped_per.items()},
                "remote_captures": sorted(b.captures),
                "lost_with_workers": b.lost_frames, "dispatched": b.dispatched,
                "resent": b.resent, "workers_lost": b.lost_workers, "workers_hung": b.hung,
                "remote_joined": b.joined, "refused": b.auth.refused if b.auth is not None else 0,
                "per_worker": {w.ident.decode(errors="replace"): w.sent for w in b.workers.values()}}
    finally:
        b.close()


class TcpInlet:
    """A process's door for remote senders (the track process: remote workers' results; the broker:
    remote captures' frames): a CurveZMQ PULL bound to ``listen`` (accepting the authorized keys
    only), forwarded as they come (a thread) to the process's own input link ``to``, where they
    merge with the local senders' messages."""

    def __init__(self, ctx: zmq.Context, listen: str, keys: str, to: str, auth=None, what: str = "track") -> None:
        import threading

        from .secure import Authenticator, apply, server_options

        # one ZAP handler per ZeroMQ context: the process's own when it has one already
        self._own_auth = auth is None
        self.auth = auth if auth is not None else Authenticator(ctx, os.path.join(keys, "authorized"), what)
        self.front = ctx.socket(zmq.PULL)
        self.front.setsockopt(zmq.LINGER, 0)
        apply(self.front, server_options(keys))
        self.front.bind(listen)
        self.back = ctx.socket(zmq.PUSH)
        self.back.setsockopt(zmq.LINGER, 1000)
        self.back.connect(to)
        self._ctl_addr = f"inproc://inlet-{id(self)}"
        self.ctl = ctx.socket(zmq.PAIR)
        self.ctl.bind(self._ctl_addr)
        peer = ctx.socket(zmq.PAIR)
        peer.connect(self._ctl_addr)

        def run() -> None:
            # forward every message as it comes; a full input link holds the remote senders back
            # (lossless) as a local link would. (ZeroMQ's steerable proxy gives up on EAGAIN.)
            poller = zmq.Poller()
            poller.register(self.front, zmq.POLLIN)
            poller.register(peer, zmq.POLLIN)
            try:
                while True:
                    ready = dict(poller.poll(200))
                    if peer in ready:
                        return
                    if self.front not in ready:
                        continue
                    msg = self.front.recv_multipart(copy=False)
                    while True:
                        try:
                            self.back.send_multipart(msg, zmq.NOBLOCK, copy=False)
                            break
                        except zmq.Again:
                            if peer.poll(10):
                                return
            except zmq.ZMQError as e:
                if e.errno not in (zmq.ETERM, zmq.ENOTSOCK):
                    LOG.warning("tcp inlet %s stopped: %s", listen, e)
            finally:
                peer.close()
                self.front.close()
                self.back.close()

        self.thread = threading.Thread(target=run, name="tcp-inlet", daemon=True)
        self.thread.start()

    def close(self) -> None:
        try:
            self.ctl.send(b"TERMINATE")
        except zmq.ZMQError:
            pass
        self.thread.join(timeout=2)
        self.ctl.close()
        if self._own_auth:
            self.auth.close()
