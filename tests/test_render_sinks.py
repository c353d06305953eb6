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
from posestream.stream.sinks import (JsonlSink, JsonlWriter, Mp4Sink, Mp4Writer, OutputStage, Sink, SinkConfig,
                                     WindowSink, build_sinks)

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
    # a tentative track (-2: weak and unconfirmed, or a duplicate pose) is not drawn at all
    tentative = np.zeros((H, W, 3), np.uint8)
    draw_people(tentative, one_limb_person(track_id=-2), COCO_17, thickness=3)
    assert not tentative.any() and unlabeled.any()
    with pytest.raises(ValueError, match="skeleton"):
        draw_people(img, make_people(k=16), COCO_17)


def test_draw_hud_darkens_top_left_only():
    img = np.full((H, W, 3), 200, np.uint8)
    draw_hud(img, ["fps 30.0", "latency 12 ms"])
    assert img[1, 1].max() < 150
    assert (img[-10:, -10:] == 200).all()


# ---------------------------------------------------------------------------------- stage driving


def eos(source_id: int, frame_id: int = -1) -> Frame:
    return Frame(source_id=source_id, frame_id=frame_id, t_capture_ns=0, eos=True)


def run_chain(stages: list, items: list[Frame], meta: dict | None = None) -> list[Frame]:
    """Drive a chain of stages as :func:`stream.runner.stage_main` does: ``open`` in order (each
    gets the metadata the stages before it added), ``reset(source_id)`` when a source's epoch
    changes, ``process`` in order, ``end(source_id)`` at an end-of-stream marker (never
    ``process``), ``close`` in reverse order. Returns the frames that came out."""
    m = dict(meta or {})
    for st in stages:
        m.update(st.open(dict(m)) or {})
    epochs: dict[int, int] = {}
    ended: set[int] = set()
    out = []
    try:
        for f in items:
            sid = f.source_id
            if f.eos:
                if sid not in ended:
                    ended.add(sid)
                    epochs.pop(sid, None)
                    for st in stages:
                        st.end(sid)
                continue
            prev = epochs.get(sid)
            if prev is not None and prev != f.epoch:
                for st in stages:
                    st.reset(sid)
            epochs[sid] = f.epoch
            for st in stages:
                f = st.process(f)
                if f is None:
                    break
            if f is not None:
                out.append(f)
    finally:
        for st in reversed(stages):
            st.close()
    return out


# ------------------------------------------------------------------------------------------ render


def test_render_stage_draws_hud_and_leaves_timings_to_the_runner():
    stage = RenderStage(RenderConfig.from_dict({"hud": True, "min_score": 0.2}))
    assert stage.name == "render"
    assert stage.open({}) is None  # adds no metadata
    frames = make_frames(5)
    frames[0].image.flags.writeable = False  # as rebuilt from a socket buffer
    original = frames[0].image
    outs = [stage.process(f) for f in frames]
    assert stage.fps(0) == pytest.approx(10.0)
    assert outs[0].image is not original and not np.array_equal(outs[0].image, original)
    assert all(f.timings == {} for f in outs)  # the runner stamps timings["render"], not the stage
    bare = Frame(source_id=0, frame_id=5, t_capture_ns=1_500_000_000)
    assert stage.process(bare) is bare and bare.image is None and bare.timings == {}
    # reset / end forget one source's fps measurement only
    for f in make_frames(3, source_id=1):
        stage.process(f)
    stage.reset(0)
    assert stage.fps(0) is None and stage.fps(1) == pytest.approx(10.0)
    for f in make_frames(3):
        stage.process(f)
    assert stage.fps(0) == pytest.approx(10.0)
    stage.end(1)
    assert stage.fps(1) is None and stage.fps(0) == pytest.approx(10.0)
    stage.reset(7)  # a source never seen: nothing to forget
    stage.end(7)
    stage.close()


MPII = get_skeleton("mpii16")


def mpii_person() -> People:
    """An MPII person with only right_hip and right_knee: limb (2, 1), horizontal, a right-side colour."""
    assert MPII.num_keypoints == 16
    kps = np.zeros((1, 16, 3), np.float32)
    kps[0, MPII.index("right_hip")] = (40, 50, 0.9)
    kps[0, MPII.index("right_knee")] = (120, 50, 0.9)
    return People(kps, np.ones(1, np.float32), np.array([-1], np.int64))


def test_render_stage_takes_the_skeleton_from_open_meta():
    limb = MPII.limbs.index((MPII.index("right_hip"), MPII.index("right_knee")))
    color = MPII.limb_colors[limb]
    assert color[0] != color[2]  # a non-symmetric BGR colour: proves the RGB conversion too
    stage = RenderStage(RenderConfig(hud=False, thickness=3))
    assert stage.skeleton is COCO_17  # until open() says otherwise
    stage.open({"model": {"skeleton": "mpii16", "num_keypoints": 16}})
    assert stage.skeleton is MPII
    f = Frame(source_id=0, frame_id=0, t_capture_ns=1, image=np.zeros((H, W, 3), np.uint8), people=mpii_person())
    out = stage.process(f)
    np.testing.assert_array_equal(out.image[50, 80], color[::-1])
    assert not out.image[:40].any() and not out.image[60:].any()
    stage.close()
    # a skeleton named in the config wins over the model's
    fixed = RenderStage(RenderConfig(skeleton="coco17", hud=False))
    fixed.open({"model": {"skeleton": "mpii16"}})
    assert fixed.skeleton is COCO_17
    f = Frame(source_id=0, frame_id=0, t_capture_ns=1, image=np.zeros((H, W, 3), np.uint8), people=mpii_person())
    with pytest.raises(ValueError, match="coco17"):
        fixed.process(f)
    # no model metadata: COCO-17
    default = RenderStage()
    default.open({})
    assert default.skeleton is COCO_17


# ------------------------------------------------------------------------------------------- sinks


def test_build_sinks_order_and_lazy_paths(tmp_path):
    assert build_sinks(SinkConfig()) == []
    assert OutputStage([]).needs_image is False
    sinks = build_sinks(SinkConfig(record=str(tmp_path / "v.mp4"), jsonl=str(tmp_path / "k.jsonl"), show=True,
                                   fps=12, crf=30, preset="ultrafast"))
    assert [type(s) for s in sinks] == [Mp4Sink, JsonlSink, WindowSink]
    mp4, jsonl, _ = sinks
    assert (mp4.path, mp4.fps, mp4.crf, mp4.preset) == (tmp_path / "v.mp4", 12, 30, "ultrafast")
    assert OutputStage(sinks).needs_image and not jsonl.needs_image
    stage = OutputStage(sinks[:2])
    assert stage.paths == {}  # files open on the first frame
    assert not (tmp_path / "v.mp4").exists() and not (tmp_path / "k.jsonl").exists()


def test_render_then_output_stage_files_have_input_frame_count(tmp_path):
    render = RenderStage(RenderConfig(hud=True))
    out = OutputStage(build_sinks(SinkConfig.from_dict({"record": str(tmp_path / "out.mp4"),
                                                        "jsonl": str(tmp_path / "out.jsonl")})))
    assert out.name == "output" and out.needs_image
    got = run_chain([render, out], make_frames(12) + [eos(0, 12)])
    assert len(got) == 12
    s = out.summary()
    assert s["frames_recorded"] == 12 and s["sink_errors"] == {}
    assert s["outputs"] == {"record_s0": str(tmp_path / "out.mp4"), "jsonl": str(tmp_path / "out.jsonl")}
    json.dumps(s)
    _, times, images, info = decode(tmp_path / "out.mp4")
    assert len(images) == 12 and info["rate"] == Fraction(10)
    np.testing.assert_allclose(times, np.arange(12) / 10, atol=1e-3)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 12


def test_output_stage_one_file_per_source(tmp_path):
    out = OutputStage(build_sinks(SinkConfig(record=str(tmp_path / "out.mp4"), jsonl=str(tmp_path / "out.jsonl"),
                                             fps=5)))
    a, b = make_frames(4, source_id=0, fps=None), make_frames(3, source_id=1, fps=None, with_people=False)
    run_chain([out], [a[0], b[0], a[1], b[1], a[2], b[2], a[3]])
    out.close()  # a second close is harmless
    assert not (tmp_path / "out.mp4").exists()
    assert out.paths == {"record_s0": str(tmp_path / "out_s0.mp4"), "record_s1": str(tmp_path / "out_s1.mp4"),
                         "jsonl": str(tmp_path / "out.jsonl")}
    json.dumps(out.paths)
    assert len(decode(tmp_path / "out_s0.mp4")[2]) == 4
    _, _, images1, _ = decode(tmp_path / "out_s1.mp4")
    assert len(images1) == 3
    lines = [json.loads(s) for s in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["source_id"], r["frame_id"]) for r in lines] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2), (0, 3)]
    assert [len(r["people"]) for r in lines] == [2, 0, 2, 0, 2, 0, 2]
    assert out.summary()["frames_recorded"] == 7


@pytest.mark.parametrize("how", ["epoch", "reset"])
def test_mp4_sink_restarted_stream_continues_timing(tmp_path, how):
    """The stream restarts at frame 3 with pts from 0 again: a new epoch, through the runner's
    ``reset(source_id)`` ("epoch"); or ``reset`` alone, with the frames' epoch unchanged ("reset")."""
    sink = Mp4Sink(tmp_path / "r.mp4")
    frames = make_frames(6)
    for f in frames[3:]:
        f.pts -= 0.3
        if how == "epoch":
            f.epoch = 1
    if how == "epoch":
        run_chain([OutputStage([sink])], frames)
    else:
        sink.open({})
        for i, f in enumerate(frames):
            if i == 3:
                sink.reset(0)
            sink.write(f)
        sink.close()
    _, times, images, _ = decode(tmp_path / "r.mp4")
    assert len(images) == 6
    np.testing.assert_allclose(times, np.arange(6) / 10, atol=1e-3)


def test_mp4_sink_resizes_a_source_that_changes_size(tmp_path):
    sink = Mp4Sink(tmp_path / "s.mp4")
    frames = make_frames(8)
    for i, f in enumerate(frames[4:], start=4):  # the camera comes back at twice the size: a new epoch
        f.epoch, f.image = 1, bar_image(2 * i, 2 * W, 2 * H)
    run_chain([OutputStage([sink])], frames + [eos(0, 8)])
    assert sink.resized == 4 and sink.frames_written == 8 and sink.dropped == 0
    _, times, images, info = decode(tmp_path / "s.mp4")
    assert len(images) == 8 and (info["width"], info["height"]) == (W, H)
    np.testing.assert_allclose(times, np.arange(8) / 10, atol=1e-3)
    centers = [bar_center(im) for im in images]
    expected = [4 + i * BAR_STEP + (BAR_W - 1) / 2 for i in range(4)]
    expected += [(4 + 2 * i * BAR_STEP + BAR_W / 2) / 2 - 0.5 for i in range(4, 8)]  # half-size bars
    np.testing.assert_allclose(centers, expected, atol=1.0)


def test_mp4_sink_end_finalises_one_source_while_another_records(tmp_path):
    sink = Mp4Sink(tmp_path / "out.mp4", fps=5)
    a = make_frames(6, source_id=0, fps=None)
    b = make_frames(8, source_id=1, fps=None)
    sink.open({})
    for f0, f1 in zip(a[:4], b[:4]):
        sink.write(f0)
        sink.write(f1)
    sink.end(0)
    # source 0's file is complete and playable now, while source 1 goes on recording
    _, times, images, _ = decode(tmp_path / "out.mp4")
    assert len(images) == 4
    np.testing.assert_allclose(times, np.arange(4) / 10, atol=1e-3)
    boxes = top_level_boxes(tmp_path / "out.mp4")
    assert boxes.index("moov") < boxes.index("mdat")
    for f in b[4:]:
        sink.write(f)
    for f in a[4:]:  # source 0 after its end: not recorded, counted
        sink.write(f)
    assert sink.dropped == 2
    sink.end(0)  # a second end is a no-op
    sink.end(1)
    sink.close()
    assert not (tmp_path / "out.mp4").exists()
    assert sink.paths == {"record_s0": str(tmp_path / "out_s0.mp4"), "record_s1": str(tmp_path / "out_s1.mp4")}
    _, times0, images0, _ = decode(tmp_path / "out_s0.mp4")
    assert len(images0) == 4
    assert [round(bar_center(im)) for im in images0] == [round(4 + i * BAR_STEP + 1.5) for i in range(4)]
    _, times1, images1, _ = decode(tmp_path / "out_s1.mp4")
    assert len(images1) == 8
    np.testing.assert_allclose(times1, np.arange(8) / 10, atol=1e-3)
    assert sink.summary() == {"frames_recorded": 12}


class RecordingSink(Sink):
    """Remembers every call it gets."""

    def __init__(self, name: str = "sink") -> None:
        self.name = name
        self.frames: list[tuple[int, int]] = []
        self.calls: list[tuple[str, int]] = []
        self.opened = self.closed = 0

    def open(self, meta):
        self.opened += 1

    def write(self, frame):
        self.frames.append((frame.source_id, frame.frame_id))

    def reset(self, source_id):
        self.calls.append(("reset", source_id))

    def end(self, source_id):
        self.calls.append(("end", source_id))

    def close(self):
        self.closed += 1


class FailingSink(RecordingSink):
    """Raises in ``hook``: in ``write`` after ``n`` frames, in ``reset`` / ``end`` at once."""

    def __init__(self, hook: str = "write", n: int = 3, name: str = "flaky") -> None:
        super().__init__(name)
        self.hook, self.n = hook, n

    def _fail(self):
        raise OSError(28, "No space left on device")

    def write(self, frame):
        if self.hook == "write" and len(self.frames) >= self.n:
            self._fail()
        super().write(frame)

    def reset(self, source_id):
        if self.hook == "reset":
            self._fail()
        super().reset(source_id)

    def end(self, source_id):
        if self.hook == "end":
            self._fail()
        super().end(source_id)


@pytest.mark.parametrize("hook", ["write", "reset", "end"])
def test_output_stage_isolates_a_failing_sink(tmp_path, hook):
    flaky, good = FailingSink(hook, n=3), RecordingSink("good")
    jsonl = JsonlSink(tmp_path / "k.jsonl")
    stage = OutputStage([flaky, good, jsonl])  # the failing sink first: the others still get that frame
    frames = make_frames(10, with_people=False)
    for f in frames[6:]:
        f.epoch = 1
    got = run_chain([stage], frames + [eos(0, 10)])
    assert len(got) == 10  # the stage passes every frame on
    ids = [(0, i) for i in range(10)]
    assert good.frames == ids and good.calls == [("reset", 0), ("end", 0)]
    assert len((tmp_path / "k.jsonl").read_text().splitlines()) == 10
    assert flaky.closed == 1 and good.closed == 1  # closed at its failure, not again at close()
    if hook == "write":
        assert flaky.frames == ids[:3] and flaky.calls == []  # nothing more after the failure
    elif hook == "reset":
        assert flaky.frames == ids[:6] and flaky.calls == []
    else:
        assert flaky.frames == ids and flaky.calls == [("reset", 0)]
    s = stage.summary()
    assert s["sink_errors"] == {"flaky": f"{hook}: [Errno 28] No space left on device"}
    assert s["outputs"] == {"jsonl": str(tmp_path / "k.jsonl")}
    json.dumps(s)


def test_output_stage_failure_of_one_sink_does_not_silence_another_of_the_same_name():
    flaky, good = FailingSink("write", n=2, name="sink"), RecordingSink("sink")
    stage = OutputStage([flaky, good])
    run_chain([stage], make_frames(5, with_people=False) + [eos(0, 5)])
    assert flaky.frames == [(0, 0), (0, 1)] and flaky.closed == 1
    assert good.frames == [(0, i) for i in range(5)] and good.calls == [("end", 0)] and good.closed == 1
    # reported under a label that tells the two apart (the name, with its index when names repeat)
    assert stage.summary()["sink_errors"] == {"sink#0": "write: [Errno 28] No space left on device"}


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="'hud_size'"):
        RenderConfig.from_dict({"hud_size": 3})
    with pytest.raises(ValueError, match="'recrod'"):
        SinkConfig.from_dict({"recrod": "x.mp4"})
    with pytest.raises(ValueError, match="fps"):
        SinkConfig.from_dict({"fps": -1})
    with pytest.raises(ValueError, match="preset"):
        SinkConfig.from_dict({"preset": "quick"})
    with pytest.raises(KeyError, match="coco18"):
        RenderConfig.from_dict({"skeleton": "coco18"})
    assert RenderConfig().skeleton is None  # the model's skeleton
    assert RenderStage().skeleton is COCO_17  # before open() names one


def test_window_sink_headless_fails_with_clear_message():
    import cv2

    try:
        cv2.namedWindow("probe")
        cv2.destroyWindow("probe")
    except cv2.error:
        with pytest.raises(UserError, match=r"--show needs a GUI build of OpenCV \(pip install opencv-python\)"):
            WindowSink().open({})
        with pytest.raises(UserError, match="--show needs a GUI build"):
            OutputStage(build_sinks(SinkConfig.from_dict({"show": True}))).open({})
    else:
        pytest.skip("OpenCV has a GUI here")
