"""movenet_thunder (MoveNet SinglePose Thunder, from ../shared/data/init/thunder/SPEC.md) and the
top-down refinement: parity with the TFJS reference, the decoding, strict loading, the shipped
checkpoint, its ONNX export, crops that round-trip, the fusion, the cap, and the kind checks."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posestream.models.nets.thunder import THUNDER_HEADS, centre_weight, decode
from posestream.models.refine import (RefineConfig, Refiner, crop_matrix, crops_to_image, fuse, make_crops,
                                      order_for_cap, person_boxes, suppress_duplicates, torso_boxes)
from posestream.models.registry import build_model, list_models, model_kind

REPO = Path(__file__).resolve().parents[1]
THUNDER = (REPO / ".." / "shared" / "data" / "init" / "thunder").resolve()
PARITY = THUNDER / "parity"
COCO = (REPO / ".." / "shared" / "data" / "coco-mini").resolve()
SHIPPED = REPO / "models" / "weights" / "movenet_thunder.pt"
TAPS = ("C2", "C3", "C4", "C5", "P4", "P3", "P2")
TOLERANCE = 1e-3  # parity/README.md: max|ours - expected| <= 1e-3 * max|expected|


@pytest.fixture(scope="module")
def thunder():
    model = build_model("movenet_thunder").eval()
    assert model.load_pretrained(THUNDER) == ["backbone+fpn", "heads"]
    return model


@pytest.fixture(scope="module")
def refiner():
    from posestream.stream.infer import InferConfig, load_network

    run, meta, _ = load_network(InferConfig(model=str(SHIPPED)), kind="topdown")
    return Refiner(run, meta, RefineConfig())


def _rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def test_registered_as_a_topdown_model():
    assert "movenet_thunder" in list_models("topdown") and "movenet_thunder" not in list_models("bottomup")
    assert model_kind("movenet_thunder") == "topdown" and model_kind("movenet_paf") == "bottomup"
    with torch.device("meta"):
        m = build_model("movenet_thunder")
    assert sum(p.numel() for p in m.parameters()) == 6_226_046  # SPEC.md: 6,226,046 parameters
    assert m.meta()["kind"] == "topdown" and m.meta()["outputs"] == list(THUNDER_HEADS)


@pytest.mark.parametrize("i", [0, 1])
def test_network_matches_the_tfjs_reference(thunder, i):
    x = torch.from_numpy(np.load(PARITY / f"input_{i}.npy"))
    with torch.no_grad():
        feats = thunder.backbone.features(x)
        heads = thunder(x)
    for tap in TAPS:
        expected = np.load(PARITY / f"expected_{i}_{tap}.npy")
        assert feats[tap].shape == expected.shape, tap
        err = _rel(feats[tap].numpy(), expected)
        assert err <= TOLERANCE and err <= 1e-4, f"{tap}: relative error {err:.2e} (this port measured <= 6e-6)"
    for name, out in zip(THUNDER_HEADS, heads):
        expected = np.load(PARITY / f"expected_{i}_head_{name}.npy")
        assert out.shape == expected.shape == (1, THUNDER_HEADS[name], 64, 64)
        assert _rel(out.numpy(), expected) <= 1e-4, name


@pytest.mark.parametrize("i", [0, 1])
def test_decoding_is_the_graphs_own(thunder, i):
    expected = np.load(PARITY / f"expected_{i}_output.npy")[:, 0]  # (1, 17, 3)
    ref_heads = [np.load(PARITY / f"expected_{i}_head_{n}.npy") for n in THUNDER_HEADS]
    assert np.abs(decode(*ref_heads) - expected).max() <= 1e-5  # the pure function on the reference heads
    with torch.no_grad():
        ours = decode(*[t.numpy() for t in thunder(torch.from_numpy(np.load(PARITY / f"input_{i}.npy")))])
    assert np.abs(ours - expected).max() <= TOLERANCE
    assert ((ours[..., 2] >= 0) & (ours[..., 2] <= 1)).all()


def test_decoding_prefers_the_centred_person():
    """Two equal centre peaks: the one nearer the crop's centre wins (SPEC §3's weighting)."""
    heat = np.full((1, 17, 64, 64), -10.0, np.float32)
    centre = np.full((1, 1, 64, 64), -10.0, np.float32)
    centre[0, 0, 10, 10] = centre[0, 0, 30, 34] = 5.0
    regress = np.zeros((1, 34, 64, 64), np.float32)
    heat[0, :, 30, 34] = 3.0
    heat[0, :, 10, 10] = 3.0
    out = decode(heat, centre, regress, np.zeros((1, 34, 64, 64), np.float32))
    assert np.allclose(out[0, :, 0], 30 / 64) and np.allclose(out[0, :, 1], 34 / 64)
    w = centre_weight(64, 64)
    assert w[32, 32] == pytest.approx(1 / 1.8) and w[0, 0] < w[16, 16] < w[32, 32]


def test_npz_loads_strictly(tmp_path):
    with np.load(THUNDER / "movenet_thunder.npz") as z:
        arrays = {k: z[k] for k in z.files}
    assert len(arrays) == 141
    arrays.pop("heads.center.out.bias")
    np.savez(tmp_path / "movenet_thunder.npz", **arrays)
    with pytest.raises(RuntimeError, match="center.out.bias"):
        build_model("movenet_thunder").load_pretrained(tmp_path)


def test_shipped_checkpoint_is_the_published_weights():
    from posestream.models.checkpoint import load_checkpoint

    assert SHIPPED.is_file() and SHIPPED.stat().st_size <= 15 * 2**20
    model, meta = load_checkpoint(SHIPPED)
    assert meta["arch"] == "movenet_thunder" and meta["kind"] == "topdown" and meta["licence"] == "Apache-2.0"
    assert "Google" in meta["note"] and meta["input_size"] == 256
    state = model.state_dict()
    with np.load(THUNDER / "movenet_thunder.npz") as z:
        for k in z.files:
            ours = state[k if k.startswith("heads.") else "backbone." + k]
            assert np.array_equal(ours.half().numpy(), z[k]), k


def test_onnx_export_on_demand_matches_pytorch(thunder, tmp_path):
    from posestream.stream.infer import InferConfig, load_network

    run, meta, desc = load_network(InferConfig(model=str(SHIPPED), cache_dir=str(tmp_path), backend="onnxruntime"),
                                  kind="topdown")
    assert "ONNX Runtime" in desc and list(tmp_path.glob("movenet_thunder-*.onnx"))
    x = np.concatenate([np.load(PARITY / f"input_{i}.npy") for i in (0, 1)])  # a batch of two crops
    got = run(x)
    with torch.no_grad():
        ref = [t.numpy() for t in thunder(torch.from_numpy(x))]
    assert len(got) == 4 and all(_rel(a, b) <= TOLERANCE for a, b in zip(got, ref))
    expected = np.concatenate([np.load(PARITY / f"expected_{i}_output.npy")[:, 0] for i in (0, 1)])
    assert np.abs(decode(*got) - expected).max() <= TOLERANCE


def test_crop_round_trip():
    """A point of the image lands in the crop where the matrix says, and a crop position maps back."""
    rng = np.random.default_rng(0)
    image = np.zeros((300, 400, 3), np.uint8)
    cx, cy, side = 150.0, 120.0, 180.0
    pts = np.array([[100.0, 80.0], [210.0, 200.0], [150.0, 120.0]])
    for x, y in pts:
        image[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
    crop = make_crops(image, np.array([[cx, cy]]), np.array([side]), 256)[0]
    m = crop_matrix(cx, cy, side, 256)
    for x, y in pts:
        u, v = m @ np.array([x, y, 1.0])
        assert crop[int(round(v)), int(round(u))].max() > 100, (x, y)
        # the crop position (as Thunder reports it: y, x in [0, 1]) maps back to the image point
        yx = np.array([[[v / 256, u / 256, 0.9]]], np.float32)
        back = crops_to_image(yx, np.array([[cx, cy]], np.float32), np.array([side], np.float32))
        assert np.allclose(back[0, 0, :2], [x, y], atol=1e-3) and back[0, 0, 2] == pytest.approx(0.9)
    # the affine is the parity files' own
    spec = json.loads((PARITY / "images.json").read_text())[0]
    m = crop_matrix(*spec["crop_centre"], spec["crop_side"], 256)
    assert np.allclose(m, spec["affine_2x3"], atol=1e-9)
    # outside the image the crop is black
    corner = make_crops(image + 50, np.array([[0.0, 0.0]]), np.array([100.0]), 256)[0]
    assert corner[:100, :100].max() == 0 and corner[200:, 200:].min() == 50
    del rng


def test_refined_parity_crop_gives_the_reference_keypoints(refiner):
    """The refiner on the full COCO image with the parity crop's box gives the graph's output,
    mapped to image pixels."""
    spec = json.loads((PARITY / "images.json").read_text())[0]
    image = cv2.cvtColor(cv2.imread(str(COCO / "train2017" / spec["file"])), cv2.COLOR_BGR2RGB)
    centre = np.array([spec["crop_centre"]], np.float32)
    side = np.array([spec["crop_side"]], np.float32)
    got = refiner.refine_boxes(image, centre, side)[0]
    exp = crops_to_image(np.load(PARITY / "expected_0_output.npy")[:, 0], centre, side)[0]
    h, w = image.shape[:2]
    inside = (exp[:, 0] >= 0) & (exp[:, 1] >= 0) & (exp[:, 0] <= w - 1) & (exp[:, 1] <= h - 1)
    assert inside.sum() >= 10
    # the crop is made from the JPEG here and from TFJS's decode there: a few pixels at most
    assert np.abs(got[inside, :2] - exp[inside, :2]).max() < 0.01 * spec["crop_side"]
    assert (got[~inside] == 0).all()  # keypoints off the frame are not found


def test_boxes():
    kps = np.zeros((2, 17, 3), np.float32)
    kps[0, :, :2] = np.stack([np.linspace(100, 140, 17), np.linspace(50, 250, 17)], 1)
    kps[0, :, 2] = 0.8
    kps[1, 0] = [10, 10, 0.5]  # one keypoint: the 16-px floor
    c, s = person_boxes(kps, 1.25)
    assert np.allclose(c[0], [120, 150]) and s[0] == pytest.approx(250) and s[1] == 16
    c2, s2 = torso_boxes(kps)
    assert s2[0] > 0 and np.isfinite(c2).all()
    # a small floor from the skeleton: a person seen by two shoulders only is not blown up
    only = np.zeros((1, 17, 3), np.float32)
    only[0, 5] = [100, 100, 0.9]
    only[0, 6] = [144, 100, 0.9]  # shoulders 44 px apart: ~200 px tall
    assert person_boxes(only, 1.25, 0.6)[1][0] == pytest.approx(0.6 * 44 / 0.22, rel=1e-3)
    assert person_boxes(only, 1.25, 0.0)[1][0] == pytest.approx(55)


def test_fusion_and_duplicates():
    bu = np.zeros((1, 17, 3), np.float32)
    bu[0, :, :2] = 10
    bu[0, :, 2] = 0.5
    bu[0, 3, 2] = 0
    ref = np.zeros((1, 17, 3), np.float32)
    ref[0, :, :2] = 20
    ref[0, :, 2] = 0.9
    ref[0, 1:4, 2] = 0.1
    out = fuse(bu, ref, keep_bottomup_below=0.2)
    assert (out[0, 0, :2] == 20).all() and (out[0, 1, :2] == 10).all() and (out[0, 2, :2] == 10).all()
    assert (out[0, 3, :2] == 20).all()  # no bottom-up keypoint to keep
    assert (fuse(bu, ref, 0.0) == ref).all()
    ref[0, :, 0] = np.linspace(20, 120, 17)  # a person 100 x 200 px
    ref[0, :, 1] = np.linspace(20, 220, 17)
    two = np.concatenate([ref, ref + np.array([1.0, 1.0, 0.0], np.float32)])  # the same person twice
    two[..., 2] = 0.9
    far = ref.copy()
    far[..., :2] += 300
    far[..., 2] = 0.9
    three = np.concatenate([two, far])
    keep = suppress_duplicates(three, np.array([0.5, 0.9, 0.7], np.float32), 0.8)
    assert list(keep) == [1, 2]
    assert list(suppress_duplicates(three, np.array([0.5, 0.9, 0.7], np.float32), 1.0)) == [1, 2, 0]


def test_cap_refines_the_largest_first(refiner):
    image = cv2.cvtColor(cv2.imread(str(COCO / "train2017" / "000000084533.jpg")), cv2.COLOR_BGR2RGB)
    kps = np.zeros((3, 17, 3), np.float32)
    for i, (x, y, s) in enumerate([(100, 100, 20), (250, 220, 150), (400, 100, 60)]):
        kps[i, :, 0] = x + np.linspace(-s / 4, s / 4, 17)
        kps[i, :, 1] = y + np.linspace(-s / 2, s / 2, 17)
        kps[i, :, 2] = 0.5
    scores = np.array([0.9, 0.3, 0.6], np.float32)
    assert list(order_for_cap(kps, scores)) == [1, 2, 0]
    from posestream.models.fields import Poses

    out = refiner(image, Poses(kps, scores), max_people=1)
    assert refiner.last_refined == 1 and len(out.scores) == 3
    unchanged = [i for i in range(3) if any(np.array_equal(out.keypoints[j], kps[i]) for j in range(3))]
    assert sorted(unchanged) == [0, 2]  # the two smaller people keep their bottom-up keypoints
    out_all = refiner(image, Poses(kps, scores))
    assert refiner.last_refined == 3 and not any(np.array_equal(out_all.keypoints[j], kps[1]) for j in range(len(out_all.scores)))


def test_two_people_in_one_crop_the_centred_one_wins(refiner):
    """Two real people side by side, the crop centred on one: Thunder reports that one."""
    a = np.load(PARITY / "image_0_uint8_hwc_rgb.npy")
    b = np.load(PARITY / "image_1_uint8_hwc_rgb.npy")
    image = np.concatenate([a, b], 1)  # 256 x 512: person A left, person B right
    kps = []
    for cx in (128.0, 384.0):
        kps.append(refiner.refine_boxes(image, np.array([[cx, 128.0]], np.float32), np.array([256.0], np.float32))[0])
    alone = [refiner.refine_boxes(img, np.array([[128.0, 128.0]], np.float32), np.array([256.0], np.float32))[0]
             for img in (a, b)]
    found = [(k[:, 2] > 0.3) for k in alone]
    assert np.abs(kps[0][found[0], :2] - alone[0][found[0], :2]).mean() < 8
    assert np.abs(kps[1][found[1], 0] - 256 - alone[1][found[1], 0]).mean() < 8


def test_config_errors():
    with pytest.raises(ValueError, match="box_scale"):
        RefineConfig(box_scale=0.1)
    with pytest.raises(ValueError, match="unknown refine option 'boxscale'"):
        RefineConfig.from_dict({"boxscale": 1.2})
    with pytest.raises(ValueError, match="max_people"):
        RefineConfig(max_people=-1)


def test_batched_and_one_by_one_agree(refiner):
    """refine.batch only changes how crops are grouped into calls, not the result; auto is one
    crop per call on a CPU (measured faster there) and all of them on CUDA."""
    from posestream.models.fields import Poses
    from posestream.models.refine import RefineConfig, Refiner

    image = cv2.cvtColor(cv2.imread(str(COCO / "train2017" / "000000084533.jpg")), cv2.COLOR_BGR2RGB)
    kps = np.zeros((4, 17, 3), np.float32)
    for i in range(4):
        kps[i, :, 0] = 60 + 90 * i + np.linspace(-20, 20, 17)
        kps[i, :, 1] = 200 + np.linspace(-80, 80, 17)
        kps[i, :, 2] = 0.5
    poses = Poses(kps, np.full(4, 0.5, np.float32))
    batched = Refiner(refiner.run, refiner.meta, RefineConfig(batch=8, nms_oks=1.0))
    single = Refiner(refiner.run, refiner.meta, RefineConfig(nms_oks=1.0))
    assert single.batch == 1 and batched.batch == 8
    assert Refiner(refiner.run, refiner.meta, RefineConfig(), device="cuda").batch > 8
    a, b = batched(image, poses), single(image, poses)
    assert np.allclose(a.keypoints, b.keypoints, atol=1e-3) and np.allclose(a.scores, b.scores, atol=1e-5)
