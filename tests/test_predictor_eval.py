import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from posestream.models.fields import encode
from posestream.models.fields.synthetic import random_scene
from posestream.models.predictor import flip_outputs
from posestream.models.skeleton import COCO_17


def test_flip_outputs_maps_mirrored_fields_back():
    rng = np.random.default_rng(0)
    w, h, s = 256, 192, 4
    kp = random_scene(rng, 4, (h, w), height_range=(80, 150), border_margin=4)
    mirrored = kp[:, COCO_17.flip_map].copy()  # the mirrored image shows left joints as right ones
    vis = mirrored[..., 2] > 0
    mirrored[..., 0] = np.where(vis, (w - 1) - mirrored[..., 0], 0)
    t, tm = encode(kp, (h, w), s), encode(mirrored, (h, w), s)
    hm, paf = flip_outputs(torch.from_numpy(tm.heatmaps)[None], torch.from_numpy(tm.pafs)[None], COCO_17, True)
    assert torch.allclose(hm[0], torch.from_numpy(t.heatmaps), atol=1e-5)
    assert torch.allclose(paf[0], torch.from_numpy(t.pafs), atol=1e-5)


def test_eval_cli_on_real_coco_images(tmp_path, shared_data):
    from posestream.models.checkpoint import save_checkpoint
    from posestream.models.registry import build_model

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "lite.pt", build_model("lite", width=16))
    ann = shared_data / "coco-mini/annotations/person_keypoints_val2017.json"
    out = subprocess.run([sys.executable, "-m", "posestream", "eval", "--checkpoint", str(ckpt), "--data", str(ann),
                          "--images", str(shared_data / "coco-mini/val2017"), "--size", "128", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["images"] == 79 and stats["people"] == 68
    assert 0.0 <= stats["AP"] <= 1.0 and set(stats["per_joint_recall"]) == set(COCO_17.keypoints)
    results = json.loads(open(stats["results_json"]).read())
    assert len(results) == stats["detections"]
    bad = subprocess.run([sys.executable, "-m", "posestream", "eval", "--checkpoint", str(tmp_path / "missing.pt"),
                          "--data", str(ann), "--images", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "checkpoint not found" in bad.stderr and "Traceback" not in bad.stderr


def _vtest_frames(n, step=40):
    import av
    from conftest import VTEST

    out = []
    with av.open(str(VTEST)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return out


def _matches(alone, batched, min_score=0.2, px=2.5) -> None:
    """Every confident person of ``alone`` is in ``batched`` (and no other confident one), each
    keypoint found in both within ``px`` source pixels."""
    sure_a, sure_b = np.flatnonzero(alone.scores >= min_score), np.flatnonzero(batched.scores >= min_score)
    assert len(sure_a) == len(sure_b) > 0, (alone.scores, batched.scores)
    for i in sure_a:
        ka = alone.keypoints[i]
        best = None
        for j in sure_b:
            kb = batched.keypoints[j]
            both = (ka[:, 2] > 0) & (kb[:, 2] > 0)
            if both.sum() >= 0.8 * (ka[:, 2] > 0).sum():
                err = np.abs(ka[both, :2] - kb[both, :2]).max()
                best = err if best is None else min(best, err)
        assert best is not None and best <= px, (i, best)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_one_forward_call_for_several_images_finds_the_same_people(backend):
    """Predictor.batch (``--batch``), on every backend: images of one size give exactly the people
    of one call per image (PyTorch: within 0.01 px); images of other aspect ratios in one batch
    (each padded right/bottom to the largest input) give the same confident people within a few
    pixels, mapped back to their own pixels."""
    import cv2

    from posestream.models.fields import DecoderConfig
    from posestream.models.predictor import Predictor
    from posestream.stream.infer import InferConfig, load_network

    if backend == "openvino":
        pytest.importorskip("openvino")
    run, meta, _ = load_network(InferConfig(model="default", backend=backend, input_size=192))
    pred = Predictor(run, meta, DecoderConfig(), 192)
    imgs = _vtest_frames(3)
    one = [pred(im).poses for im in imgs]
    assert sum(len(p.scores) for p in one) >= 3   # pedestrians: not an empty comparison
    for a, b in zip(one, [p.poses for p in pred.batch(imgs)]):
        if backend == "torch":   # PyTorch's CPU convolutions pick other kernels for a batch: not bit for bit
            assert a.keypoints.shape == b.keypoints.shape
            np.testing.assert_allclose(a.keypoints, b.keypoints, atol=0.01, rtol=0)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=0)
        else:
            np.testing.assert_array_equal(a.keypoints, b.keypoints)
            np.testing.assert_array_equal(a.scores, b.scores)
    portrait = np.ascontiguousarray(cv2.resize(imgs[1], (288, 384))[:, :, ::-1][:, ::-1])  # another shape
    assert pred._prepare(portrait)[1].input_hw != pred._prepare(imgs[0])[1].input_hw
    mixed = pred.batch([imgs[0], portrait])
    assert mixed[0].record.image_hw == (576, 768) and mixed[1].record.image_hw == (384, 288)
    _matches(one[0], mixed[0].poses)
    _matches(pred(portrait).poses, mixed[1].poses)
