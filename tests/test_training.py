"""Trainer: config errors, exact resume, DDP (gloo, 2 processes), and a real learning test (slow)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
TRAIN_ANN = DATA / "coco-mini/annotations/person_keypoints_train2017.json"
TRAIN_IMG = DATA / "coco-mini/train2017"
BIG_PEOPLE = [535506, 84533, 30752]  # one large, fully labelled person each


def tiny_config(out, **over):
    cfg = {
        "model": {"name": "lite", "kwargs": {"width": 16}},
        "data": {"train": [{"ann": str(TRAIN_ANN), "images": str(TRAIN_IMG)}], "val": None, "input_size": 128,
                 "workers": 0, "subset": BIG_PEOPLE[:2]},
        "loss": {"heatmap_loss": "weighted_l2"},
        "optim": {"lr": 1e-3, "batch_size": 2, "warmup_steps": 2},
        "train": {"out_dir": str(out), "max_steps": 4, "log_every": 1, "ckpt_every": 100, "eval_every": 1000,
                  "image_every": 2, "seed": 3},
    }
    for k, v in over.items():
        cfg[k].update(v)
    return cfg


def test_config_errors_name_the_key(tmp_path):
    from posestream.training.config import ConfigError, TrainConfig, load_config

    with pytest.raises(ConfigError, match=r"unknown key optim\.learning_rate"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        TrainConfig.from_dict({"trian": {}})
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(tiny_config(tmp_path / "o")))
    cfg = load_config(p, ["optim.lr=5e-4", "train.max_steps=7"])
    assert cfg.optim.lr == 5e-4 and cfg.train.max_steps == 7
    r = subprocess.run([sys.executable, "-m", "posestream", "train", "--config", str(p), "optim.lr_decay=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown key optim.lr_decay" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "posestream", "train", "--config", str(tmp_path / "none.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_resume_reproduces_the_next_steps_bit_for_bit(tmp_path):
    from posestream.training.config import TrainConfig
    from posestream.training.trainer import Trainer

    straight = Trainer(TrainConfig.from_dict(tiny_config(tmp_path / "a")), progress=False)
    straight.fit()
    straight.close()
    first = Trainer(TrainConfig.from_dict(tiny_config(tmp_path / "b")), progress=False)
    first.fit(stop_at=2)
    first.close()
    assert first.step == 2 and (tmp_path / "b/state.pt").is_file()
    resumed = Trainer(TrainConfig.from_dict(tiny_config(tmp_path / "b")), progress=False)
    assert resumed.step == 2
    resumed.fit()
    resumed.close()
    assert straight.history["loss"] == resumed.history["loss"]  # floats compared exactly
    assert len(straight.history["loss"]) == 4
    for name in ("last.pt", "curves.png", "history.json"):
        assert (tmp_path / "b" / name).is_file()
    assert any((tmp_path / "b/tb").iterdir())


def test_ddp_two_processes_gloo(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(tiny_config(tmp_path / "ddp", train={"max_steps": 2}, data={"subset": BIG_PEOPLE})))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                        "-m", "posestream", "train", "--config", str(p), "--no-progress"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    import torch

    state = torch.load(tmp_path / "ddp/state.pt", weights_only=True)
    assert state["step"] == 2


@pytest.mark.slow
def test_lite_learns_real_people_to_coco_ap_08(tmp_path):
    """Targets, loss, decoder and evaluation agree: overfit 3 real COCO images, score them."""
    ann = json.loads(TRAIN_ANN.read_text())
    keep = set(BIG_PEOPLE)
    small = {**ann, "images": [i for i in ann["images"] if i["id"] in keep],
             "annotations": [a for a in ann["annotations"] if a["image_id"] in keep]}
    ann_path = tmp_path / "three.json"
    ann_path.write_text(json.dumps(small))
    cfg = tiny_config(tmp_path / "learn",
                      model={"kwargs": {}},
                      data={"subset": None, "train": [{"ann": str(ann_path), "images": str(TRAIN_IMG)}],
                            "val": {"ann": str(ann_path), "images": str(TRAIN_IMG)}, "input_size": 256,
                            "augment": {"scale_range": [0.9, 1.1], "max_rotation": 5, "flip_prob": 0.5}},
                      optim={"lr": 3e-3, "batch_size": 6, "warmup_steps": 50},
                      train={"max_steps": 1500, "eval_every": 500, "log_every": 50})
    p = tmp_path / "learn.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "posestream", "train", "--config", str(p), "--no-progress"],
                       capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "posestream", "eval", "--checkpoint", str(tmp_path / "learn/best.pt"),
                        "--data", str(ann_path), "--images", str(TRAIN_IMG), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["AP"] >= 0.8, stats


def test_numbers_and_types_are_checked():
    from posestream.training.config import ConfigError, TrainConfig

    c = TrainConfig.from_dict({"optim": {"lr": "1e-4", "batch_size": 4}})
    assert c.optim.lr == 1e-4
    with pytest.raises(ConfigError, match="optim.batch_size must be an integer"):
        TrainConfig.from_dict({"optim": {"batch_size": "eight"}})
    with pytest.raises(ConfigError, match="optim.lr must be a number"):
        TrainConfig.from_dict({"optim": {"lr": "fast"}})


def test_ablation_prints_configs_side_by_side(tmp_path):
    ann = json.loads(TRAIN_ANN.read_text())
    keep = set(BIG_PEOPLE[:1])
    small = {**ann, "images": [i for i in ann["images"] if i["id"] in keep],
             "annotations": [a for a in ann["annotations"] if a["image_id"] in keep]}
    (tmp_path / "one.json").write_text(json.dumps(small))
    paths = []
    for name, loss in (("plain", {"heatmap_loss": "weighted_l2"}), ("okhm", {"heatmap_loss": "weighted_l2", "okhm": True})):
        cfg = tiny_config(tmp_path / name, loss=loss, data={"val": {"ann": str(tmp_path / "one.json"), "images": str(TRAIN_IMG)}})
        cfg["loss"] = loss
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "posestream", "ablate", *map(str, paths), "--steps", "2", "--out",
                        str(tmp_path / "abl"), "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)
    assert [Path(x["config"]).stem for x in rows] == ["plain", "okhm"]
    assert all(x["steps"] == 2 and 0 <= x["AP"] <= 1 for x in rows)
    assert (tmp_path / "abl/okhm/best.pt").is_file()


def test_mpii_pckh_evaluation_on_a_fixture(tmp_path):
    import cv2
    import numpy as np
    import torch

    from posestream.models.checkpoint import save_checkpoint
    from posestream.models.registry import build_model
    from posestream.training.evaluation.mpii import crop_matrix, heatmap_argmax

    # the crop maps the person's centre to the middle of the input, and back
    m = crop_matrix((100.0, 80.0), 200.0, 256)
    assert np.allclose(m @ [100.0, 80.0, 1.0], [128.0, 128.0])
    heat = np.zeros((2, 8, 8), np.float32)
    heat[0, 3, 5], heat[0, 3, 6] = 1.0, 0.5
    heat[1, 6, 1] = 1.0
    assert np.allclose(heatmap_argmax(heat)[:, :2], [[5.25, 3.0], [1.0, 6.0]])
    rng = np.random.default_rng(0)
    records = []
    for i in range(2):
        img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{i:09d}.jpg"), img)
        joints = [[float(100 + 5 * j), float(60 + 8 * j)] for j in range(16)]
        records.append({"image": f"{i:09d}.jpg", "joints": joints, "joints_vis": [1] * 16, "center": [160.0, 120.0],
                        "scale": 1.0, "headboxes": [[90.0, 40.0], [130.0, 80.0]]})
    (tmp_path / "valid.json").write_text(json.dumps(records))
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "hg.pt", build_model("stacked_hourglass_mpii", num_stacks=1, features=32))
    r = subprocess.run([sys.executable, "-m", "posestream", "eval", "--dataset", "mpii", "--checkpoint", str(ckpt),
                        "--data", str(tmp_path / "valid.json"), "--images", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads(r.stdout)
    assert stats["people"] == 2 and set(stats["per_joint"]) >= {"head_top", "left_wrist"}
    assert 0.0 <= stats["PCKh"] <= 1.0
