"""The Python API: posestream.Pipeline (the real processes underneath) and posestream.Estimator."""
from __future__ import annotations

import gc
import glob
import json
import os
import socket
import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import make_clip

import posestream
from posestream.stream.transport import _folder_hash

REPO = Path(__file__).resolve().parents[1]
VTEST = (REPO / ".." / "shared" / "data" / "videos" / "vtest.avi").resolve()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("api") / "c30.mp4", 30, size=(320, 240))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(x.startswith("State:") and "Z" in x.split()[1] for x in f)
    except FileNotFoundError:
        return False


def _gone(pipe_pids: dict, folder: str | None, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pipe_pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [n for n, p in pipe_pids.items() if _alive(p)]
    if folder is not None:
        assert not os.path.exists(folder)
        assert glob.glob(f"/dev/shm/psring-{_folder_hash(folder)}-*") == []


def _frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_every_frame_of_a_file_in_order_with_people_and_a_recording(tmp_path, clip):
    with posestream.Pipeline(str(clip), model="lite", record=tmp_path / "o.mp4", jsonl=tmp_path / "o.jsonl",
                             input_size=128, images=True) as pipe:
        results = []
        for r in pipe:
            assert isinstance(r, posestream.Result)
            assert r.image.shape == (240, 320, 3) and r.image.dtype == np.uint8 and not r.image.flags.writeable
            assert r.latency_ms > 0 and r.source == str(clip) and r.source_id == 0
            for p in r.people:
                assert isinstance(p, posestream.Person) and p.keypoints.shape == (17, 3)
            results.append((r.frame_id, r.pts, len(r.people)))
        assert pipe.meta["model"]["skeleton"] == "coco17"
    assert [f for f, _, _ in results] == list(range(30))
    assert all(abs(pts - i / 10) < 1e-3 for i, (_, pts, _) in enumerate(results))
    assert pipe.summary["frames_out"] == 30 and pipe.summary["failed_stage"] is None
    assert _frames(tmp_path / "o.mp4") == 30
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [len(x["people"]) for x in lines] == [n for _, _, n in results]


def test_two_sources_each_get_every_frame(clip):
    seen = {0: [], 1: []}
    for r in posestream.Pipeline([str(clip), str(clip)], model="lite", input_size=128):
        seen[r.source_id].append(r.frame_id)
    assert seen == {0: list(range(30)), 1: list(range(30))}


def test_break_stops_everything_and_finalises_the_recording(tmp_path, clip):
    pipe = posestream.Pipeline(str(clip), model="lite", record=tmp_path / "b.mp4", input_size=128)
    with pipe:
        pids, folder = pipe.pids, pipe._sup.folder
        assert set(pids) == {"capture0", "infer", "track", "output"}
        for r in pipe:
            if r.frame_id == 4:
                break
    _gone(pids, folder)
    n = pipe.summary["frames_out"]
    assert 5 <= n <= 30 and _frames(tmp_path / "b.mp4") == n
    assert pipe.summary["interrupted"]


def test_an_exception_in_the_loop_stops_the_pipeline(clip):
    with pytest.raises(KeyError):
        with posestream.Pipeline(str(clip), model="lite", input_size=128) as pipe:
            pids, folder = pipe.pids, pipe._sup.folder
            for _ in pipe:
                raise KeyError("mine")
    _gone(pids, folder)


def test_garbage_collection_stops_the_pipeline(clip):
    pipe = posestream.Pipeline(str(clip), model="lite", input_size=128)
    it = iter(pipe)
    next(it)
    pids, folder = pipe.pids, pipe._sup.folder
    del it, pipe
    gc.collect()
    _gone(pids, folder)


def test_bad_inputs_raise_before_the_first_frame(tmp_path):
    with pytest.raises(posestream.PipelineError, match="nope.mp4: file not found") as e:
        posestream.Pipeline(str(tmp_path / "nope.mp4"))
    assert e.value.user
    with pytest.raises(posestream.PipelineError, match="input_size must be an integer"):
        posestream.Pipeline(str(VTEST), input_size=0)
    with pytest.raises(posestream.PipelineError, match="is a folder"):
        posestream.Pipeline(str(VTEST), record=tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"rtsp://127.0.0.1:{port}/x"
    pipe = posestream.Pipeline(url, model="lite", config={"source_options": {"rtsp": {"backoff_initial_s": 0.1}}})
    t0 = time.monotonic()
    with pytest.raises(posestream.PipelineError, match="unreachable after 3 attempts"):
        with pipe:
            pytest.fail("no frame may be yielded")
    assert time.monotonic() - t0 < 30
    assert pipe.summary["frames_out"] == 0


def test_estimator_finds_people_in_a_real_image(shared_data):
    import cv2

    ann = json.loads((shared_data / "coco-mini" / "annotations" / "person_keypoints_train2017.json").read_text())
    counts: dict = {}  # the image with the most well-labelled people
    for a in ann["annotations"]:
        if a.get("num_keypoints", 0) >= 10:
            counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    by_id = {im["id"]: im["file_name"] for im in ann["images"]}
    path = shared_data / "coco-mini" / "train2017" / by_id[max(counts, key=counts.get)]
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    est = posestream.Estimator("default")
    people = est(img)
    assert people and all(p.keypoints.shape == (17, 3) and p.track_id == -1 for p in people)
    h, w = img.shape[:2]
    found = np.concatenate([p.keypoints[p.keypoints[:, 2] > 0] for p in people])
    assert (found[:, 0] >= 0).all() and (found[:, 0] < w).all() and (found[:, 1] < h).all()
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 RGB image"):
        est(np.zeros((10, 10), np.uint8))
    with pytest.raises(posestream.PipelineError, match="not a checkpoint, ONNX file or registered model"):
        posestream.Estimator("no_such_model")


def test_estimator_tracks_across_calls_when_asked():
    est = posestream.Estimator("lite", track=True, input_size=128)
    img = np.zeros((240, 320, 3), np.uint8)
    assert est(img) == [] and est(img) == []
