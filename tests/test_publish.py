"""PublishSink (ZeroMQ PUB of the keypoint records) and `posestream listen`, over real sockets."""
from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from posestream.stream.messages import Frame, People
from posestream.stream.publish import AddressError, PublishError, PublishSink, parse_address
from posestream.stream.sinks import frame_record

RECORD_KEYS = {"source_id", "frame_id", "pts", "t_capture_ns", "epoch", "people"}

# The README's subscriber example, verbatim (the test swaps in the address and a loop of 3).
SUBSCRIBER_EXAMPLE = '''\
import json
import zmq

sub = zmq.Context().socket(zmq.SUB)
sub.connect("tcp://127.0.0.1:5555")           # posestream run ... --publish tcp://127.0.0.1:5555
sub.setsockopt(zmq.SUBSCRIBE, b"")            # every source (b"0": source 0, but also 0x: a prefix)
while True:
    topic, body = sub.recv_multipart()        # topic: the source id, b"0", b"1", ...
    rec = json.loads(body)                    # the --jsonl record of one frame
    for person in rec["people"]:
        x, y, score = person["keypoints"][0]  # keypoint 0 (COCO: the nose), in pixels
        print(rec["source_id"], rec["frame_id"], person["track_id"], x, y, score)
'''


def make_frame(frame_id: int, source_id: int = 0, n_people: int = 1) -> Frame:
    kps = np.zeros((n_people, 17, 3), np.float32)
    kps[:, :, 0] = np.arange(17) + frame_id
    kps[:, :, 1] = 2 * np.arange(17)
    kps[:, :, 2] = 0.5
    people = People(kps, np.full(n_people, 0.9, np.float32), np.arange(n_people, dtype=np.int64))
    return Frame(source_id=source_id, frame_id=frame_id, t_capture_ns=10**9 + frame_id, pts=frame_id / 25,
                 people=people)


@pytest.fixture
def sink():
    s = PublishSink("tcp://127.0.0.1:0")
    s.open({})
    yield s
    s.close()


class Lines:
    """A subprocess's stdout lines, collected by a thread (reads never block the test)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.q: queue.Queue = queue.Queue()
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.q.put(line)

    def pump(self, timeout: float = 0.0) -> int:
        """Move what has arrived into ``lines``; returns how many lines there are."""
        try:
            self.lines.append(self.q.get(timeout=timeout) if timeout else self.q.get_nowait())
            while True:
                self.lines.append(self.q.get_nowait())
        except queue.Empty:
            pass
        return len(self.lines)


def _default_sigint() -> None:
    # a shell without job control starts background jobs with SIGINT ignored, and an ignored signal
    # stays ignored across exec: the listener is given Ctrl-C's default back, as a terminal gives it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint, **kw)


def listen(*args: str) -> subprocess.Popen:
    return start([sys.executable, "-m", "posestream", "listen", *args])


def join(sink: PublishSink, lines: Lines, make, deadline_s: float = 20.0) -> int:
    """Publish warm-up frames until the subscriber has received one (ZeroMQ's slow joiner)."""
    deadline = time.monotonic() + deadline_s
    i = 0
    while lines.pump() == 0:
        assert time.monotonic() < deadline, "the subscriber received nothing"
        assert lines.proc.poll() is None, lines.proc.stderr.read()
        sink.write(make(i))
        i += 1
        time.sleep(0.02)
    return i


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def test_listen_prints_the_records_in_order_and_ctrl_c_exits_0(sink):
    proc = listen(sink.address, "--timeout", "30")
    try:
        lines = Lines(proc)
        warm = join(sink, lines, lambda i: make_frame(i, source_id=3))
        frames = [make_frame(1000 + i, source_id=3, n_people=i % 3) for i in range(20)]
        for f in frames:
            sink.write(f)
        deadline = time.monotonic() + 10
        while not any('"frame_id":1019' in x for x in lines.lines):
            assert time.monotonic() < deadline, lines.lines[-3:]
            lines.pump(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        stop(proc)
    records = [json.loads(x) for x in lines.lines]
    assert all(set(r) == RECORD_KEYS for r in records)
    ids = [r["frame_id"] for r in records]
    known = ids[ids.index(1000):]
    assert known == list(range(1000, 1020))  # every one, in order, nothing after
    assert all(r["frame_id"] < warm for r in records[:ids.index(1000)])
    for r, f in zip(records[ids.index(1000):], frames):
        assert r == frame_record(f)  # the same record as --jsonl writes
        assert r["source_id"] == 3
    assert sink.sent == warm + 20 and sink.dropped == 0
    assert sink.summary() == {"publish": {"address": sink.address, "sent": warm + 20, "dropped": 0}}


def test_listen_topic_is_an_exact_source_and_count_exits_0(sink):
    proc = listen(sink.address, "--topic", "1", "--count", "5", "--timeout", "30")
    try:
        lines = Lines(proc)
        # sources 1 and 11 ("1" is a ZeroMQ prefix of "11") and 2, interleaved
        deadline = time.monotonic() + 20
        i = 0
        while proc.poll() is None:
            assert time.monotonic() < deadline
            for src in (11, 2, 1):
                sink.write(make_frame(i, source_id=src))
            i += 1
            time.sleep(0.02)
        assert proc.wait(5) == 0, proc.stderr.read()
        time.sleep(0.2)
        lines.pump()
    finally:
        stop(proc)
    records = [json.loads(x) for x in lines.lines]
    assert len(records) == 5
    assert {r["source_id"] for r in records} == {1}
    ids = [r["frame_id"] for r in records]
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_slow_subscriber_never_blocks_write():
    frames = [make_frame(i) for i in range(10_000)]
    for nodrop in (False, True):
        s = PublishSink("tcp://127.0.0.1:0", hwm=10, nodrop=nodrop)
        s.open({})
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 1)
        sub.setsockopt(zmq.RCVBUF, 4096)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(s.address)  # and never reads
        try:
            time.sleep(0.3)  # the subscription reaches the publisher
            t0 = time.monotonic()
            worst = 0.0
            for f in frames:
                t = time.monotonic()
                s.write(f)
                worst = max(worst, time.monotonic() - t)
            total = time.monotonic() - t0
        finally:
            sub.close(0)
            ctx.term()
            s.close()
        assert s.sent + s.dropped == 10_000
        # a blocked send would never return (the subscriber never reads); the bounds are loose for
        # a loaded machine
        assert worst < 5 and total < 60, (worst, total)
        if nodrop:
            assert s.dropped > 0  # the full queue refused them (and counted them)
        else:
            assert s.dropped == 0 and s.sent == 10_000  # libzmq drops silently for that subscriber


def test_port_in_use_fails_at_open_in_one_line(sink):
    other = PublishSink(sink.address)
    with pytest.raises(PublishError) as e:
        other.open({})
    msg = str(e.value)
    assert msg == f"cannot publish on {sink.address}: address already in use"
    assert isinstance(e.value, OSError) and e.value.user_error
    other.close()  # safe though never opened


@pytest.mark.parametrize("address, words", [
    ("udp://127.0.0.1:5555", "unsupported scheme"),
    ("tcp://127.0.0.1", "no port"),
    ("tcp://127.0.0.1:99999", "port must be"),
    ("tcp://127.0.0.1:http", "port must be"),
    ("tcp://bad host:5555", "malformed host"),
    ("tcp://[::zz]:5555", "not an IPv6"),
    ("127.0.0.1:5555", "expected tcp://"),
    ("ipc://", "socket path"),
    ("", "address must be"),
])
def test_bad_address_is_a_one_line_value_error(address, words):
    with pytest.raises(AddressError) as e:
        PublishSink(address)
    assert isinstance(e.value, ValueError) and e.value.user_error
    assert words in str(e.value) and "\n" not in str(e.value)


def test_address_parsing():
    a = parse_address("tcp://127.0.0.1:5555")
    assert (a.scheme, a.host, a.port, a.loopback) == ("tcp", "127.0.0.1", 5555, True)
    assert parse_address("tcp://*:5555").loopback is False
    assert parse_address("tcp://0.0.0.0:0").endpoint() == "tcp://0.0.0.0:*"
    assert parse_address("tcp://[::1]:5555").endpoint() == "tcp://[::1]:5555"
    assert parse_address("ipc:///tmp/x.sock").path == "/tmp/x.sock"
    with pytest.raises(AddressError):
        parse_address("tcp://*:5555", bind=False)
    with pytest.raises(AddressError):
        parse_address("tcp://127.0.0.1:0", bind=False)


def test_ipc_address(tmp_path):
    s = PublishSink(f"ipc://{tmp_path}/pub.sock")
    s.open({})
    try:
        proc = listen(s.address, "--count", "3", "--timeout", "30")
        try:
            lines = Lines(proc)
            deadline = time.monotonic() + 20
            i = 0
            while proc.poll() is None:
                assert time.monotonic() < deadline
                s.write(make_frame(i))
                i += 1
                time.sleep(0.02)
            assert proc.wait(5) == 0
            time.sleep(0.2)
            assert lines.pump() == 3
        finally:
            stop(proc)
    finally:
        s.close()
    assert s.summary()["publish"]["address"] == f"ipc://{tmp_path}/pub.sock"


def test_listen_errors_are_one_line():
    r = subprocess.run([sys.executable, "-m", "posestream", "listen", "udp://127.0.0.1:5555"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "unsupported scheme" in r.stderr
    with PublishSinkOpen() as s:  # a publisher that publishes nothing
        r = subprocess.run([sys.executable, "-m", "posestream", "listen", s.address, "--timeout", "0.5"],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == f"posestream listen: error: no message from {s.address} within 0.5 s"


class PublishSinkOpen:
    def __enter__(self) -> PublishSink:
        self.s = PublishSink("tcp://127.0.0.1:0")
        self.s.open({})
        return self.s

    def __exit__(self, *exc) -> None:
        self.s.close()


def test_readme_subscriber_example_reads_3_messages(sink):
    code = SUBSCRIBER_EXAMPLE.replace("tcp://127.0.0.1:5555", sink.address)
    assert code.count("while True:") == 1
    code = code.replace("while True:", "for _ in range(3):")
    proc = start([sys.executable, "-c", code])
    try:
        lines = Lines(proc)
        deadline = time.monotonic() + 20
        i = 0
        while proc.poll() is None:
            assert time.monotonic() < deadline
            sink.write(make_frame(i, source_id=0, n_people=1))
            i += 1
            time.sleep(0.02)
        assert proc.wait(5) == 0, proc.stderr.read()
        time.sleep(0.2)
        lines.pump()
    finally:
        stop(proc)
    assert len(lines.lines) == 3
    for line in lines.lines:
        src, fid, tid, x, y, score = line.split()
        assert (src, tid, float(y), float(score)) == ("0", "0", 0.0, 0.5)
        assert float(x) == float(fid)  # keypoint 0's x is the frame id in make_frame


def test_curve_publisher_reaches_authorized_subscribers_only(tmp_path):
    """sink.publish_keys: the PUB socket is a CurveZMQ server; a subscriber with an authorized
    key pair gets the records, one with the right server key but an unknown pair gets nothing."""
    from posestream.stream.secure import client_options, make_pair

    keys, other = tmp_path / "k", tmp_path / "o"
    make_pair(keys, "server")
    make_pair(keys, "viewer")
    (keys / "authorized").mkdir()
    (keys / "authorized" / "viewer.key").write_text((keys / "viewer.key").read_text())
    make_pair(other, "intruder")
    sink = PublishSink("tcp://127.0.0.1:0", keys=str(keys))
    sink.open()
    ctx = zmq.Context()
    subs = {}
    try:
        for name, folder in (("viewer", keys), ("intruder", other)):
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            for k, v in client_options(folder / f"{name}.key_secret", keys / "server.key").items():
                s.setsockopt(k, v)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(sink.address)
            subs[name] = s
        got = []
        deadline = time.time() + 10
        i = 0
        while time.time() < deadline and len(got) < 3:
            sink.write(Frame(source_id=0, frame_id=i, t_capture_ns=i, people=People.empty()))
            i += 1
            if subs["viewer"].poll(50):
                got.append(json.loads(subs["viewer"].recv_multipart()[1])["frame_id"])
        assert len(got) == 3 and got == sorted(got)
        assert not subs["intruder"].poll(300)
        assert sink._auth.refused >= 1 and sink._auth.accepted >= 1
    finally:
        for s in subs.values():
            s.close()
        sink.close()
        ctx.term()
