"""Wire format and the two flow policies over real ZeroMQ sockets."""
import threading
import time

import numpy as np
import pytest
import zmq

from posestream.stream.messages import Frame, People, decode, encode, now_ns
from posestream.stream.transport import Receiver, Sender, ipc_address, private_folder


def frame(i, source=0, h=48, w=64, people=True):
    img = np.full((h, w, 3), i % 256, np.uint8)
    p = People(np.random.default_rng(i).random((2, 17, 3), dtype=np.float32), np.array([0.9, 0.5], np.float32),
               np.array([3, -1], np.int64)) if people else None
    return Frame(source_id=source, frame_id=i, t_capture_ns=now_ns(), epoch=1, pts=i / 10, image=img, people=p,
                 timings={"capture": [1, 2]}, info={"fps": 10.0})


def test_encode_decode_round_trip_without_pickle():
    f = frame(7)
    parts = encode(f)
    assert parts[0][:1] == b"{"  # a JSON header, then raw buffers
    g = decode([bytes(p) for p in parts])
    assert (g.source_id, g.frame_id, g.epoch, g.pts, g.timings, g.info) == (0, 7, 1, 0.7, {"capture": [1, 2]}, {"fps": 10.0})
    assert np.array_equal(g.image, f.image) and g.image.dtype == np.uint8
    assert np.array_equal(g.people.keypoints, f.people.keypoints) and list(g.people.track_ids) == [3, -1]
    eos = decode([bytes(p) for p in encode(Frame(source_id=1, frame_id=3, t_capture_ns=5, eos=True))])
    assert eos.eos and eos.image is None and eos.people is None


def test_decode_rejects_malformed_messages():
    with pytest.raises(ValueError, match="malformed"):
        decode([b"\x80not json"])
    parts = encode(frame(1))
    with pytest.raises(ValueError, match="buffers"):
        decode([bytes(parts[0])])


def test_encode_does_not_copy_the_image():
    f = frame(1)
    view = encode(f)[1]
    f.image[0, 0, 0] = 201
    assert view[0] == 201


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_lossless_delivers_every_frame_in_order_behind_a_slow_consumer(ctx):
    addr = ipc_address(private_folder(), "t")
    rx = Receiver(ctx, addr, "lossless")
    tx = Sender(ctx, addr, "lossless")
    n = 60

    def produce():
        for i in range(n):
            tx.send(frame(i))

    t = threading.Thread(target=produce)
    t.start()
    got = []
    while len(got) < n:
        f = rx.recv(timeout_ms=5000)
        assert f is not None
        got.append(f.frame_id)
        time.sleep(0.002)
    t.join()
    assert got == list(range(n)) and rx.dropped == 0 and tx.dropped == 0
    tx.close()
    rx.close()


def test_live_keeps_the_newest_frame_per_source_and_counts_drops(ctx):
    addr = ipc_address(private_folder(), "l")
    rx = Receiver(ctx, addr, "live")
    tx = Sender(ctx, addr, "live")
    sent_ok = 0
    for i in range(50):  # nobody reads meanwhile: the queues fill, the rest is dropped at send
        sent_ok += tx.send(frame(i, source=i % 2))
    time.sleep(0.2)
    got = []
    while True:
        f = rx.recv(timeout_ms=200)
        if f is None:
            break
        got.append((f.source_id, f.frame_id))
    # of the frames queued, stale ones are dropped at the receiver (only the newest per source
    # is handed out from each drain; a frame still in flight may arrive after a drain); every
    # frame is either delivered or counted as dropped, at the sender (queue full) or receiver
    assert {s for s, _ in got} == {0, 1} and len(got) <= 6
    for src in (0, 1):
        ids = [i for s, i in got if s == src]
        assert ids == sorted(ids)
    assert len(got) + rx.dropped + tx.dropped == 50
    assert sent_ok == 50 - tx.dropped  # receiver-side drops depend on how ZeroMQ refills the pipe
    tx.close()
    rx.close()


def test_live_never_drops_end_of_stream(ctx):
    addr = ipc_address(private_folder(), "e")
    rx = Receiver(ctx, addr, "live")
    tx = Sender(ctx, addr, "live")
    tx.send(frame(0))
    tx.send(Frame(source_id=0, frame_id=1, t_capture_ns=now_ns(), eos=True), timeout_ms=1000)
    time.sleep(0.1)
    seen = []
    while (f := rx.recv(timeout_ms=200)) is not None:
        seen.append(f.eos)
    assert seen[-1] is True
    tx.close()
    rx.close()


def test_frames_without_people_round_trip():
    f = frame(3)
    f.people = People.empty()
    g = decode([bytes(p) for p in encode(f)])
    assert g.people.keypoints.shape == (0, 17, 3) and len(g.people) == 0


# -- the shared-memory ring, between real processes ------------------------------------------------

import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402

from posestream.stream.transport import SHM_ROOT, remove_private_folder, ring_files  # noqa: E402

SIZES = [(48, 64), (480, 640), (333, 1001), (1080, 1920)]


def pattern(i, h, w):
    """Frame i's content: seeded noise, so any stale or torn slot shows."""
    return np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _send_frames(addr, policy, specs, content, delay_s=0.0):
    """Child process: send a Frame per (h, w) in ``specs`` (frame_id = index), then an end-of-stream
    marker whose info carries the sender's counters."""
    ctx = zmq.Context()
    tx = Sender(ctx, addr, policy)
    for i, (h, w) in enumerate(specs):
        img = pattern(i, h, w) if content == "noise" else np.full((h, w, 3), i % 256, np.uint8)
        tx.send(Frame(source_id=0, frame_id=i, t_capture_ns=now_ns(), image=img), timeout_ms=20000)
        if delay_s:
            time.sleep(delay_s)
    tx.send(Frame(source_id=0, frame_id=len(specs), t_capture_ns=now_ns(), eos=True,
                  info={"sent": tx.sent, "sent_shm": tx.sent_shm, "dropped": tx.dropped}), timeout_ms=20000)
    tx.close()
    ctx.term()


def _receive_forever(addr, n_before_stall):
    """Child process: receive (and keep) a few frames, then stop reading (a stalled stage)."""
    ctx = zmq.Context()
    rx = Receiver(ctx, addr, "lossless")
    kept = [rx.recv(timeout_ms=20000) for _ in range(n_before_stall)]
    assert all(f is not None for f in kept)
    time.sleep(600)


def _spawn(target, *args):
    p = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    p.start()
    return p


def _recv_all(rx, on_frame=None, timeout_ms=20000):
    got = []
    while True:
        f = rx.recv(timeout_ms=timeout_ms)
        assert f is not None, "timed out"
        if f.eos:
            return got, f.info
        if on_frame:
            on_frame(f)
        got.append(f)


def _shm_left(folder):
    return ring_files(folder) + [x for x in os.listdir(folder) if not x.endswith(".sock")]


@pytest.fixture
def folder():
    d = private_folder()
    yield d
    remove_private_folder(d)


def test_ring_round_trip_is_bit_exact_between_processes(ctx, folder):
    addr = ipc_address(folder, "rt")
    rx = Receiver(ctx, addr, "lossless")
    specs = [hw for hw in SIZES for _ in range(3)]
    p = _spawn(_send_frames, addr, "lossless", specs, "noise")
    got, info = _recv_all(rx)
    p.join(10)
    assert p.exitcode == 0
    assert [f.frame_id for f in got] == list(range(len(specs)))
    for f, (h, w) in zip(got, specs):
        assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
        assert np.array_equal(f.image, pattern(f.frame_id, h, w)), f.frame_id  # kept views stay intact
    # every frame but the small ones (inline) went through the ring; views are read-only
    assert info["sent_shm"] == 3 * (len(SIZES) - 1) and info["sent"] == len(specs)
    assert rx.copied == 0 and not any(f.image.flags.writeable for f in got if f.image.nbytes >= 64 * 1024)
    del got
    rx.close()
    assert _shm_left(folder) == []


def test_ring_lossless_slow_receiver_gets_every_frame_in_order_uncorrupted(ctx, folder):
    addr = ipc_address(folder, "ll")
    rx = Receiver(ctx, addr, "lossless")
    n = 40
    p = _spawn(_send_frames, addr, "lossless", [(480, 640)] * n, "id")
    held = []

    def slow(f):
        assert (f.image == f.frame_id % 256).all(), f.frame_id  # never overwritten under the reader
        held.append(f)  # keep some views: their slots must not be reused meanwhile
        if len(held) > 4:
            held.pop(0)
        for g in held:
            assert g.image[0, 0, 0] == g.image[-1, -1, -1] == g.frame_id % 256
        time.sleep(0.02)

    got, info = _recv_all(rx, slow)
    p.join(10)
    assert p.exitcode == 0
    assert [f.frame_id for f in got] == list(range(n))
    assert all((f.image == f.frame_id % 256).all() for f in got)  # (the ones copied out too)
    assert info["sent_shm"] == n and info["dropped"] == 0 and rx.dropped == 0
    # the test keeps every frame: past 3 views of the 6-slot ring, frames were copied out, not stalled
    assert rx.copied > 0
    held.clear()
    del got
    rx.close()


def test_ring_live_slow_receiver_counts_drops_and_never_shows_a_corrupted_frame(ctx, folder):
    addr = ipc_address(folder, "lv")
    rx = Receiver(ctx, addr, "live")
    n = 80
    p = _spawn(_send_frames, addr, "live", [(480, 640)] * n, "id", 0.002)

    def slow(f):
        assert (f.image == f.frame_id % 256).all(), f.frame_id
        time.sleep(0.03)

    got, info = _recv_all(rx, slow)
    p.join(10)
    assert p.exitcode == 0
    ids = [f.frame_id for f in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert info["dropped"] + rx.dropped > 0
    assert len(got) + rx.dropped + info["dropped"] == n  # every frame delivered or counted
    assert info["sent_shm"] == n - info["dropped"]
    del got
    rx.close()


def test_no_segment_left_after_a_receiver_is_sigkilled(ctx, folder):
    addr = ipc_address(folder, "kr")
    p = _spawn(_receive_forever, addr, 3)
    tx = Sender(ctx, addr, "lossless")
    img = np.full((480, 640, 3), 7, np.uint8)
    for i in range(3):
        tx.send(Frame(source_id=0, frame_id=i, t_capture_ns=now_ns(), image=img), timeout_ms=20000)
    deadline = time.time() + 20
    while not tx.ring.mapped() and time.time() < deadline:  # the receiver started and took them
        time.sleep(0.02)
    sent = 3
    with pytest.raises(TimeoutError):
        while sent < 50:  # the stalled receiver keeps its 3 frames: the ring and the queues fill up
            tx.send(Frame(source_id=0, frame_id=sent, t_capture_ns=now_ns(), image=img), timeout_ms=300)
            sent += 1
    assert tx.ring.mapped() and sent < 50 and tx.sent_shm == sent
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    t = time.monotonic()
    tx.close()
    assert time.monotonic() - t < 2  # no waiting for a receiver that is gone
    assert _shm_left(folder) == []


def test_a_sigkilled_sender_leaves_nothing_after_the_supervisor_cleans_up(folder):
    # the sender writes its ring, then is killed before any receiver mapped it: only then can a
    # named segment survive a process, and the supervisor's clean-up removes it
    addr = ipc_address(folder, "ks")
    p = _spawn(_send_frames, addr, "lossless", [(480, 640)] * 3, "id")
    deadline = time.time() + 20
    while not ring_files(folder) and time.time() < deadline:
        time.sleep(0.05)
    assert ring_files(folder) and all(f.startswith((SHM_ROOT, folder)) for f in ring_files(folder))
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    remove_private_folder(folder)
    assert ring_files(folder) == [] and not os.path.exists(folder)


def test_ring_falls_back_to_inline_buffers(ctx, folder):
    img = pattern(1, 480, 640)
    with zmq.Context() as c:  # tcp (another machine): inline
        rx = Receiver(c, "tcp://127.0.0.1:*", "lossless")
        port = rx.sock.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1]
        tx = Sender(c, f"tcp://127.0.0.1:{port}", "lossless")
        tx.send(Frame(source_id=0, frame_id=0, t_capture_ns=now_ns(), image=img))
        assert np.array_equal(rx.recv(timeout_ms=5000).image, img) and tx.sent_shm == 0 and tx.sent == 1
        tx.close()
        rx.close()
    addr = ipc_address(folder, "fb")
    rx = Receiver(ctx, addr, "lossless")
    for kw, via_shm in (({"shm": False}, 0), ({}, 1)):
        tx = Sender(ctx, addr, "lossless", **kw)
        tx.send(Frame(source_id=0, frame_id=0, t_capture_ns=now_ns(), image=img))
        assert np.array_equal(rx.recv(timeout_ms=5000).image, img) and tx.sent_shm == via_shm
        tx.close()
    rx.close()
    assert _shm_left(folder) == []


def test_ring_grows_for_bigger_frames_and_refuses_to_decode_without_a_receiver(ctx, folder):
    addr = ipc_address(folder, "gr")
    rx = Receiver(ctx, addr, "lossless")
    tx = Sender(ctx, addr, "lossless")
    for i, (h, w) in enumerate([(300, 400), (480, 640), (300, 400), (1080, 1920)]):
        tx.send(Frame(source_id=0, frame_id=i, t_capture_ns=now_ns(), image=pattern(i, h, w)))
        f = rx.recv(timeout_ms=5000)
        assert np.array_equal(f.image, pattern(i, h, w))
    assert tx.sent_shm == 4 and tx._rings_made == 3
    tx.close()
    rx.close()
    del f
    assert _shm_left(folder) == []
    parts = encode(frame(1), image_ref={"ring": "psring-x", "dir": "shm", "slot": 0, "gen": 1})
    with pytest.raises(ValueError, match="out of band"):
        decode([bytes(p) for p in parts])
