"""ZeroMQ links between stage processes, the two flow policies, and the shared-memory frame path.

A link is PUSH (upstream, connects) -> PULL (downstream, binds); several upstream processes (one
capture process per source) may connect to one downstream stage. Frames travel as
:func:`stream.messages.encode` multipart messages (JSON header + raw buffers, no pickle).

Shared-memory frame path (``ipc://`` links)
-------------------------------------------
Each :class:`Sender` owns a *ring* of ``slots`` equal buffers in one shared-memory file (a file in
``/dev/shm``, i.e. POSIX shared memory; in the link's private folder if ``/dev/shm`` is missing
or not writable). To send a frame the sender copies the image once into a free slot and sends
only the small header over ZeroMQ; the header's ``image_ref`` names the ring, the slot, a
generation number and the image's shape and dtype. The receiver maps the ring (once per sender)
and hands the consumer a **read-only numpy view of the slot**: one memcpy per hop, at the sender.

Ownership rule. The ring file starts with a control block: per slot, the generation the sender
last wrote (``sent``) and the one the receiver released (``released``); a slot is free when both
are equal. The receiver releases a slot when the last reference to the view (and to every numpy
view derived from it) is gone — a weak-reference callback writes ``released[slot] = gen`` — so a
consumer may keep a frame as long as it likes and its pixels are never overwritten while it
holds them; nothing to call, no copy needed. The sender only writes into free slots:
  * ``lossless``: with no free slot, ``send`` waits until the receiver releases one (up to
    ``timeout_ms`` when given, then ``TimeoutError``), so a slow receiver holds its upstream back
    and never sees a slot overwritten. The wait is not a spin: the sender sets a ``waiting`` flag
    in the control block and sleeps on a FIFO (``<ring>.wake`` in the link's folder) that the
    receiver writes a byte into when it releases a slot (a 10 ms timeout covers a missed wake-up).
  * ``live``: with no free slot the frame is dropped and counted (``dropped``), like a full queue;
    a frame whose header ZeroMQ refuses (queue full) gives its slot back at once.
A consumer that keeps many frames cannot stall the link: while it holds ``slots // 2`` views of
one ring, further frames from that ring are copied out of the slot and the slot released at once
(counted in ``Receiver.copied``). Views are read-only (stages that draw on an image copy it, as
they did for socket buffers); the receiver never hands out a slot whose ``sent`` generation
differs from the header's (``ValueError``).

Fallback to inline buffers (today's multipart path, ``copy=False``): images under
``shm_min_bytes`` (64 KiB: a hop through ZeroMQ is already cheap), non-numeric dtypes,
``tcp://`` (another machine) and ``inproc://`` links, ``Sender(..., shm=False)``, and when the
ring cannot be created (no writable ``/dev/shm`` nor private folder, or not enough room: the file
is ``posix_fallocate``'d up front, so a full ``/dev/shm`` means a fallback with fewer slots, then
inline buffers, never a SIGBUS). A frame larger than the ring's slots makes a new ring (the old
one is retired once its frames are through).

Clean-up. Ring files (and their wake FIFOs) are named ``psring-<hash of the link's folder>-<pid>-...``.
The receiver unlinks both as soon as it has mapped / opened them (both processes keep their
mapping, so the memory is freed by the kernel when both have exited, SIGKILL included).
``Sender.close`` first waits (up to ``linger_s``, 10 s; not at all once the receiver's process is
gone) until the receiver has taken every ring frame out of ZeroMQ — headers are tiny, so frames
and the end-of-stream marker all sit in socket buffers at once, and libzmq discards what a
receiver throttled by its high-water mark had not read when the sending process exits — then
unlinks and unmaps its rings. What only a killed process can leave — a ring created but never
mapped — is removed by :func:`remove_private_folder`, which the supervisor calls at shutdown
(it owns the private folder: sockets there, rings under its hash in ``/dev/shm``).

One receiver per sender: a ring is mapped by the one PULL socket its PUSH connects to (a
restarted receiver on the same address could not map a ring whose file is already gone:
``ValueError``). Rings are host-local; the control-block counters are aligned int64 stores,
ordered as needed on x86-64 (TSO).

Flow policies:
  * ``lossless`` (files, recording): small high-water marks and *blocking* sends, so a slow stage
    holds its upstream back and every frame arrives, in order.
  * ``live`` (webcams, RTSP): sends never block (a full queue or ring drops the frame being sent,
    and counts it), and a receiver drains everything that is waiting and keeps only the newest
    frame per source (counting the others; their slots are released at once), so latency cannot
    build up behind a slow stage.

Addresses default to ``ipc://`` files in a private temporary folder; ``tcp://`` on loopback (or a
configured host) for links across machines. Nothing binds to all interfaces unless configured.
"""
from __future__ import annotations

import errno
import glob
import hashlib
import itertools
import logging
import math
import mmap
import os
import re
import select
import shutil
import struct
import tempfile
import time
import weakref

import numpy as np
import zmq

from .messages import Frame, decode, encode

__all__ = ["POLICIES", "Sender", "Receiver", "ipc_address", "private_folder", "remove_private_folder",
           "ring_files", "Closed", "SHM_MIN_BYTES"]

LOG = logging.getLogger(__name__)

POLICIES = ("live", "lossless")
_HWM = {"live": 2, "lossless": 4}
_SLOTS = {"live": 4, "lossless": 6}
SHM_MIN_BYTES = 64 * 1024   # smaller images go inline
SHM_ROOT = "/dev/shm"

_MAGIC = b"PSRING1\0"
_HDR = struct.Struct("<8sqqqqqq")  # magic, slots, slot_size, data offset, mapped-by pid, sender waiting,
#                                    last generation received
_CTL = 64                          # per-slot sent[] then released[] generations (int64) from here
_PAGE = mmap.PAGESIZE
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
_NAME_RE = re.compile(r"^psring-([0-9a-f]{12})-\d+-[0-9a-f]+-\d+$")
_NONBLOCK = os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_ids = itertools.count()



class RingGone(ValueError):
    """A frame refers to a shared-memory ring whose file no longer exists (its sender closed it)."""


class Closed(Exception):
    """The link was closed while waiting."""


def ipc_address(folder: str, name: str) -> str:
    return f"ipc://{os.path.join(folder, name)}.sock"


def private_folder() -> str:
    return tempfile.mkdtemp(prefix="posestream-")


def _folder_of(address: str) -> str | None:
    """The folder of an ``ipc://`` address (None for other transports / abstract sockets)."""
    if not address.startswith("ipc://"):
        return None
    path = address[len("ipc://"):]
    if not path or path.startswith("@"):
        return None
    return os.path.dirname(os.path.realpath(path))


def _folder_hash(folder: str) -> str:
    return hashlib.sha1(os.path.realpath(folder).encode()).hexdigest()[:12]


def _shm_usable() -> bool:
    return os.path.isdir(SHM_ROOT) and os.access(SHM_ROOT, os.W_OK | os.X_OK)


def ring_files(folder: str) -> list[str]:
    """Shared-memory ring files (still named) of the links whose sockets live in ``folder``."""
    pattern = f"psring-{_folder_hash(folder)}-*"
    return sorted(glob.glob(os.path.join(SHM_ROOT, pattern)) + glob.glob(os.path.join(folder, pattern)))


def remove_private_folder(folder: str) -> None:
    """Remove a private folder (sockets, rings in it) and its links' rings in ``/dev/shm``: what
    the supervisor calls at shutdown, after every stage process exited (or was killed)."""
    for path in ring_files(folder):
        try:
            os.unlink(path)
        except OSError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


class _Ring:
    """One shared-memory file: a control block (per slot: sent / released generation) + slots.

    Wake-ups: a sender waiting for a free slot sets ``waiting``; a receiver releasing a slot then
    writes a byte into the ring's FIFO (``<name>.wake`` in the link's folder), which the sender
    polls, so a blocked lossless sender neither spins nor oversleeps.
    """

    def __init__(self, path: str, where: str, mm: mmap.mmap, slots: int, slot_size: int, data_off: int,
                 wake_path: str | None = None, wake_fd: int | None = None) -> None:
        self.path, self.name, self.where = path, os.path.basename(path), where
        self.mm, self.slots, self.slot_size, self.data_off = mm, slots, slot_size, data_off
        self.sent = np.frombuffer(mm, np.int64, slots, _CTL)
        self.released = np.frombuffer(mm, np.int64, slots, _CTL + 8 * slots)
        self.ctl = np.frombuffer(mm, np.int64, 6, 8)  # slots, slot_size, data_off, mapped pid, waiting, received
        self.wake_path, self.wake_fd = wake_path, wake_fd
        self.leases: dict[int, weakref.ref] = {}      # receiver side: slot -> view's weakref
        self.cap = max(1, slots // 2)                 # receiver side: views lent at most
        self.unlinked = False
        self.last_sent = 0                            # sender side: generation of the last frame sent

    @staticmethod
    def layout(slots: int, slot_size: int) -> tuple[int, int]:
        data_off = -(-(_CTL + 16 * slots) // _PAGE) * _PAGE
        return data_off, data_off + slots * slot_size

    @classmethod
    def create(cls, folder: str, where: str, name: str, slots: int, slot_size: int,
               wake_folder: str | None = None) -> "_Ring":
        data_off, total = cls.layout(slots, slot_size)
        path = os.path.join(folder, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, total)  # reserve the pages now: no SIGBUS on a full tmpfs later
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
                    raise
                os.ftruncate(fd, total)
            mm = mmap.mmap(fd, total, flags=_MAP_FLAGS)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        mm[:_HDR.size] = _HDR.pack(_MAGIC, slots, slot_size, data_off, 0, 0, 0)
        wake_path = wake_fd = None
        if wake_folder is not None:  # without it, a waiting sender polls (up to 2 ms late)
            try:
                wake_path = os.path.join(wake_folder, name + ".wake")
                os.mkfifo(wake_path, 0o600)
                wake_fd = os.open(wake_path, os.O_RDWR | _NONBLOCK)
            except OSError:
                if wake_path is not None:
                    _unlink(wake_path)
                wake_path = wake_fd = None
        return cls(path, where, mm, slots, slot_size, data_off, wake_path, wake_fd)

    @classmethod
    def attach(cls, path: str, where: str, wake_folder: str) -> "_Ring":
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            if size < _CTL:
                raise ValueError(f"shared-memory ring {path} is truncated")
            mm = mmap.mmap(fd, size, flags=_MAP_FLAGS)
        finally:
            os.close(fd)
        magic, slots, slot_size, data_off, *_ = _HDR.unpack(mm[:_HDR.size])
        if magic != _MAGIC or slots < 1 or slot_size < 1 or cls.layout(slots, slot_size) != (data_off, size):
            mm.close()
            raise ValueError(f"{path} is not a posestream shared-memory ring")
        wake_path = os.path.join(wake_folder, os.path.basename(path) + ".wake")
        try:
            wake_fd = os.open(wake_path, os.O_WRONLY | _NONBLOCK)
        except OSError:
            wake_fd = None
        ring = cls(path, where, mm, slots, slot_size, data_off, wake_path, wake_fd)
        ring.ctl[3] = os.getpid()  # tells the sender the files may go: mapping and FIFO stay valid
        ring.unlink()
        return ring

    def slot_bytes(self, slot: int, nbytes: int) -> np.ndarray:
        return np.frombuffer(self.mm, np.uint8, nbytes, self.data_off + slot * self.slot_size)

    def free_slot(self) -> int | None:
        """The lowest free slot (the most recently used ones are the likeliest still in cache)."""
        for i, (s, r) in enumerate(zip(self.sent.tolist(), self.released.tolist())):
            if s == r:
                return i
        return None

    def wait(self, timeout_s: float) -> None:
        """Sleep until the receiver releases a slot (or ``timeout_s``); ``waiting`` must be set."""
        if self.wake_fd is None:
            time.sleep(min(timeout_s, 2e-3))
            return
        select.select([self.wake_fd], [], [], timeout_s)
        try:
            os.read(self.wake_fd, 4096)
        except OSError:  # nothing to drain (timeout)
            pass

    def release(self, slot: int, gen: int) -> None:
        rel = self.released
        if rel is None:  # unmapped by this process already
            return
        rel[slot] = gen
        self.wake()

    def received(self, gen: int) -> None:
        self.ctl[5] = gen
        self.wake()

    def wake(self) -> None:
        ctl = self.ctl
        if ctl is not None and ctl[4] and self.wake_fd is not None:
            try:
                os.write(self.wake_fd, b"\0")
            except OSError:  # FIFO full (the sender will wake anyway) or the sender is gone
                pass

    def idle(self) -> bool:
        return bool(np.array_equal(self.sent, self.released))

    def mapped(self) -> bool:
        return int(self.ctl[3]) != 0

    def unlink(self) -> None:
        if not self.unlinked:
            self.unlinked = True
            _unlink(self.path)
            if self.wake_path is not None:
                _unlink(self.wake_path)

    def unmap(self) -> None:
        """Drop this process's mapping (at once if no view of it is left, else when the last goes)."""
        self.sent = self.released = self.ctl = None
        fd, self.wake_fd = self.wake_fd, None
        if fd is not None:
            os.close(fd)
        try:
            self.mm.close()
        except BufferError:  # views still alive somewhere: the mapping goes with the last of them
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:  # a killed process not yet reaped by its parent
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _release_cb(ring: _Ring, slot: int, gen: int):
    def release(ref) -> None:
        # forget the lease first: once ``released`` is written the slot may be re-sent and lent again
        if ring.leases.get(slot) is ref:
            ring.leases.pop(slot, None)
        ring.release(slot, gen)
    return release


class Sender:
    """Upstream end of a link (PUSH, connects).

    ``shm``: use the shared-memory ring for images of ``shm_min_bytes`` or more on ``ipc://``
    links (see the module docstring). ``slots``: ring size (default 6 lossless, 4 live).
    ``linger_s``: how long ``close`` waits for a receiver to pick up frames still in the ring.
    ``options``: socket options set before it connects (CurveZMQ keys on ``tcp://`` links).
    """

    def __init__(self, ctx: zmq.Context, address: str, policy: str, *, shm: bool = True, slots: int | None = None,
                 shm_min_bytes: int = SHM_MIN_BYTES, linger_s: float = 10.0, options: dict | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown flow policy {policy!r}; known: {', '.join(POLICIES)}")
        self.policy = policy
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, _HWM[policy])
        self.sock.setsockopt(zmq.LINGER, 2000)
        for k, v in (options or {}).items():   # e.g. CurveZMQ's client keys (stream/secure.py)
            self.sock.setsockopt(k, v)
        self.sock.connect(address)
        self.dropped = 0
        self.sent = 0
        self.sent_shm = 0  # of ``sent``: images through the ring
        self.slots = max(2, int(slots or _SLOTS[policy]))
        self.shm_min_bytes = shm_min_bytes
        self.linger_s = linger_s
        folder = _folder_of(address) if shm else None
        self._folder = folder
        self.shm = folder is not None   # False once the ring could not be created
        self.ring: _Ring | None = None
        self._retired: list[_Ring] = []
        self._gen = 0
        self._token = f"{os.getpid()}-{os.urandom(3).hex()}{next(_ids)}"
        self._rings_made = 0

    # -- ring --------------------------------------------------------------------------------------

    def _new_ring(self, nbytes: int) -> _Ring | None:
        folder = self._folder
        assert folder is not None
        slot_size = -(-nbytes // _PAGE) * _PAGE
        places = ([(SHM_ROOT, "shm")] if _shm_usable() else []) + [(folder, "ipc")]
        err: Exception | None = None
        for root, where in places:
            slots = self.slots
            while slots >= 2:
                name = f"psring-{_folder_hash(folder)}-{self._token}-{self._rings_made}"
                self._rings_made += 1
                try:
                    return _Ring.create(root, where, name, slots, slot_size, folder)
                except OSError as e:
                    err = e
                    if e.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                        break
                    slots //= 2
        LOG.warning("shared memory unavailable for %s (%s): frames go inline through ZeroMQ", folder, err)
        return None

    def _ring_for(self, nbytes: int) -> _Ring | None:
        ring = self.ring
        if ring is not None and nbytes <= ring.slot_size:
            return ring
        if ring is not None:  # bigger frames (a resolution change): a new ring, the old one retires
            self._retired.append(ring)
            self.ring = None
        self.ring = ring = self._new_ring(nbytes)
        if ring is None:
            self.shm = False
        return ring

    def _reap(self) -> None:
        """Retired rings: the file goes once the receiver mapped it (or nothing is in flight), the
        mapping once the receiver released every frame of it."""
        keep = []
        for ring in self._retired:
            if ring.mapped() or ring.idle():
                ring.unlink()
            if ring.idle():
                ring.unmap()
            else:
                keep.append(ring)
        self._retired = keep

    def _drain(self, ring: _Ring, deadline: float) -> None:
        """Wait until the receiver took every frame of ``ring`` out of ZeroMQ (or is gone, or the
        deadline)."""
        ring.ctl[4] = 1
        try:
            while int(ring.ctl[5]) < ring.last_sent:
                left = deadline - time.monotonic()
                pid = int(ring.ctl[3])
                if left <= 0 or (pid and not _pid_alive(pid)):
                    return
                ring.wait(min(left, 0.01))
        finally:
            ring.ctl[4] = 0

    @staticmethod
    def _acquire(ring: _Ring, block: bool, deadline: float | None) -> int | None:
        slot = ring.free_slot()
        if slot is not None or not block:
            return slot
        ring.ctl[4] = 1  # ask the receiver for a wake-up, then look again (no lost wake-up)
        try:
            while (slot := ring.free_slot()) is None:
                left = 0.01 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("downstream stage is not releasing frames")
                ring.wait(min(left, 0.01))  # 10 ms: a missed wake-up costs no more
        finally:
            ring.ctl[4] = 0
        return slot

    # -- sending -----------------------------------------------------------------------------------

    def send(self, frame: Frame, timeout_ms: int | None = None) -> bool:
        """Send a frame. Live: never blocks, returns False (and counts a drop) if the ring or the
        queue is full. Lossless: blocks (up to ``timeout_ms`` if given; then raises
        ``TimeoutError``). Control frames (end-of-stream markers, metadata) are never dropped."""
        block = self.policy == "lossless" or frame.control
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1e3
        img = frame.image
        held = None  # (ring, slot, gen) written for this frame
        ref = None
        if (self.shm and img is not None and img.nbytes >= self.shm_min_bytes and img.dtype.kind in "biuf"
                and img.dtype.isnative):
            ring = self._ring_for(img.nbytes)
            if ring is not None:
                if self._retired:
                    self._reap()
                slot = self._acquire(ring, block, deadline)
                if slot is None:
                    self.dropped += 1
                    return False
                self._gen += 1
                gen = self._gen
                ring.sent[slot] = gen
                held = (ring, slot, gen)
                np.copyto(ring.slot_bytes(slot, img.nbytes).view(img.dtype).reshape(img.shape), img, casting="no")
                ref = {"ring": ring.name, "dir": ring.where, "slot": slot, "gen": gen}
        ack = None
        if ref is None and self.shm:
            # no pixels through the ring: the header still carries a generation of it, which the
            # receiver acknowledges, so ``close`` can wait until every message (the end-of-stream
            # marker too) left ZeroMQ — a receiver throttled by its high-water mark otherwise loses
            # what is still in the socket when this process exits
            ring = self.ring or self._ring_for(_PAGE)
            if ring is not None:
                self._gen += 1
                ack = {"ring": ring.name, "dir": ring.where, "gen": self._gen}
                held_ack = (ring, self._gen)
        parts = encode(frame, ref, ack=ack)
        if not block:
            try:
                self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._unhold(held)
                self.dropped += 1
                return False
        else:
            if deadline is not None:
                left = max(0, int((deadline - time.monotonic()) * 1e3))
                if not self.sock.poll(left, zmq.POLLOUT):
                    self._unhold(held)
                    raise TimeoutError("downstream stage is not receiving")
            self.sock.send_multipart(parts, copy=False)
        self.sent += 1
        if held is not None:
            self.sent_shm += 1
            held[0].last_sent = held[2]
        elif ack is not None:
            held_ack[0].last_sent = held_ack[1]
        return True

    @staticmethod
    def _unhold(held) -> None:
        if held is not None:
            ring, slot, gen = held
            ring.released[slot] = gen

    def close(self) -> None:
        """Close the link. Frames still in the ring are waited for (up to ``linger_s``, not if the
        receiver died): ZeroMQ drops what a receiver throttled by its high-water mark had not yet
        read when the sending process goes, and with the pixels out of band everything (the
        end-of-stream marker too) fits in the socket buffers at once. Then the ring files go."""
        rings = ([self.ring] if self.ring is not None else []) + self._retired
        self.ring, self._retired = None, []
        deadline = time.monotonic() + self.linger_s
        for ring in rings:
            self._drain(ring, deadline)
        self.sock.close()
        for ring in rings:
            ring.unlink()
            ring.unmap()


class Receiver:
    """Downstream end of a link (PULL, binds).

    Images that came through a sender's shared-memory ring are read-only views of its slots,
    valid as long as they are referenced (see the module docstring); ``copied`` counts the frames
    copied out instead because the consumer held too many views.
    """

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
        self.copied = 0
        self._pending: list[Frame] = []
        self._folder = _folder_of(address)
        self._hash = _folder_hash(self._folder) if self._folder else None
        self._rings: dict[str, _Ring] = {}
        self._old: list[_Ring] = []  # rings a sender replaced (bigger frames), while views of them live

    def _ring(self, ref: dict) -> _Ring:
        name = ref.get("ring")
        ring = self._rings.get(name)
        if ring is not None:
            return ring
        m = _NAME_RE.match(name) if isinstance(name, str) else None
        if self._folder is None or m is None or m.group(1) != self._hash or ref.get("dir") not in ("shm", "ipc"):
            raise ValueError(f"frame refers to a shared-memory ring {name!r} this link does not accept")
        root = SHM_ROOT if ref["dir"] == "shm" else self._folder
        try:
            ring = _Ring.attach(os.path.join(root, name), ref["dir"], self._folder)
        except FileNotFoundError:
            raise RingGone(f"shared-memory ring {name} is gone (its sender closed long ago?)") from None
        owner = name.rsplit("-", 1)[0]
        for other in [k for k in self._rings if k.rsplit("-", 1)[0] == owner]:  # the sender's retired ring
            self._old.append(self._rings.pop(other))
        self._old = [r for r in self._old if r.leases or r.unmap()]  # kept until its views are gone
        self._rings[name] = ring
        return ring

    def _resolve(self, ref: dict) -> np.ndarray:
        ring = self._ring(ref)
        slot, gen = ref["slot"], ref["gen"]
        dtype = np.dtype(ref["dtype"])
        shape = tuple(ref["shape"])
        nbytes = dtype.itemsize * math.prod(shape)
        if not (isinstance(slot, int) and 0 <= slot < ring.slots) or nbytes > ring.slot_size or dtype.hasobject:
            raise ValueError(f"bad shared-memory reference {ref}")
        if int(ring.sent[slot]) != gen:
            raise ValueError(f"shared-memory slot {slot} of {ring.name} was overwritten (generation "
                             f"{int(ring.sent[slot])}, expected {gen})")
        ring.received(gen)
        base = ring.slot_bytes(slot, nbytes)
        if len(ring.leases) >= ring.cap:  # the consumer holds many views: copy, free the slot now
            a = base.view(dtype).reshape(shape).copy()
            ring.release(slot, gen)
            self.copied += 1
            return a
        ring.leases[slot] = weakref.ref(base, _release_cb(ring, slot, gen))
        a = base.view(dtype).reshape(shape)
        a.flags.writeable = False
        return a

    def _ack(self, ref: dict) -> None:
        gen = ref.get("gen")
        if isinstance(gen, int):
            try:
                self._ring(ref).received(gen)
            except RingGone:  # the sender has closed its ring: nobody waits for this ack any more
                pass

    def _recv(self, flags: int = 0) -> Frame:
        return decode(self.sock.recv_multipart(flags=flags, copy=False), self._resolve, self._ack)

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
                if old is not None and not old.control and not f.control:
                    order.remove(old)  # its slot is released with it
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
        self._pending.clear()
        for ring in [*self._rings.values(), *self._old]:
            ring.unmap()
        self._rings.clear()
        self._old.clear()
