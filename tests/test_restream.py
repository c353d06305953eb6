"""RestreamSink against real loopback receivers: FFmpeg in RTSP / RTMP listen mode writing MP4."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest

from posestream.stream.messages import Frame
from posestream.stream.restream import RestreamError, RestreamSink, UrlError, check_url

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="needs the ffmpeg command as the loopback receiver (scripts/install-test-deps.sh)")

W, H, FPS = 320, 240, 25


def bar_image(i: int) -> np.ndarray:
    """A white bar whose left edge is at 6 * (i % 50): frames 0..49 are told apart."""
    img = np.full((H, W, 3), 40, np.uint8)
    x = 6 * (i % 50)
    img[:, x:x + 20] = 255
    return img


def bar_x(img: np.ndarray) -> float:
    row = img[H // 2, :, 0].astype(float)
    return float(np.mean(np.nonzero(row > 150)[0])) - 9.5


def make_frame(i: int, source_id: int = 0, epoch: int = 0) -> Frame:
    return Frame(source_id=source_id, frame_id=i, t_capture_ns=time.monotonic_ns(), epoch=epoch, pts=i / FPS,
                 image=bar_image(i), info={"fps": FPS, "kind": "file"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(host: str, port: int) -> bool:
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == want and line.split()[3] == "0A" for line in f.readlines()[1:])


class Receiver:
    """``ffmpeg`` listening for one RTSP (ANNOUNCE/RECORD) or RTMP (publish) push, copying it to MP4."""

    def __init__(self, kind: str, out: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.port = port or free_port()
        self.out = out
        if kind == "rtsp":
            self.url = f"rtsp://{host}:{self.port}/live"
            args = ["-rtsp_flags", "listen", "-i", self.url]
        else:
            self.url = f"rtmp://{host}:{self.port}/live/key"
            args = ["-f", "flv", "-listen", "1", "-i", self.url]
        self.proc = subprocess.Popen([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args,
                                      "-c", "copy", str(out)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not listening(host, self.port):
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            assert time.monotonic() < deadline, "ffmpeg does not listen"
            time.sleep(0.05)

    def wait(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(*args, **kw) -> Receiver:
        r = Receiver(*args, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.kill()


def push(sink: RestreamSink, frames: list[Frame], consumed: bool = True) -> float:
    """Write the frames at FPS in real time; ``consumed``: wait for the sink's thread to take each one
    (sent or dropped) before the next, so that none is replaced in the slot. Returns the slowest write."""
    t0 = time.monotonic()
    worst = 0.0
    for i, f in enumerate(frames):
        before = sink.frames_sent + sink.dropped
        t = time.monotonic()
        sink.write(f)
        worst = max(worst, time.monotonic() - t)
        if consumed and (sink.per_source or f.source_id == 0):
            deadline = time.monotonic() + 5
            while sink.frames_sent + sink.dropped == before:
                assert time.monotonic() < deadline, "the push thread took nothing"
                time.sleep(0.002)
        time.sleep(max(0.0, t0 + (i + 1) / FPS - time.monotonic()))
    return worst


def decode(path: Path) -> tuple[str, int, int, list]:
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        frames = [(f.key_frame, float(f.time), bar_x(f.to_ndarray(format="rgb24"))) for f in c.decode(st)]
        return st.codec_context.name, st.width, st.height, frames


@needs_ffmpeg
@pytest.mark.parametrize("kind", ["rtsp", "rtmp"])
def test_push_arrives_whole_in_order_and_at_real_time(kind, receivers, tmp_path):
    rx = receivers(kind, tmp_path / f"{kind}.mp4")
    sink = RestreamSink(rx.url)
    sink.open({})
    n = 50
    # frames of source 1 are not pushed (no {source} in the URL)
    push(sink, [make_frame(i, source_id=k) for i in range(n) for k in (0, 1)])
    t = time.monotonic()
    sink.close()
    assert time.monotonic() - t < 2.5
    assert rx.wait() == 0, rx.proc.stderr.read().decode()
    assert sink.summary() == {"restream": {"url": rx.url, "frames_sent": n, "dropped": 0, "reconnects": 0}}
    codec, w, h, decoded = decode(rx.out)
    assert (codec, w, h) == ("h264", W, H)
    assert len(decoded) == n  # every frame sent: the connection made at open() carries the stream
    assert decoded[0][0]  # starts with a keyframe
    for i, (_, _, x) in enumerate(decoded):
        assert abs(x - 6 * i) <= 2, (i, x)  # in order, none repeated
    assert abs(decoded[-1][1] - decoded[0][1] - (n - 1) / FPS) < 0.1  # pts-based: plays in real time
    keys = [i for i, (k, _, _) in enumerate(decoded) if k]
    assert keys[0] == 0 and max(np.diff(keys + [n])) <= FPS  # a keyframe at least every second (gop = fps)


@needs_ffmpeg
def test_reconnects_after_the_server_comes_back_and_write_never_blocks(receivers, tmp_path):
    rx1 = receivers("rtsp", tmp_path / "one.mp4")
    sink = RestreamSink(rx1.url)
    sink.open({})
    try:
        worst = push(sink, [make_frame(i) for i in range(20)])
        sent_before = sink.frames_sent
        rx1.proc.send_signal(signal.SIGKILL)  # the server dies mid-stream
        rx1.proc.wait(5)
        worst = max(worst, push(sink, [make_frame(i) for i in range(20, 45)], consumed=False))  # 1 s outage
        rx2 = receivers("rtsp", tmp_path / "two.mp4", port=rx1.port)  # and comes back
        i = 45
        deadline = time.monotonic() + 25
        while sink.reconnects == 0 or sink.frames_sent < sent_before + 30:
            assert time.monotonic() < deadline, sink.summary()
            worst = max(worst, push(sink, [make_frame(i)], consumed=False))
            i += 1
    finally:
        sink.close()
    assert rx2.wait() == 0, rx2.proc.stderr.read().decode()
    s = sink.summary()["restream"]
    assert s["reconnects"] == 1 and s["dropped"] > 0, s
    assert s["frames_sent"] + s["dropped"] == i
    assert worst < 1.0, worst  # loose (a loaded machine); a blocking write would take the outage's seconds
    _, w, h, decoded = decode(rx2.out)
    assert (w, h) == (W, H)
    assert 20 <= len(decoded) <= s["frames_sent"] - sent_before
    assert decoded[0][0]  # the new connection starts with a keyframe


@needs_ffmpeg
def test_one_push_per_source_with_a_placeholder(receivers, tmp_path):
    # 127.0.0.10 and 127.0.0.11 are loopback addresses too: source 0 and 1 reach different receivers
    port = free_port()
    rxs = [receivers("rtsp", tmp_path / f"s{k}.mp4", host=f"127.0.0.1{k}", port=port) for k in (0, 1)]
    url = f"rtsp://127.0.0.1{{source}}:{port}/live"
    sink = RestreamSink(url)
    sink.open({"sources": {"0": {"fps": FPS}, "1": {"fps": FPS}}})
    push(sink, [make_frame(i, source_id=k) for i in range(30) for k in (0, 1)])
    sink.close()
    s = sink.summary()["restream"]
    assert s["url"] == url and s["frames_sent"] == 60 and s["reconnects"] == 0
    assert set(s["sources"]) == {"0", "1"}
    assert s["sources"]["1"]["url"] == f"rtsp://127.0.0.11:{port}/live"
    for rx in rxs:
        assert rx.wait() == 0
        assert len(decode(rx.out)[3]) == 30


def test_unreachable_server_fails_at_open_in_one_line():
    port = free_port()  # nobody listens there
    for url in (f"rtsp://127.0.0.1:{port}/live", f"rtmp://127.0.0.1:{port}/live/key"):
        sink = RestreamSink(url)
        t = time.monotonic()
        with pytest.raises(RestreamError) as e:
            sink.open({})
        assert time.monotonic() - t < 3
        assert str(e.value) == f"cannot push to {url}: connection refused"
        assert isinstance(e.value, OSError) and e.value.user_error
        sink.close()  # safe after a failed open
    with pytest.raises(RestreamError, match=r"^cannot push to rtsp://no-such-host\.invalid/live: "
                                            r"cannot resolve host 'no-such-host\.invalid'$"):
        RestreamSink("rtsp://no-such-host.invalid/live").open({})


def test_silent_server_fails_at_open_after_the_timeout():
    with socket.socket() as srv:  # accepts TCP (the kernel's backlog), never answers RTSP
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        url = f"rtsp://127.0.0.1:{srv.getsockname()[1]}/live"
        t = time.monotonic()
        with pytest.raises(RestreamError) as e:
            RestreamSink(url, open_timeout_s=1.0).open({})
        assert 0.8 < time.monotonic() - t < 3
        assert str(e.value) == f"cannot push to {url}: no answer within 1 s"


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1/live", "unsupported scheme 'http://'"),
    ("srt://127.0.0.1:9000", "unsupported scheme"),
    ("rtsp:///live", "no host"),
    ("rtsp://127.0.0.1:99999/live", "port"),
    ("rtmp://127.0.0.1/live", "application and a stream key"),
    ("rtsp://127.0.0.1/{src}", "only placeholder is {source}"),
    ("", "must be rtsp://"),
])
def test_bad_url_is_a_one_line_value_error(url, words):
    with pytest.raises(UrlError) as e:
        RestreamSink(url)
    assert isinstance(e.value, ValueError) and e.value.user_error
    assert words in str(e.value) and "\n" not in str(e.value)


def test_arguments_and_url_checks():
    assert check_url("rtsp://h:8554/cam{source}") == "rtsp"
    assert check_url("RTMP://h/app/key") == "rtmp"
    sink = RestreamSink("rtsp://h:8554/cam{source}")
    assert sink.per_source and sink.url_for(3) == "rtsp://h:8554/cam3"
    assert sink.summary() == {"restream": {"url": "rtsp://h:8554/cam{source}", "frames_sent": 0, "dropped": 0,
                                           "reconnects": 0, "sources": {}}}
    for kw in ({"fps": 0}, {"crf": 60}, {"preset": "warp"}, {"gop": 0}, {"bitrate": 10}, {"size": (1, 1)},
               {"clock": "wall"}, {"open_timeout_s": 0}):
        with pytest.raises(ValueError):
            RestreamSink("rtsp://h/live", **kw)
    sink.close()  # never opened: nothing to do


def test_timestamps_continue_across_epochs_and_always_increase():
    from fractions import Fraction
    from types import SimpleNamespace

    from posestream.stream.restream import _Item, _Push

    sink = RestreamSink("rtsp://h/live", fps=25)
    p = _Push(sink, sink.url, 0, 25.0)
    p._stream = SimpleNamespace(time_base=Fraction(1, 90000))
    img = np.zeros((2, 2, 3), np.uint8)

    def ts(t: float, epoch: int = 0) -> int:
        return p._timestamp(_Item(img, t, epoch, 25.0))

    assert [ts(10.0), ts(10.04), ts(10.08)] == [0, 3600, 7200]  # a connection starts at 0
    assert ts(0.0, epoch=1) == 7200 + 3600  # a restarted source continues one frame later
    assert ts(0.04, epoch=1) == 7200 + 2 * 3600
    assert ts(0.04, epoch=1) == 7200 + 2 * 3600 + 1  # a repeated pts moves one tick on
    p._new_timeline()  # what a new connection does
    assert ts(0.08, epoch=1) == 0
