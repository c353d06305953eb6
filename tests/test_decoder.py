import numpy as np
import pytest

from posestream.models.fields import DecoderConfig, decode, encode, group, upsample
from posestream.models.fields.synthetic import random_scene


def noisy_fields(seed, n=12, size=(384, 384), stride=8, noise=0.15):
    rng = np.random.default_rng(seed)
    gt = random_scene(rng, n, size, height_range=(50, 200), allow_overlap=True, n_crossing_pairs=2)
    t = encode(gt, size, stride, sigma=1.0)
    # network-like outputs: blurred-in noise creates spurious peaks, weak limbs and near-ties
    heat = np.clip(t.heatmaps + rng.normal(0, noise, t.heatmaps.shape), 0, 1).astype(np.float32)
    paf = (t.pafs + rng.normal(0, noise, t.pafs.shape)).astype(np.float32)
    return heat, paf, stride


@pytest.mark.parametrize("seed", range(8))
def test_numba_and_numpy_reference_return_identical_poses(seed):
    heat, paf, stride = noisy_fields(seed)
    cfg = DecoderConfig(peak_threshold=0.2)
    a = decode(heat, paf, stride, cfg, impl="numba")
    b = decode(heat, paf, stride, cfg, impl="numpy")
    assert len(a.scores) > 3
    assert np.array_equal(a.keypoints, b.keypoints)
    assert np.array_equal(a.scores, b.scores)


def test_identical_on_exact_ties():
    # a symmetric scene: mirrored people give equal scores everywhere, so ordering rests on tie rules
    gt = random_scene(np.random.default_rng(1), 1, (256, 256), height_range=(120, 121), border_fraction=0)
    mirrored = gt.copy()
    mirrored[..., 0] = np.where(gt[..., 2] > 0, 511 - gt[..., 0], 0)
    both = np.concatenate([gt, mirrored])
    t = encode(both, (256, 512), 4)
    a = decode(t.heatmaps, t.pafs, 4, impl="numba")
    b = decode(t.heatmaps, t.pafs, 4, impl="numpy")
    assert len(a.scores) == 2 and a.scores[0] == a.scores[1]
    assert np.array_equal(a.keypoints, b.keypoints)


@pytest.mark.parametrize("impl", ["numba", "numpy"])
def test_decode_is_pure(impl):
    heat, paf, stride = noisy_fields(0)
    h0, p0 = heat.copy(), paf.copy()
    heat.setflags(write=False)
    paf.setflags(write=False)
    first = decode(heat, paf, stride, impl=impl)
    again = decode(heat, paf, stride, impl=impl)
    assert np.array_equal(heat, h0) and np.array_equal(paf, p0)
    assert np.array_equal(first.keypoints, again.keypoints)
    # group() at working resolution with factor-1 maps must not write either
    up_h, up_p = upsample(h0[:17], 4), upsample(p0, 4)
    uh, up = up_h.copy(), up_p.copy()
    up_h.setflags(write=False)
    up_p.setflags(write=False)
    group(up_h, up_p, 2.0, impl=impl)
    assert np.array_equal(up_h, uh) and np.array_equal(up_p, up)


def test_output_contract_and_filters():
    heat, paf, stride = noisy_fields(2, noise=0.0)
    poses = decode(heat, paf, stride)
    assert poses.keypoints.dtype == np.float32 and poses.scores.dtype == np.float32
    assert np.all(np.diff(poses.scores) <= 0)
    strict = decode(heat, paf, stride, DecoderConfig(min_keypoints=17, fill_missing=False))
    assert np.all((strict.keypoints[..., 2] > 0).sum(axis=1) == 17)
    assert len(strict.scores) < len(poses.scores)


def test_config_validation_names_the_key():
    with pytest.raises(ValueError, match="unknown decoder option 'peak_thresh'"):
        DecoderConfig.from_dict({"peak_thresh": 0.2})
    assert DecoderConfig.from_dict({"peak_threshold": 0.2}).peak_threshold == 0.2
    with pytest.raises(ValueError, match="paf_samples"):
        DecoderConfig(paf_samples=1)
    with pytest.raises(ValueError, match="unknown decoder implementation"):
        group(np.zeros((17, 8, 8), np.float32), np.zeros((40, 8, 8), np.float32), 2.0, impl="cpp")
    with pytest.raises(ValueError, match="pafs must be"):
        group(np.zeros((17, 8, 8), np.float32), np.zeros((38, 8, 8), np.float32), 2.0)


def test_shipped_decoder_yaml_equals_the_defaults():
    from pathlib import Path

    import yaml

    d = yaml.safe_load((Path(__file__).parents[1] / "configs" / "decoder.yaml").read_text())
    assert DecoderConfig.from_dict(d) == DecoderConfig()


@pytest.mark.parametrize("impl", ["numba", "numpy"])
def test_scores_stay_in_unit_range_where_bicubic_overshoots(impl):
    """Two-cell plateaus at 1.0 (a peak between two cells) make the bicubic upsampling overshoot
    (~1.19 here before clipping): keypoint and person scores are still probabilities."""
    from posestream.models.fields import decode, decode_single, encode, upsample
    from posestream.models.fields.synthetic import random_scene

    rng = np.random.default_rng(0)
    kp = random_scene(rng, 4, (256, 256), height_range=(80, 160))
    t = encode(kp, (256, 256), 8, sigma=0.8)
    h = t.heatmaps.copy()
    h[:, :, 1:] = np.maximum(h[:, :, 1:], h[:, :, :-1])
    h[:, 1:] = np.maximum(h[:, 1:], h[:, :-1])
    assert upsample(h[:17], 4.0).max() > 1.1  # the overshoot is real
    p = decode(h, t.pafs, 8, impl=impl)
    assert len(p.scores) >= 4
    assert p.keypoints[..., 2].max() <= 1.0 and p.keypoints[..., 2].min() >= 0.0
    assert ((p.scores >= 0) & (p.scores <= 1)).all()
    single = decode_single(h[:17] * 1.5, 8)  # identity-activated maps are not bounded either
    assert single.keypoints[..., 2].max() == pytest.approx(1.0) and single.scores.max() <= 1.0
