"""Render and sink tests: real files in tmp_path, decoded back with PyAV."""
from __future__ import annotations

import json
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from posestream.models.skeleton import COCO_17, get_skeleton
from posestream.stream.cli import UserError
from posestream.stream.messages import Frame, People
from posestream.stream.render import RenderConfig, RenderStage, draw_hud, draw_people
from posestream.stream.sinks import JsonlWriter, Mp4Writer, SinkConfig, SinkStage, WindowSink

W, H = 160, 96
BAR_STEP, BAR_W = 6, 4


def bar_image(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Dark frame with a bright vertical bar whose position encodes the frame index."""
    img = np.full((h, w, 3), 20, np.uint8)
    x = 4 + i * BAR_STEP
    img[:, x:x + BAR_W] = (240, 200, 160)
    return img


def bar_center(img: np.ndarray) -> float:
    profile = img.astype(np.float64).mean(axis=(0, 2))
    bright = profile > (profile.max() + profile.min()) / 2
    return float(np.flatnonzero(bright).mean())


def decode(path) -> tuple[av.video.stream.VideoStream, list[float], list[np.ndarray], dict]:
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        info = {"codec": st.codec_context.name, "pix_fmt": st.codec_context.pix_fmt,
                "rate": st.average_rate, "width": st.codec_context.width, "height": st.codec_context.height}
        times, images = [], []
        for f in c.decode(video=0):
            times.append(float(f.pts * f.time_base))
            images.append(f.to_ndarray(format="rgb24"))
    return st, times, images, info


def top_level_boxes(path) -> list[str]:
    """Types of the top-level MP4 boxes, in file order."""
    data = path.read_bytes()
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        assert size >= 8, f"bad box size {size} at {pos}"
        boxes.append(kind.decode("latin-1"))
        pos += size
    assert pos == len(data)
    return boxes


def test_mp4_writer_codec_timing_order_and_faststart(tmp_path):
    path = tmp_path / "bars.mp4"
    with Mp4Writer(path, fps=10, width=W, height=H) as w:
        for i in range(25):
            w.write(bar_image(i), i / 10)
        assert w.frames_written == 25
    _, times, images, info = decode(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (W, H)
    assert len(images) == 25
    assert np.all(np.diff(times) > 0)
    assert info["rate"] == Fraction(10)
    np.testing.assert_allclose(times, np.arange(25) / 10, atol=1e-3)
    centers = [bar_center(im) for im in images]
    np.testing.assert_allclose(centers, [4 + i * BAR_STEP + (BAR_W - 1) / 2 for i in range(25)], atol=1.0)
    boxes = top_level_boxes(path)
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat")


def test_mp4_writer_odd_size_is_padded_and_playable(tmp_path):
    path = tmp_path / "odd.mp4"
    with Mp4Writer(path, fps=25, width=101, height=75) as w:
        for i in range(5):
            w.write(bar_image(i, 101, 75))
    _, times, images, info = decode(path)
    assert len(images) == 5
    assert (info["width"], info["height"]) == (102, 76)
    # edge padding repeats the last column/row rather than adding a black border
    assert abs(int(images[0][:, 101].mean()) - int(images[0][:, 100].mean())) < 8
    np.testing.assert_allclose(times, np.arange(5) / 25, atol=1e-3)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_mp4_writer_error_inside_with_leaves_playable_file(tmp_path, exc):
    path = tmp_path / "cut.mp4"
    with pytest.raises(exc):
        with Mp4Writer(path, fps=10, width=W, height=H) as w:
            for i in range(7):
                w.write(bar_image(i), i / 10)
            raise exc("interrupted")
    assert w.closed
    w.close()  # second close is a no-op
    _, times, images, _ = decode(path)
    assert len(images) == 7
    assert [round(bar_center(im)) for im in images] == [round(4 + i * BAR_STEP + 1.5) for i in range(7)]
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat")


def test_mp4_writer_keeps_irregular_source_timing_and_bumps_repeats(tmp_path):
    path = tmp_path / "irregular.mp4"
    pts = [0.0, 0.1, 0.3, 0.35]
    with Mp4Writer(path, fps=10, width=W, height=H) as w:
        for i, t in enumerate(pts):
            w.write(bar_image(i), t)
        tick = float(w.time_base)
        w.write(bar_image(4), 0.35)  # repeated pts: moved one tick later
        assert w.pts_bumped == 1
    _, times, images, _ = decode(path)
    assert len(images) == 5
    np.testing.assert_allclose(times[:4], pts, atol=tick + 1e-9)
    assert times[4] > times[3] and times[4] - times[3] <= 2 * tick


def test_mp4_writer_rejects_wrong_size_and_write_after_close(tmp_path):
    w = Mp4Writer(tmp_path / "x.mp4", fps=10, width=W, height=H)
    with pytest.raises(ValueError, match="uint8"):
        w.write(np.zeros((H + 2, W, 3), np.uint8))
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.write(bar_image(0))
    with pytest.raises(ValueError, match="fps"):
        Mp4Writer(tmp_path / "y.mp4", fps=0, width=W, height=H)


def make_people(n: int = 2, k: int = 17, seed: int = 0) -> People:
    rng = np.random.default_rng(seed)
    kps = np.zeros((n, k, 3), np.float32)
    kps[:, :, 0] = rng.uniform(0, W, (n, k))
    kps[:, :, 1] = rng.uniform(0, H, (n, k))
    kps[:, :, 2] = rng.uniform(0, 1, (n, k))
    return People(kps, rng.uniform(0, 1, n).astype(np.float32), np.arange(n, dtype=np.int64) - 1)


def make_frames(n: int, source_id: int = 0, fps: float | None = 10.0, with_people: bool = True) -> list[Frame]:
    frames = []
    for i in range(n):
        info = {"fps": fps} if fps else {}
        frames.append(Frame(source_id=source_id, frame_id=i, t_capture_ns=1_000_000_000 + i * 100_000_000,
                            pts=i / 10, image=bar_image(i % 25), info=info,
                            people=make_people(seed=i) if with_people else None))
    return frames


def test_jsonl_writer_lines_roundtrip(tmp_path):
    path = tmp_path / "kp.jsonl"
    frames = make_frames(6)
    frames[2].people = None
    frames[3].people.keypoints[0, 4] = (np.nan, 1.0, 0.0)
    with JsonlWriter(path) as jw:
        for f in frames:
            jw.write(f)
            # flushed per line: readable before close
            assert len(path.read_text().splitlines()) == jw.lines_written
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    for f, line in zip(frames, lines):
        rec = json.loads(line)
        assert rec["source_id"] == f.source_id and rec["frame_id"] == f.frame_id
        assert rec["t_capture_ns"] == f.t_capture_ns and rec["epoch"] == f.epoch
        assert rec["pts"] == pytest.approx(f.pts)
        if f.people is None:
            assert rec["people"] == []
            continue
        assert [p["track_id"] for p in rec["people"]] == f.people.track_ids.tolist()
        kp = np.array([p["keypoints"] for p in rec["people"]], dtype=np.float64)  # None -> nan
        ref = f.people.keypoints.astype(np.float64)
        np.testing.assert_allclose(kp[..., :2], ref[..., :2], atol=0.005 + 1e-6)
        np.testing.assert_allclose(kp[..., 2], ref[..., 2], atol=0.0005 + 1e-6)
        np.testing.assert_allclose([p["score"] for p in rec["people"]], f.people.scores, atol=0.0005 + 1e-6)
    assert "NaN" not in lines[3] and json.loads(lines[3])["people"][0]["keypoints"][4][0] is None


def one_limb_person(score_a: float = 0.9, score_b: float = 0.9, track_id: int = -1) -> People:
    """A person with only left_shoulder (5) and right_shoulder (6): limb 0, horizontal."""
    kps = np.zeros((1, 17, 3), np.float32)
    kps[0, 5] = (40, 50, score_a)
    kps[0, 6] = (120, 50, score_b)
    return People(kps, np.ones(1, np.float32), np.array([track_id], np.int64))


def test_draw_people_limb_colour_in_rgb_and_untouched_elsewhere():
    img = np.zeros((H, W, 3), np.uint8)
    out = draw_people(img, one_limb_person(), COCO_17, thickness=3)
    assert out is img
    np.testing.assert_array_equal(img[50, 80], COCO_17.limb_colors[0][::-1])
    # left shoulder dot: keypoint colour converted to RGB
    np.testing.assert_array_equal(img[50, 40], COCO_17.keypoint_colors[5][::-1])
    assert not img[:40].any() and not img[60:].any()  # far from the limb: untouched
    # a non-symmetric BGR colour proves the conversion: left limb 3 (shoulder -> elbow)
    kps = np.zeros((1, 17, 3), np.float32)
    kps[0, 5] = (20, 20, 0.9)
    kps[0, 7] = (20, 80, 0.9)
    img2 = np.zeros((H, W, 3), np.uint8)
    draw_people(img2, People(kps, np.ones(1, np.float32), np.array([-1])), COCO_17, thickness=3)
    assert COCO_17.limb_colors[3][0] != COCO_17.limb_colors[3][2]
    np.testing.assert_array_equal(img2[50, 20], COCO_17.limb_colors[3][::-1])


def test_draw_people_skips_low_scores_and_labels_tracks():
    img = np.zeros((H, W, 3), np.uint8)
    draw_people(img, one_limb_person(score_b=0.05), COCO_17, min_score=0.1, thickness=3)
    assert not img[:, 60:].any()  # no limb, no dot at the low-score shoulder
    assert img[50, 40].any()  # the confident shoulder's dot is drawn
    unlabeled = np.zeros((H, W, 3), np.uint8)
    draw_people(unlabeled, one_limb_person(track_id=-1), COCO_17, thickness=3)
    labeled = np.zeros((H, W, 3), np.uint8)
    draw_people(labeled, one_limb_person(track_id=7), COCO_17, thickness=3)
    assert labeled[:44].any() and not unlabeled[:44].any()  # id label above the person
    with pytest.raises(ValueError, match="skeleton"):
        draw_people(img, make_people(k=16), COCO_17)


def test_draw_hud_darkens_top_left_only():
    img = np.full((H, W, 3), 200, np.uint8)
    draw_hud(img, ["fps 30.0", "latency 12 ms"])
    assert img[1, 1].max() < 150
    assert (img[-10:, -10:] == 200).all()


def test_render_stage_draws_hud_and_timings_passes_eos():
    stage = RenderStage(RenderConfig.from_dict({"hud": True, "min_score": 0.2}))
    stage.open()
    frames = make_frames(5)
    frames[0].image.flags.writeable = False  # as rebuilt from a socket buffer
    original = frames[0].image
    outs = [stage.process(f) for f in frames]
    assert stage.fps(0) == pytest.approx(10.0)
    assert outs[0].image is not original and not np.array_equal(outs[0].image, original)
    for f in outs:
        start, end = f.timings["render"]
        assert end >= start
    eos = Frame(source_id=0, frame_id=5, t_capture_ns=0, eos=True)
    assert stage.process(eos) is eos and "render" not in eos.timings
    stage.reset()
    assert stage.fps(0) is None
    stage.close()


def test_render_then_sink_stage_files_have_input_frame_count(tmp_path):
    render = RenderStage(RenderConfig(hud=True))
    sink = SinkStage(SinkConfig.from_dict({"record": str(tmp_path / "out.mp4"), "jsonl": str(tmp_path / "out.jsonl")}))
    frames = make_frames(12)
    render.open()
    with sink:
        for f in frames:
            sink.process(render.process(f))
        sink.process(Frame(source_id=0, frame_id=12, t_capture_ns=0, eos=True))
    render.close()
    _, times, images, info = decode(tmp_path / "out.mp4")
    assert len(images) == 12 and info["rate"] == Fraction(10)
    np.testing.assert_allclose(times, np.arange(12) / 10, atol=1e-3)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 12


def test_sink_stage_one_file_per_source(tmp_path):
    sink = SinkStage(SinkConfig(record=str(tmp_path / "out.mp4"), jsonl=str(tmp_path / "out.jsonl"), fps=5))
    a, b = make_frames(4, source_id=0, fps=None), make_frames(3, source_id=1, fps=None, with_people=False)
    sink.open()
    for f in [a[0], b[0], a[1], b[1], a[2], b[2], a[3]]:
        sink.process(f)
    sink.close()
    sink.close()
    assert not (tmp_path / "out.mp4").exists()
    assert sink.paths == {"record_s0": str(tmp_path / "out_s0.mp4"), "record_s1": str(tmp_path / "out_s1.mp4"),
                          "jsonl": str(tmp_path / "out.jsonl")}
    json.dumps(sink.paths)
    assert len(decode(tmp_path / "out_s0.mp4")[2]) == 4
    _, _, images, info = decode(tmp_path / "out_s1.mp4")
    assert len(images) == 3
    lines = [json.loads(s) for s in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["source_id"] for r in lines] == [0, 1, 0, 1, 0, 1, 0]


def test_sink_stage_restarted_epoch_continues_timing(tmp_path):
    sink = SinkStage(SinkConfig(record=str(tmp_path / "r.mp4")))
    frames = make_frames(6)
    for f in frames[3:]:  # the stream restarts: new epoch, pts from 0 again
        f.epoch, f.pts = 1, f.pts - 0.3
    with sink:
        for f in frames:
            sink.process(f)
    _, times, images, _ = decode(tmp_path / "r.mp4")
    assert len(images) == 6
    np.testing.assert_allclose(times, np.arange(6) / 10, atol=1e-3)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="'hud_size'"):
        RenderConfig.from_dict({"hud_size": 3})
    with pytest.raises(ValueError, match="'recrod'"):
        SinkConfig.from_dict({"recrod": "x.mp4"})
    with pytest.raises(ValueError, match="fps"):
        SinkConfig.from_dict({"fps": -1})
    with pytest.raises(KeyError, match="coco18"):
        RenderConfig.from_dict({"skeleton": "coco18"})
    assert get_skeleton(RenderConfig().skeleton) is COCO_17


def test_window_sink_headless_fails_with_clear_message():
    import cv2

    try:
        cv2.namedWindow("probe")
        cv2.destroyWindow("probe")
    except cv2.error:
        with pytest.raises(UserError, match=r"--show needs a GUI build of OpenCV \(pip install opencv-python\)"):
            WindowSink().open()
        with pytest.raises(UserError, match="--show needs a GUI build"):
            SinkStage(SinkConfig.from_dict({"show": True})).open()
    else:
        pytest.skip("OpenCV has a GUI here")
