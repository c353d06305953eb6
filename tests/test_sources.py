"""Video sources: files (PyAV), RTSP against a real GStreamer server on loopback, image folders,
webcam failure and the one-slot latest-frame buffer."""
from __future__ import annotations

import logging
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posestream.stream.sources import (FileConfig, ImageFolderConfig, ImageFolderSource, LatestFrame, RtspConfig,
                                       RtspSource, SourceError, SourceKind, VideoFileSource, WebcamConfig,
                                       WebcamSource, make_source, open_source, source_kind)

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).resolve().parent / "rtsp_server.py"


@pytest.fixture(scope="module")
def vtest(shared_data) -> Path:
    path = shared_data / "videos" / "vtest.avi"
    if not path.is_file():
        pytest.fail(f"sample video missing: {path}")
    return path


def write_video(path: Path, n: int, codec: str = "mpeg4", size=(64, 48), fps: int = 10, images=None) -> None:
    """n frames of noise (or the given RGB images) into path with PyAV."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for i in range(n):
            img = images[i] if images is not None else rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def open_fds_to(path: Path) -> int:
    target = str(path.resolve())
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:
            pass
    return n


# ---------------------------------------------------------------------------------------------
# video files


def test_file_source_reads_every_frame_of_vtest(vtest):
    frame_ids, pts = [], []
    with open_source(str(vtest), source_id=3) as src:
        assert (src.kind, src.live, src.fps, src.expected_frames) == ("file", False, 10.0, 795)
        t_prev = 0
        for f in src:
            if f.frame_id == 0:
                first = f.image
            assert f.image.shape == (576, 768, 3) and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
            assert f.source_id == 3 and f.epoch == 0 and f.t_capture_ns >= t_prev
            t_prev = f.t_capture_ns
            frame_ids.append(f.frame_id)
            pts.append(f.pts)
        assert f.info == {"source": str(vtest), "fps": 10.0, "kind": "file"}
    assert frame_ids == list(range(795)) and src.frames == 795 and src.damaged is None and src.closed
    assert np.all(np.diff(pts) > 0)
    assert pts[0] == pytest.approx(0.0) and pts[-1] == pytest.approx(79.4)
    # RGB, not BGR: OpenCV decodes the same file to BGR
    cap = cv2.VideoCapture(str(vtest))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    as_rgb = np.abs(first.astype(int) - bgr[..., ::-1]).mean()
    as_bgr = np.abs(first.astype(int) - bgr).mean()
    assert as_rgb < 2.0 and as_rgb < as_bgr


def test_file_source_early_stop_releases_the_file(vtest):
    with open_source(str(vtest)) as src:
        for f in src:
            if f.frame_id == 4:
                break
        assert open_fds_to(vtest) == 1  # the container holds the file while the source is open
    assert src.closed and src.frames == 5
    assert open_fds_to(vtest) == 0
    assert list(src) == []  # a closed source is exhausted, not an error


def test_file_errors_name_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=r"^vtest\.avix: file not found$"):
        open_source("vtest.avix")
    Path("notes.mp4").write_text("these are notes, not a video\n")
    with pytest.raises(SourceError, match=r"^notes\.mp4: not a video \(.+\)$"):
        open_source("notes.mp4")
    Path("empty").mkdir()
    with pytest.raises(SourceError, match=r"^empty: no images \(") as e:
        open_source("empty")
    assert "\n" not in str(e.value)
    with pytest.raises(SourceError, match=r"^shots/\*\.png: no images"):
        open_source("shots/*.png")
    # a container without a video stream
    with av.open("tone.wav", "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    with pytest.raises(SourceError, match=r"^tone\.wav: not a video \(no video stream; has audio\)$"):
        open_source("tone.wav")


def test_truncated_video_yields_what_decodes_and_warns(tmp_path, caplog):
    path = tmp_path / "clip.mkv"
    write_video(path, 20)
    with open_source(str(path)) as src:
        assert len(list(src)) == 20 and src.damaged is None  # intact: no false alarm
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with caplog.at_level(logging.WARNING, logger="posestream.stream.sources"):
        with open_source(str(path)) as src:
            frames = list(src)
    assert 0 < len(frames) < 20
    assert [f.frame_id for f in frames] == list(range(len(frames)))
    assert src.damaged and "damaged file" in caplog.text and str(path) in caplog.text
    # strict: the same frames, then SourceError
    got = []
    with pytest.raises(SourceError, match=r"clip\.mkv: damaged file, \d+ frame\(s\) decoded"):
        with open_source(str(path), strict=True) as src:
            for f in src:
                got.append(f.frame_id)
    assert got == [f.frame_id for f in frames] and src.closed
    # an MP4 cut before its index (moov atom at the end) cannot be opened at all
    mp4 = tmp_path / "clip.mp4"
    write_video(mp4, 20)
    with open(mp4, "r+b") as f:
        f.truncate(mp4.stat().st_size // 2)
    with pytest.raises(SourceError, match=r"clip\.mp4: not a video"):
        open_source(str(mp4))


def test_file_loop_goes_on_with_increasing_pts_and_a_new_epoch_per_pass(tmp_path):
    n = 12
    path = tmp_path / "clip.mkv"
    write_video(path, n, fps=10)
    frames = []
    with open_source(str(path), loop=True) as src:
        for f in src:
            frames.append(f)
            if len(frames) == 3 * n + 5:
                break
        assert src.loops == 3 and src.damaged is None
    assert src.closed
    assert [f.frame_id for f in frames] == list(range(3 * n + 5))
    pts = np.array([f.pts for f in frames])
    assert pts[0] == pytest.approx(0.0) and np.all(np.diff(pts) > 0)
    assert np.allclose(np.diff(pts), 0.1, atol=2e-3)  # one frame interval, also where a pass starts
    assert [f.epoch for f in frames] == [i // n for i in range(3 * n + 5)]  # a new epoch per pass
    # the same images on every pass
    assert np.array_equal(frames[0].image, frames[n].image) and np.array_equal(frames[5].image, frames[2 * n + 5].image)
    assert FileConfig().loop is False
    with pytest.raises(ValueError, match="loop must be true or false"):
        FileConfig(loop="yes")


def test_file_loop_keeps_realtime_pace_across_passes(tmp_path):
    path = tmp_path / "clip.mkv"
    write_video(path, 5, fps=50)
    t0 = time.monotonic()
    with open_source(str(path), loop=True, realtime=True) as src:
        frames = [f for _, f in zip(range(16), src)]
    elapsed = time.monotonic() - t0
    span = frames[-1].pts - frames[0].pts
    assert span == pytest.approx(15 / 50, abs=0.01)
    assert elapsed >= 0.9 * span  # paced by pts across three restarts, no burst at a pass boundary
    assert elapsed < span + 5.0  # and no stall (generous for a busy machine)


def test_file_loop_of_a_damaged_file_warns_once(tmp_path, caplog):
    path = tmp_path / "clip.mkv"
    write_video(path, 20)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="posestream.stream.sources"):
        with open_source(str(path), loop=True) as src:
            frames = [f for _, f in zip(range(50), src)]
    assert len(frames) == 50 and src.loops >= 2 and src.damaged
    assert caplog.text.count("damaged file") == 1
    assert np.all(np.diff([f.pts for f in frames]) > 0)


# ---------------------------------------------------------------------------------------------
# dispatch and options


def test_spec_dispatch(tmp_path, vtest):
    (tmp_path / "frames").mkdir()
    cases = {"0": WebcamSource, "12": WebcamSource, "/dev/video2": WebcamSource,
             "rtsp://10.0.0.5:554/stream1": RtspSource, "RTSPS://cam/x": RtspSource,
             str(tmp_path / "frames"): ImageFolderSource, str(tmp_path / "frames" / "*.png"): ImageFolderSource,
             str(tmp_path / "f??.jpg"): ImageFolderSource,
             str(vtest): VideoFileSource, "missing.mp4": VideoFileSource, "http://host/v.mp4": VideoFileSource}
    for spec, cls in cases.items():
        src = make_source(spec)  # builds without I/O
        assert type(src) is cls, spec
        assert source_kind(spec) == src.kind
        assert src.live == (cls in (WebcamSource, RtspSource))
    assert make_source("0").device == 0 and make_source("/dev/video2").device == "/dev/video2"


def test_source_kind_decides_kind_and_policy(tmp_path, vtest):
    (tmp_path / "frames").mkdir()
    cases = {"0": "webcam", " 3 ": "webcam", "/dev/video0": "webcam", "/dev/null": "webcam",  # a char device
             "rtsp://cam/x": "rtsp", "RTSP://cam/x": "rtsp", "rtsps://cam:322/x": "rtsp",
             str(tmp_path / "frames"): "images", str(tmp_path / "*.jpg"): "images",
             str(vtest): "file", "missing.mp4": "file", "http://host/v.mp4": "file", "https://host/live.m3u8": "file",
             "/dev/does-not-exist": "file"}
    for spec, name in cases.items():
        kind = source_kind(spec)
        assert type(kind) is SourceKind and kind == name and isinstance(kind, str), spec
        assert kind is SourceKind(name) and str(kind) == name and f"{kind}" == name
        assert kind.live == (name in ("rtsp", "webcam")), spec
        assert {name: 1}.get(kind) == 1  # usable as a key of a dict keyed by kind names
        assert type(make_source(spec)) is kind.source_class
    assert source_kind("/dev/video0").live is True and source_kind(str(vtest)).live is False
    assert [(k.source_class, k.config_class) for k in SourceKind] == [
        (VideoFileSource, FileConfig), (RtspSource, RtspConfig), (WebcamSource, WebcamConfig),
        (ImageFolderSource, ImageFolderConfig)]


def test_unknown_options_are_errors_naming_the_key(vtest):
    with pytest.raises(ValueError, match=r"unknown rtsp source option 'max_atempts'"):
        make_source("rtsp://cam/x", max_atempts=3)
    with pytest.raises(ValueError, match=r"unknown file source option 'fps'"):
        open_source(str(vtest), fps=5)
    with pytest.raises(ValueError, match="max_attempts"):
        RtspConfig(max_attempts=0)
    for bad in (0, -1, None, 2.5, True):
        with pytest.raises(ValueError, match=rf"^start_attempts must be an integer >= 1, got {bad!r}$"):
            RtspConfig(start_attempts=bad)
    with pytest.raises(ValueError, match="start_attempts"):
        make_source("rtsp://cam/x", start_attempts=0)
    assert (RtspConfig().start_attempts, RtspConfig().max_attempts) == (3, None)
    with pytest.raises(ValueError, match="backoff_factor"):
        RtspConfig.from_dict({"backoff_factor": 0.5})
    cfg = RtspConfig.from_dict({"read_timeout_s": 2, "options": {"stimeout": 1}})
    assert cfg.av_options() == {"rtsp_transport": "tcp", "timeout": "2000000", "analyzeduration": "500000",
                                "fflags": "nobuffer", "flags": "low_delay", "stimeout": "1"}
    assert [RtspConfig(backoff_initial_s=0.5, backoff_max_s=3).backoff_s(n) for n in (1, 2, 3, 4, 5)] == \
        [0.5, 1.0, 2.0, 3.0, 3.0]
    assert FileConfig.from_dict(None) == FileConfig()


# ---------------------------------------------------------------------------------------------
# image folders


def test_image_folder_in_natural_order_skipping_unreadable(tmp_path, caplog):
    colours = {1: (255, 0, 0), 2: (0, 255, 0), 10: (0, 0, 255), 11: (10, 20, 30)}  # BGR, as cv2 writes
    for i, bgr in colours.items():
        assert cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((24, 32, 3), bgr, np.uint8))
    (tmp_path / "img3.png").write_bytes(b"not a png")  # unreadable: skipped, a gap in pts
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="posestream.stream.sources"):
        with open_source(str(tmp_path), fps=4) as src:
            assert (src.kind, src.live, src.fps) == ("images", False, 4.0)
            frames = list(src)
    assert [Path(p).name for p in src.paths] == ["img1.png", "img2.png", "img3.png", "img10.png", "img11.png"]
    assert [f.frame_id for f in frames] == [0, 1, 2, 3]
    assert [f.pts for f in frames] == [0 / 4, 1 / 4, 3 / 4, 4 / 4]  # index in the folder / fps
    for f, bgr in zip(frames, colours.values()):
        assert f.image.shape == (24, 32, 3) and f.image.dtype == np.uint8
        assert tuple(f.image[0, 0]) == bgr[::-1]  # RGB
    assert src.skipped == 1 and "img3.png" in caplog.text
    with open_source(str(tmp_path / "img1*.png")) as src:
        assert [f.pts for f in src] == [0.0, 0.1, 0.2]  # img1, img10, img11 at the default 10 fps


def test_frame_size_change_starts_a_new_epoch(tmp_path):
    for i, (w, h) in enumerate([(32, 24), (32, 24), (40, 30), (40, 30), (32, 24)]):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.zeros((h, w, 3), np.uint8))
    with open_source(str(tmp_path)) as src:
        assert [f.epoch for f in src] == [0, 0, 1, 1, 2]


# ---------------------------------------------------------------------------------------------
# webcam and its latest-frame buffer


class FakeCapture:
    """cv2.VideoCapture stand-in: a 1 kHz camera whose pixels hold the frame number (BGR 0, n, 255)."""

    def __init__(self, device, api=None, fail_after: int | None = None):
        self.device, self.n, self.released, self.fail_after = device, 0, False, fail_after

    def isOpened(self):
        return True

    def set(self, prop, value):
        return True

    def get(self, prop):
        return 1000.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        time.sleep(0.001)
        if self.fail_after is not None and self.n >= self.fail_after:
            return False, None
        img = np.zeros((6, 8, 3), np.uint8)
        img[..., 1], img[..., 2] = self.n % 256, 255
        self.n += 1
        return True, img

    def release(self):
        self.released = True


def test_webcam_reader_thread_keeps_the_newest_frame(monkeypatch):
    caps = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda d, api=None: caps.append(FakeCapture(d, api)) or caps[-1])
    with open_source("0", max_read_failures=3) as src:
        assert (src.kind, src.live, src.fps) == ("webcam", True, 1000.0)
        frames = []
        for f in src:
            frames.append(f)
            time.sleep(0.01)  # a consumer 10x slower than the camera
            if len(frames) == 10:
                break
    assert len(caps) == 1 and caps[0].device == 0 and caps[0].released and src.closed
    ids = [f.frame_id for f in frames]
    assert ids == sorted(set(ids)) and ids[-1] >= 20  # gaps: frames overwritten before they were read
    assert src.dropped == ids[-1] + 1 - len(frames)
    for f in frames:
        assert tuple(f.image[0, 0]) == (255, f.frame_id % 256, 0)  # BGR -> RGB, the pixels of that frame
    assert [f.pts for f in frames] == sorted(f.pts for f in frames) and frames[0].pts == 0.0
    # a camera that stops delivering: what was captured, then SourceError
    monkeypatch.setattr(cv2, "VideoCapture", lambda d, api=None: FakeCapture(d, api, fail_after=5))
    with pytest.raises(SourceError, match=r"^0: camera stopped delivering frames"):
        with open_source("0", max_read_failures=3) as src:
            for f in src:
                time.sleep(0.02)


def test_webcam_that_does_not_exist_fails_quickly():
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"^57: cannot open camera"):
        open_source("57")
    assert time.monotonic() - t0 < 5


def test_latest_frame_keeps_only_the_newest():
    slot = LatestFrame()
    assert slot.put("a") is False and slot.put("b") is True and slot.put("c") is True
    assert slot.get() == "c" and slot.dropped == 2
    with pytest.raises(TimeoutError):
        slot.get(timeout=0.01)
    slot.put("d")
    slot.close()
    assert slot.put("e") is False  # ignored after close
    assert slot.get() == "d" and slot.get() is None
    failed = LatestFrame()
    failed.close(SourceError("cam: gone"))
    with pytest.raises(SourceError, match="cam: gone"):
        failed.get()


def test_latest_frame_fast_producer_slow_consumer():
    slot, n = LatestFrame(), 3000
    last_put = [-1]

    def produce():
        for i in range(n):
            slot.put(i)
            last_put[0] = i
            if i % 10 == 0:
                time.sleep(0.0005)
        slot.close()

    producer = threading.Thread(target=produce)
    producer.start()
    got = []
    while True:
        newest_before = last_put[0]
        item = slot.get(timeout=5)
        if item is None:
            break
        # never an item older than one already put when we asked
        assert item >= newest_before and (not got or item > got[-1])
        got.append(item)
        time.sleep(0.001)
    producer.join()
    assert got[-1] == n - 1  # the newest always survives
    assert 10 < len(got) < n
    assert slot.puts == n and slot.gets == len(got) and slot.dropped == n - len(got)


# ---------------------------------------------------------------------------------------------
# RTSP


def test_rtsp_unreachable_gives_up_after_max_attempts():
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=rf"^rtsp://127\.0\.0\.1:{port}/stream: unreachable after 2 attempts "
                                          r"\(last error: .+\)$"):
        open_source(f"rtsp://127.0.0.1:{port}/stream", max_attempts=2, backoff_initial_s=0.2,
                    open_timeout_s=2, read_timeout_s=2)
    assert time.monotonic() - t0 < 10


def test_rtsp_start_is_bounded_for_an_unreachable_camera():
    # the defaults: 3 attempts, 0.5 s then 1 s between them (about 1.5 s with a refused connection)
    url = f"rtsp://127.0.0.1:{free_port()}/x"
    src = make_source(url)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=rf"^{re.escape(url)}: unreachable after 3 attempts \(last error: .+\)$"):
        src.open()
    assert time.monotonic() - t0 < 20
    assert src.attempts == 3


def test_rtsp_start_is_bounded_for_a_host_that_does_not_resolve():
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"^rtsp://nonexistent\.invalid/x: unreachable after 3 attempts "
                                          r"\(last error: cannot resolve host nonexistent\.invalid \(.+\)\)$"):
        open_source("rtsp://nonexistent.invalid/x")
    assert time.monotonic() - t0 < 30  # each attempt's lookup is bounded by open_timeout_s (5 s)


@pytest.fixture
def hanging_resolver(monkeypatch):
    """socket.getaddrinfo that does not answer (until the test ends)."""
    release = threading.Event()
    calls = []

    def getaddrinfo(host, *args, **kwargs):
        calls.append(host)
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield calls
    release.set()


def test_rtsp_resolver_that_does_not_answer_is_a_failed_attempt(hanging_resolver):
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"^rtsp://cam\.example:8554/x: unreachable after 2 attempts \(last error: "
                                          r"cannot resolve host cam\.example \(no answer within 0\.3 s\)\)$"):
        open_source("rtsp://cam.example:8554/x", open_timeout_s=0.3, start_attempts=2, backoff_initial_s=0.1)
    assert time.monotonic() - t0 < 10
    assert hanging_resolver == ["cam.example"]  # the second attempt waited for the same lookup


def test_rtsp_stop_ends_open_promptly(hanging_resolver):
    # waiting in backoff
    src = make_source(f"rtsp://127.0.0.1:{free_port()}/x", start_attempts=100, backoff_initial_s=30)
    timer = threading.Timer(0.3, src.stop)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r": stopped before connecting$"):
        src.open()
    assert time.monotonic() - t0 < 3
    src.close()
    # waiting for a name lookup that does not come back
    src = make_source("rtsp://cam.example/x", open_timeout_s=30)
    timer = threading.Timer(0.3, src.stop)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r": stopped before connecting$"):
        src.open()
    assert time.monotonic() - t0 < 3
    src.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gst_rtsp_available() -> str | None:
    """None when the system Python can run the RTSP server, else why not."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                        "from gi.repository import GstRtspServer"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return (f"{SYSTEM_PYTHON} cannot import the GstRtspServer bindings "
                "(run scripts/install-test-deps.sh as root)")
    return None


@pytest.fixture(scope="module")
def rtsp_server(tmp_path_factory, vtest):
    """start(port) -> a running server process serving a looped 3 s H.264 clip of vtest.avi."""
    why = _gst_rtsp_available()
    if why:
        pytest.skip(why)
    clip = tmp_path_factory.mktemp("rtsp") / "clip.mp4"
    with av.open(str(vtest)) as src:
        images = [f.to_ndarray(format="rgb24") for _, f in zip(range(75), src.decode(video=0))]
    write_video(clip, 75, codec="libx264", size=(768, 576), fps=25, images=images)
    started: list[subprocess.Popen] = []

    def start(port: int) -> subprocess.Popen:
        proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), "--clip", str(clip), "--port", str(port), "--loop"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline().strip() if ready else ""
        if line != "READY":
            proc.kill()
            pytest.fail(f"RTSP server did not start: {line!r} {proc.stderr.read()[-2000:]}")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_rtsp_reads_and_reconnects_after_server_restart(rtsp_server, caplog):
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/stream"
    server = rtsp_server(port)
    frames = []
    with caplog.at_level(logging.INFO, logger="posestream.stream.sources"):
        with open_source(url, source_id=1, max_attempts=20, backoff_initial_s=0.2, backoff_factor=2.0,
                         backoff_max_s=1.0, analyze_s=0.1, open_timeout_s=3, read_timeout_s=3) as src:
            assert (src.kind, src.live) == ("rtsp", True)
            it = iter(src)
            for _ in range(20):
                frames.append(next(it))
            assert (src.outages, src.outage_s) == (0, 0.0)
            server.send_signal(signal.SIGKILL)
            server.wait()
            # the server comes back a little later: the source sees refused connections meanwhile
            restarted = []
            timer = threading.Timer(0.8, lambda: restarted.append(rtsp_server(port)))
            timer.start()
            try:
                while sum(f.epoch == 1 for f in frames) < 20:  # bounded: max_attempts ends a failure
                    frames.append(next(it))
            finally:
                timer.join()
            assert (src.reconnects, src.epoch) == (1, 1)
            assert src.attempts >= 3  # first connection, at least one refused attempt, the reconnection
            # one outage: from the last frame before the kill to the first after the restart (>= 0.8 s)
            assert src.outages == 1 and 0.5 < src.outage_s < 30
            outage_s = src.outage_s
    assert src.closed and src.outage_s == outage_s  # over: closing adds nothing
    for f in frames:
        assert f.image.shape == (576, 768, 3) and f.image.dtype == np.uint8 and f.source_id == 1
        assert f.info["kind"] == "rtsp" and f.info["source"] == url
    assert [f.frame_id for f in frames] == list(range(len(frames)))
    epochs = [f.epoch for f in frames]
    assert epochs[:20] == [0] * 20 and epochs == sorted(epochs) and epochs[-1] == 1
    assert sum(e == 1 for e in epochs) >= 20
    pts = [f.pts for f in frames]
    assert pts[0] == 0.0 and np.all(np.diff(pts) > 0)  # capture clock, across the gap
    assert "reconnecting" in caplog.text and "retrying in" in caplog.text


def test_rtsp_outage_still_going_on_counts_up_to_close(rtsp_server):
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/stream"
    server = rtsp_server(port)
    with open_source(url, max_attempts=2, backoff_initial_s=0.2, analyze_s=0.1, open_timeout_s=3,
                     read_timeout_s=3) as src:
        it = iter(src)
        for _ in range(5):
            next(it)
        t_kill = time.monotonic()
        server.send_signal(signal.SIGKILL)
        server.wait()
        with pytest.raises(SourceError, match=rf"^{re.escape(url)}: unreachable after 2 attempts"):
            for _ in it:  # frames still buffered, then the loss and two refused attempts
                pass
        t_end = time.monotonic()
        assert src.closed and src.outages == 1 and src.reconnects == 0
        outage_s = src.outage_s
        assert 0.2 <= outage_s <= t_end - t_kill + 1.0  # the backoff at least; from about the kill to close
        time.sleep(0.05)
        assert src.outage_s == outage_s  # ended with the source, not still counting
