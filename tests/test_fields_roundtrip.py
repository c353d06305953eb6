"""poses -> encode -> decode == poses, on random multi-person scenes.

Error bound: targets are Gaussians of sigma = 2 cells at stride 4, upsampled bicubically to the
decoder's 2-px working cells, and the peak is refined by a parabola fit. Without refinement the
error of the nearest working cell is up to 1 px per axis; over 200 scenes the refined error
measured at most 0.35 px, so 0.5 px is asserted: it fails if refinement or the grid convention
shared by encoder and decoder breaks, and leaves room for the bicubic kernel's bias.
Keypoints within one network cell (4 px) of the border are hidden by the scene generator: a
Gaussian cut by the border peaks at the edge cell and cannot be refined past it.
"""
import numpy as np
import pytest

from posestream.models.fields import DecoderConfig, decode, encode
from posestream.models.fields.synthetic import random_scene
from scene_match import assign_keypoints

TOL_PX = 0.5


def make_scene(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 31))
    size = (512, 512) if n <= 15 else (768, 768)
    pairs = int(rng.integers(1, 3)) if n >= 2 else 0
    kp = random_scene(rng, n, size, height_range=(60, 200), n_crossing_pairs=pairs, border_margin=4.0)
    return kp, size


@pytest.mark.parametrize("seed", range(24))
def test_roundtrip_recovers_every_visible_keypoint_without_merge_or_split(seed):
    gt, size = make_scene(seed)
    assert len(gt) >= 1
    t = encode(gt, size, stride=4)
    poses = decode(t.heatmaps, t.pafs, stride=4, config=DecoderConfig(fill_missing=False))
    pred = poses.keypoints
    assert pred.shape == (len(gt), 17, 3)
    owner = assign_keypoints(gt, pred, TOL_PX)
    found = pred[..., 2] > 0
    # every decoded keypoint lies within TOL_PX of a visible ground-truth keypoint
    assert np.all(owner[found] >= 0), f"stray keypoints: {np.argwhere(found & (owner < 0))}"
    for p in range(len(pred)):  # never merges two people
        assert len(set(owner[p][found[p]])) == 1, f"person {p} mixes people {set(owner[p][found[p]])}"
    for g in range(len(gt)):  # never splits one, and recovers all its visible keypoints
        holders = np.nonzero((owner == g).any(axis=1))[0]
        assert len(holders) == 1, f"ground-truth person {g} split over {holders}"
        vis = gt[g, :, 2] > 0
        assert np.array_equal(owner[holders[0]] == g, vis)


def test_crossing_forearms_stay_with_their_owners():
    rng = np.random.default_rng(7)
    from posestream.models.fields.synthetic import crossing_pair

    pts = crossing_pair(rng, 150.0, (200.0, 200.0))
    gt = np.concatenate([pts, np.full((2, 17, 1), 2.0)], axis=2)
    # the two left forearms (7 -> 9) intersect
    (a0, a1), (b0, b1) = gt[0, [7, 9], :2], gt[1, [7, 9], :2]
    d1, d2 = a1 - a0, b1 - b0
    s = np.linalg.solve(np.stack([d1, -d2], 1), b0 - a0)
    assert np.all((0 < s) & (s < 1))
    t = encode(gt, (400, 400), 4)
    poses = decode(t.heatmaps, t.pafs, 4, DecoderConfig(fill_missing=False))
    owner = assign_keypoints(gt, poses.keypoints, TOL_PX)
    assert sorted(tuple(set(o)) for o in owner) == [(0,), (1,)]


def test_fill_missing_keeps_grouped_keypoints_and_only_adds():
    gt, size = make_scene(3)
    t = encode(gt, size, 4)
    a = decode(t.heatmaps, t.pafs, 4, DecoderConfig(fill_missing=False))
    b = decode(t.heatmaps, t.pafs, 4, DecoderConfig(fill_missing=True))
    assert np.array_equal(a.scores, b.scores)
    found = a.keypoints[..., 2] > 0
    assert np.array_equal(a.keypoints[found], b.keypoints[found])
    assert (b.keypoints[..., 2] > 0).sum() >= found.sum()


def test_empty_and_blank_fields_give_no_people():
    t = encode(np.zeros((0, 17, 3)), (64, 64), 4)
    for impl in ("numba", "numpy"):
        poses = decode(t.heatmaps, t.pafs, 4, impl=impl)
        assert poses.keypoints.shape == (0, 17, 3) and poses.scores.shape == (0,)
