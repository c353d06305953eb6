import json
import subprocess
import sys

import numpy as np
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
