"""Training data: COCO/MPII loaders, augmentation geometry, the target-rendering dataset."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from posestream.models.skeleton import COCO_17, MPII_16
from posestream.training.data import (AugmentConfig, CocoKeypoints, ConcatKeypoints, MPIIKeypoints, PoseTrainDataset,
                           eval_affine, random_affine, training_mix_pairs)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MINI_JSON = DATA / "coco-mini" / "annotations" / "person_keypoints_train2017.json"
MINI_IMAGES = DATA / "coco-mini" / "train2017"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
NO_JITTER = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}


def fake_meta(stage_strides=(4, 4), background=True, with_pafs=True) -> dict:
    return {"stride": stage_strides[-1], "stage_strides": list(stage_strides), "skeleton": "coco17",
            "background": background, "with_pafs": with_pafs, "input_multiple": 8, **IMAGENET}


@pytest.fixture(scope="module")
def mini_json() -> dict:
    if not MINI_JSON.is_file():
        pytest.fail(f"shared data not found: {MINI_JSON}")
    with open(MINI_JSON) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def mini() -> CocoKeypoints:
    return CocoKeypoints(MINI_JSON, MINI_IMAGES)


# ---------------------------------------------------------------- COCO

def test_coco_mini_counts_and_keypoints_match_json(mini, mini_json):
    labelled = [a for a in mini_json["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    assert len(mini) == len(mini_json["images"]) == 80
    assert sum(mini.num_people(i) for i in range(len(mini))) == len(labelled) == 86
    # the image with the most labelled people: keypoints equal the json's, in json order
    i = max(range(len(mini)), key=mini.num_people)
    item = mini[i]
    info = mini_json["images"][i]
    expect = np.array([a["keypoints"] for a in labelled if a["image_id"] == info["id"]], np.float32).reshape(-1, 17, 3)
    assert item["image_id"] == info["id"] and item["file"].endswith(info["file_name"])
    assert item["image"].shape == (info["height"], info["width"], 3) and item["image"].dtype == np.uint8
    assert item["keypoints"].dtype == np.float32 and item["keypoints"].shape == (mini.num_people(i), 17, 3)
    np.testing.assert_array_equal(item["keypoints"], expect)
    assert set(np.unique(item["keypoints"][..., 2])) <= {0.0, 1.0, 2.0}


def test_coco_mini_ignore_covers_crowd_and_unlabelled_people(mini, mini_json):
    from pycocotools.coco import COCO

    coco = COCO(str(MINI_JSON))
    crowd_images = {a["image_id"] for a in mini_json["annotations"] if a["iscrowd"]}
    no_kp_images = {a["image_id"] for a in mini_json["annotations"] if not a["iscrowd"] and a["num_keypoints"] == 0}
    both = sorted(crowd_images & no_kp_images)
    assert both, "coco-mini train2017 should have an image with a crowd region and unlabelled people"
    image_id = both[0]
    index = mini.image_ids().index(image_id)
    ignore = mini[index]["ignore"]
    assert ignore.dtype == bool
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    union = np.zeros_like(ignore)
    for a in anns:
        m = coco.annToMask(a).astype(bool)
        if a["iscrowd"]:
            assert m.sum() > 0 and ignore[m].all(), "crowd region not masked"
            union |= m
        elif a["num_keypoints"] == 0:
            assert ignore[m].all(), f"person {a['id']} without keypoints not masked"
            union |= m
    # exactly the crowd + unlabelled regions: labelled people and the rest stay in the loss
    assert ignore.sum() == union.sum()
    np.testing.assert_array_equal(ignore, union)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _tiny_coco(tmp_path: Path, missing_second: bool = False) -> tuple[Path, Path, dict]:
    """Two generated images; one labelled person, a compressed-RLE crowd, a polygon crowd,
    a bbox-only unlabelled person."""
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    a = np.zeros((60, 80, 3), np.uint8)
    a[:] = (30, 60, 90)
    cv2.rectangle(a, (10, 10), (30, 50), (255, 255, 255), -1)
    _write_png(img_dir / "a.png", a)
    if not missing_second:
        _write_png(img_dir / "b.png", np.full((40, 50, 3), 200, np.uint8))
    crowd = np.zeros((60, 80), np.uint8, order="F")
    crowd[40:55, 50:75] = 1
    rle = mask_utils.encode(crowd)
    kp = [0.0] * 51
    kp[0:3] = (20.0, 12.0, 2)            # nose
    kp[27:30] = (12.0, 30.0, 1)          # left wrist, labelled not visible
    data = {
        "images": [{"id": 7, "file_name": "a.png", "height": 60, "width": 80},
                   {"id": 8, "file_name": "b.png", "height": 40, "width": 50}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_17.keypoints), "skeleton": []}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "num_keypoints": 2, "keypoints": kp,
             "bbox": [10, 10, 20, 40], "segmentation": [[10, 10, 30, 10, 30, 50, 10, 50]]},
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 1, "num_keypoints": 0, "keypoints": [0] * 51,
             "bbox": [50, 40, 25, 15], "segmentation": {"size": [60, 80], "counts": rle["counts"].decode()}},
            {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 0, "num_keypoints": 0, "keypoints": [0] * 51,
             "bbox": [60.0, 2.0, 10.0, 8.0]},
            {"id": 4, "image_id": 8, "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
             "bbox": [5, 5, 10, 10], "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]},
        ],
    }
    ann = tmp_path / "tiny.json"
    ann.write_text(json.dumps(data))
    return ann, img_dir, data


def test_tiny_coco_json_loads_with_every_ignore_form(tmp_path):
    ann, img_dir, _ = _tiny_coco(tmp_path)
    ds = CocoKeypoints(ann, img_dir)
    assert len(ds) == 2
    a, b = ds[0], ds[1]
    assert a["image_id"] == 7 and a["image"].shape == (60, 80, 3)
    assert tuple(a["image"][20, 20]) == (255, 255, 255) and tuple(a["image"][5, 5]) == (30, 60, 90)  # RGB order
    assert a["keypoints"].shape == (1, 17, 3)
    np.testing.assert_array_equal(a["keypoints"][0, 0], (20, 12, 2))
    np.testing.assert_array_equal(a["keypoints"][0, 9], (12, 30, 1))
    expect = np.zeros((60, 80), bool)
    expect[40:55, 50:75] = True              # compressed RLE crowd
    expect[2:10, 60:70] = True               # bbox of the unlabelled person
    np.testing.assert_array_equal(a["ignore"], expect)
    assert b["keypoints"].shape == (0, 17, 3)
    assert b["ignore"][5:15, 5:15].all() and b["ignore"].sum() == pytest.approx(100, abs=25)
    assert not a["ignore"][10:50, 10:30].any()  # the labelled person is not ignored


def test_missing_files_raise_clear_errors(tmp_path):
    ann, img_dir, _ = _tiny_coco(tmp_path, missing_second=True)
    ds = CocoKeypoints(ann, img_dir)
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*b\.png"):
        ds[1]
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoKeypoints(tmp_path / "nope.json", img_dir)


def test_concat_real_training_mix():
    pairs = training_mix_pairs(DATA)
    for ann_file, image_dir in pairs:
        assert ann_file.is_file() and image_dir.is_dir()
    ds = ConcatKeypoints.from_pairs(pairs)
    sizes = [len(p) for p in ds.parts]
    assert sizes == [700, 1620, 80] and len(ds) == 2400
    assert sum(p.num_people(i) for p in ds.parts for i in range(len(p))) == 1183 + 3123 + 86
    first2 = ds[700]
    assert "pseudo2" in first2["file"] and first2["image_id"] == ds.parts[1][0]["image_id"]
    assert "coco-mini" in ds[-1]["file"]


# ---------------------------------------------------------------- MPII

def _mpii_fixture(tmp_path: Path, with_boxes: bool = True) -> tuple[Path, list]:
    img_dir = tmp_path / "mpii_images"
    img_dir.mkdir(exist_ok=True)
    _write_png(img_dir / "000000001.png", np.full((120, 160, 3), 50, np.uint8))
    _write_png(img_dir / "000000002.png", np.full((100, 100, 3), 90, np.uint8))
    rng = np.random.default_rng(0)
    records = []
    for name, n in (("000000001.png", 2), ("000000002.png", 1)):
        for _ in range(n):
            joints = rng.uniform(10, 90, size=(16, 2)).round(1)
            vis = np.ones(16, int)
            vis[[3, 9]] = 0
            joints[vis == 0] = -1
            rec = {"image": name, "joints": joints.tolist(), "joints_vis": vis.tolist(),
                   "center": [50.0, 60.0], "scale": 0.4}
            if with_boxes:
                x1, y1 = rng.uniform(10, 30, size=2).round(1)
                rec["headboxes"] = [[x1, y1], [x1 + 12.0, y1 + 16.0]]
            records.append(rec)
    ann = tmp_path / "mpii_val.json"
    ann.write_text(json.dumps(records))
    return ann, records


def test_mpii_fixture_loads_with_head_size(tmp_path):
    ann, records = _mpii_fixture(tmp_path)
    ds = MPIIKeypoints(ann, tmp_path / "mpii_images")
    assert ds.skeleton is MPII_16 and len(ds) == 2
    item = ds[0]
    assert item["image"].shape == (120, 160, 3) and item["image_id"] == 1
    assert item["keypoints"].shape == (2, 16, 3) and item["keypoints"].dtype == np.float32
    assert not item["ignore"].any()
    # 1-based file coordinates -> 0-based pixels; unannotated joints are (0, 0, 0)
    np.testing.assert_allclose(item["keypoints"][1, 0, :2], np.array(records[1]["joints"][0]) - 1, atol=1e-4)
    assert item["keypoints"][0, 0, 2] == 2 and np.all(item["keypoints"][:, [3, 9]] == 0)
    np.testing.assert_allclose(item["center"], [[49.0, 59.0]] * 2)
    np.testing.assert_allclose(item["scale"], [0.4, 0.4])
    np.testing.assert_allclose(item["head_size"], [0.6 * 20.0] * 2, rtol=1e-5)  # 0.6 * |(12, 16)|
    assert ds[1]["keypoints"].shape == (1, 16, 3) and ds[1]["image_id"] == 2


def test_mpii_separate_headboxes_in_mpii_layout(tmp_path):
    ann, _ = _mpii_fixture(tmp_path, with_boxes=False)
    assert np.isnan(MPIIKeypoints(ann, tmp_path / "mpii_images")[0]["head_size"]).all()
    boxes = np.zeros((2, 2, 3))              # headboxes_src: [corner][xy][record]
    boxes[1, 0, :] = (3.0, 6.0, 9.0)         # width per record
    boxes[1, 1, :] = (4.0, 8.0, 12.0)        # height per record
    ds = MPIIKeypoints(ann, tmp_path / "mpii_images", headboxes=boxes)
    np.testing.assert_allclose(ds[0]["head_size"], [3.0, 6.0], rtol=1e-5)
    np.testing.assert_allclose(ds[1]["head_size"], [9.0], rtol=1e-5)
    np.save(tmp_path / "boxes.npy", np.transpose(boxes, (2, 0, 1)))
    np.testing.assert_allclose(MPIIKeypoints(ann, tmp_path / "mpii_images", headboxes=tmp_path / "boxes.npy")[1]
                               ["head_size"], [9.0], rtol=1e-5)
    with pytest.raises(ValueError, match="head boxes"):
        MPIIKeypoints(ann, tmp_path / "mpii_images", headboxes=np.zeros((5, 4)))


# ---------------------------------------------------------------- augmentation

def test_augment_config_rejects_unknown_keys_and_bad_values():
    cfg = AugmentConfig.from_dict({"input_size": 128, "scale_range": [0.5, 1.5]})
    assert cfg.input_size == 128 and cfg.scale_range == (0.5, 1.5)
    with pytest.raises(ValueError, match="max_rotaton"):
        AugmentConfig.from_dict({"max_rotaton": 10})
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.2, 0.8))


def _centroid(channel: np.ndarray) -> np.ndarray:
    w = channel.astype(np.float64)
    ys, xs = np.mgrid[: w.shape[0], : w.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


@pytest.mark.parametrize("image_hw", [(200, 300), (480, 640)])  # 640 px also takes the pre-shrink path
@pytest.mark.parametrize("flip", [False, True])
def test_affine_keeps_labels_on_the_markers(image_hw, flip):
    h, w = image_hw
    lw, rw = COCO_17.index("left_wrist"), COCO_17.index("right_wrist")
    image = np.zeros((h, w, 3), np.uint8)
    kp = np.zeros((1, 17, 3), np.float32)
    points = {lw: (int(w * 0.35), int(h * 0.4), 0), rw: (int(w * 0.7), int(h * 0.6), 1)}  # (x, y, colour channel)
    for k, (x, y, ch) in points.items():
        image[y - 2:y + 3, x - 2:x + 3, ch] = 255   # red marker = left wrist, green = right wrist
        kp[0, k] = (x, y, 2)
    cfg = AugmentConfig(input_size=256, flip_prob=1.0 if flip else 0.0, **NO_JITTER)
    angles = []
    for seed in range(4):
        out, rec = random_affine({"image": image, "keypoints": kp}, cfg, np.random.default_rng(seed), COCO_17)
        assert rec.flipped == flip and out["image"].shape == (256, 256, 3)
        angles.append(np.degrees(np.arctan2(abs(rec.matrix[1, 0]), abs(rec.matrix[1, 1]))))
        red, green = _centroid(out["image"][..., 0]), _centroid(out["image"][..., 1])
        # after a flip the red (left) wrist is seen where a right wrist is: it carries the right label
        at_red, at_green = (rw, lw) if flip else (lw, rw)
        assert out["keypoints"][0, at_red, 2] == 2 and out["keypoints"][0, at_green, 2] == 2
        # measured error <= 0.1 px; 0.5 px still catches an off-by-one pixel
        assert np.linalg.norm(out["keypoints"][0, at_red, :2] - red) < 0.5, (seed, out["keypoints"][0, at_red], red)
        assert np.linalg.norm(out["keypoints"][0, at_green, :2] - green) < 0.5
        assert np.all(out["keypoints"][0, [0, 5, 6], 2] == 0)
        back = rec.keypoints_to_image(out["keypoints"], COCO_17)
        np.testing.assert_allclose(back[0, [lw, rw], :2], kp[0, [lw, rw], :2], atol=1e-3)
    assert max(angles) > 5.0  # the seeds did rotate


def test_flip_is_the_mirror_image_of_the_same_draw():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    ignore = np.zeros((90, 120), bool)
    ignore[10:30, 20:70] = True
    kp = np.zeros((2, 17, 3), np.float32)
    kp[:, :, :2] = rng.uniform(20, 80, size=(2, 17, 2))
    kp[:, :, 2] = 2
    sample = {"image": image, "keypoints": kp, "ignore": ignore}
    for seed in range(3):
        plain, _ = random_affine(sample, AugmentConfig(input_size=96, flip_prob=0.0, **NO_JITTER),
                                 np.random.default_rng(seed))
        flipped, rec = random_affine(sample, AugmentConfig(input_size=96, flip_prob=1.0, **NO_JITTER),
                                     np.random.default_rng(seed))
        assert rec.flipped
        assert np.abs(flipped["image"].astype(int) - plain["image"][:, ::-1].astype(int)).max() <= 1
        np.testing.assert_array_equal(flipped["ignore"], plain["ignore"][:, ::-1])
        mirrored = plain["keypoints"][:, COCO_17.flip_map].copy()
        mirrored[..., 0] = np.where(mirrored[..., 2] > 0, 95 - mirrored[..., 0], 0)
        np.testing.assert_allclose(flipped["keypoints"], mirrored, atol=1e-3)


def test_keypoints_leaving_the_output_become_unlabelled():
    image = np.zeros((100, 100, 3), np.uint8)
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, 0] = (50, 50, 2)
    kp[0, 1] = (99.4, 0, 2)
    cfg = AugmentConfig(input_size=64, scale_range=(2.0, 2.0), max_rotation=0, max_translation=0, flip_prob=0,
                        **NO_JITTER)
    out, _ = random_affine({"image": image, "keypoints": kp}, cfg, np.random.default_rng(0))
    assert out["keypoints"][0, 0, 2] == 2 and np.all(out["keypoints"][0, 1] == 0)


def test_ignore_mask_warps_with_the_image():
    image = np.zeros((240, 320, 3), np.uint8)
    image[60:140, 100:180] = 255
    ignore = np.zeros((240, 320), bool)
    ignore[60:140, 100:180] = True
    cfg = AugmentConfig(input_size=192, **NO_JITTER)
    for seed in range(3):
        out, _ = random_affine({"image": image, "keypoints": np.zeros((0, 17, 3)), "ignore": ignore}, cfg,
                               np.random.default_rng(seed))
        drawn, masked = out["image"][..., 0] > 127, out["ignore"]
        assert masked.dtype == bool and masked.shape == (192, 192)
        iou = (drawn & masked).sum() / (drawn | masked).sum()
        assert iou > 0.9, (seed, iou)
    # an all-ignored photo: only its footprint is ignored, never the padding around it
    cfg = AugmentConfig(input_size=160, scale_range=(0.8, 0.8), max_rotation=0, max_translation=0, **NO_JITTER)
    out, rec = random_affine({"image": image, "keypoints": np.zeros((0, 17, 3)), "ignore": np.ones((240, 320), bool)},
                             cfg, np.random.default_rng(0))
    assert not out["ignore"][0, 0] and not out["ignore"][-1, -1] and out["ignore"][80, 80]
    assert out["ignore"].sum() == pytest.approx(240 * 320 * rec.scale ** 2, rel=0.03)


def test_eval_path_is_deterministic_fit_and_pad():
    image = np.full((100, 200, 3), 255, np.uint8)
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, 0] = (199, 99, 2)
    cfg = AugmentConfig(input_size=64)
    out, rec = eval_affine({"image": image, "keypoints": kp}, cfg, fill=(0, 0, 0))
    out2, _ = eval_affine({"image": image, "keypoints": kp}, cfg, fill=(0, 0, 0))
    np.testing.assert_array_equal(out["image"], out2["image"])
    assert not rec.flipped and rec.scale == pytest.approx(64 / 200)
    assert out["image"][32, :, 0].min() > 200 and out["image"][0, 32, 0] == 0  # width fills, height is padded
    np.testing.assert_allclose(rec.to_image(out["keypoints"])[0, 0, :2], (199, 99), atol=1e-3)


# ---------------------------------------------------------------- PoseTrainDataset

@pytest.fixture(scope="module")
def train_ds(mini) -> PoseTrainDataset:
    return PoseTrainDataset(mini, fake_meta(), AugmentConfig(input_size=128), sigma=2.0, paf_width=1.0, seed=3)


def test_dataset_shapes_and_normalisation(train_ds, mini):
    i = max(range(len(mini)), key=mini.num_people)
    item = train_ds[i]
    assert item["image"].shape == (3, 128, 128) and item["image"].dtype == torch.float32
    assert set(item["targets"]) == {"s4"}
    t = item["targets"]["s4"]
    assert t["heatmaps"].shape == (18, 32, 32) and t["pafs"].shape == (40, 32, 32) and t["mask"].shape == (32, 32)
    assert all(v.dtype == torch.float32 for v in t.values())
    assert item["image_id"].dtype == torch.int64 and int(item["image_id"]) == mini.image_ids()[i]
    sample, _ = train_ds.sample(i)
    rgb = (item["image"].numpy().transpose(1, 2, 0) * IMAGENET["std"] + IMAGENET["mean"]) * 255
    np.testing.assert_allclose(rgb, sample["image"], atol=0.01)
    torch.testing.assert_close(t["heatmaps"][-1], 1 - t["heatmaps"][:-1].amax(0))


def _check_peaks(ds: PoseTrainDataset, mini: CocoKeypoints, i: int) -> bool:
    raw = mini[i]["keypoints"]
    hm = ds[i]["targets"]["s4"]["heatmaps"].numpy()
    _, rec = ds.sample(i)
    # the transform applied here, independently of the augmentation's keypoint code
    pts = rec.to_output(raw)
    if rec.flipped:
        pts = pts[:, COCO_17.flip_map]
    inside = (pts[..., 2] > 0) & np.all((pts[..., :2] >= -0.5) & (pts[..., :2] < 127.5), axis=-1)
    assert inside.sum() >= 10
    for n, k in zip(*np.nonzero(inside)):
        x, y = pts[n, k, :2]
        cell = (min(int((y + 0.5) // 4), 31), min(int((x + 0.5) // 4), 31))
        assert hm[k][cell] > 0.9, (n, k, x, y)   # nearest cell is within 0.5 cell per axis: >= exp(-1/16)
    for k in np.unique(np.nonzero(inside)[1]):
        r, c = np.unravel_index(hm[k].argmax(), hm[k].shape)
        centre = np.array([c * 4 + 1.5, r * 4 + 1.5])
        assert np.min(np.linalg.norm(pts[inside[:, k], k, :2] - centre, axis=1)) <= 4 * 1.5
    return rec.flipped


def test_heatmap_peaks_at_transformed_keypoints(train_ds, mini):
    i = max(range(len(mini)), key=mini.num_people)
    seen = set()
    try:
        for epoch in range(8):  # until both a flipped and an unflipped draw were checked
            train_ds.set_epoch(epoch)
            seen.add(_check_peaks(train_ds, mini, i))
            if len(seen) == 2:
                break
    finally:
        train_ds.set_epoch(0)
    assert seen == {False, True}


def test_multi_stride_targets(mini):
    ds = PoseTrainDataset(mini, fake_meta((2, 4, 8), background=False, with_pafs=False), AugmentConfig(input_size=128))
    t = ds[0]["targets"]
    assert set(t) == {"s2", "s4", "s8"}
    for s in (2, 4, 8):
        n = 128 // s
        assert set(t[f"s{s}"]) == {"heatmaps", "mask"}
        assert t[f"s{s}"]["heatmaps"].shape == (17, n, n) and t[f"s{s}"]["mask"].shape == (n, n)
    with pytest.raises(ValueError, match="multiple"):
        PoseTrainDataset(mini, fake_meta((4, 8)), AugmentConfig(input_size=100))
    with pytest.raises(ValueError, match="skeleton"):
        PoseTrainDataset(mini, {**fake_meta(), "skeleton": "mpii16"}, AugmentConfig(input_size=128))


def _assert_items_equal(a: dict, b: dict) -> None:
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["image_id"], b["image_id"])
    for key in a["targets"]:
        for name in a["targets"][key]:
            assert torch.equal(a["targets"][key][name], b["targets"][key][name]), (key, name)


def test_same_seed_epoch_index_is_reproducible(mini):
    ds = PoseTrainDataset(mini, fake_meta(), AugmentConfig(input_size=128), seed=5)
    first = ds[2]
    _assert_items_equal(first, ds[2])
    _assert_items_equal(first, PoseTrainDataset(mini, fake_meta(), AugmentConfig(input_size=128), seed=5)[2])
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["image"], first["image"])
    ds.set_epoch(0)
    _assert_items_equal(first, ds[2])
    assert not torch.equal(PoseTrainDataset(mini, fake_meta(), AugmentConfig(input_size=128), seed=6)[2]["image"],
                           first["image"])


def test_dataloader_with_two_persistent_workers_follows_set_epoch(mini):
    ds = PoseTrainDataset(mini, fake_meta(), AugmentConfig(input_size=128), seed=1)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [0, 1, 2, 3]), batch_size=2, num_workers=2,
                                         persistent_workers=True)
    batches = {}
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        batches[epoch] = next(iter(loader))
    b = batches[0]
    assert b["image"].shape == (2, 3, 128, 128) and b["image_id"].shape == (2,)
    assert b["targets"]["s4"]["heatmaps"].shape == (2, 18, 32, 32) and b["targets"]["s4"]["pafs"].shape[:2] == (2, 40)
    for epoch in (0, 1):  # the workers rendered what the main process renders for that epoch
        ds.set_epoch(epoch)
        torch.testing.assert_close(batches[epoch]["image"][1], ds[1]["image"], rtol=0, atol=0)
    assert not torch.equal(batches[0]["image"], batches[1]["image"])
