import numpy as np
import pytest

from posestream.models.fields import encode, encode_heatmaps, encode_mask, encode_pafs, grid_shape
from posestream.models.skeleton import COCO_17


def one_person(x0=40.0, y0=20.0, scale=1.0):
    kp = np.zeros((1, 17, 3))
    kp[0, 5] = (x0, y0, 2)        # left shoulder
    kp[0, 7] = (x0, y0 + 24 * scale, 2)   # left elbow, straight below
    kp[0, 0] = (x0 + 6, y0 - 10, 2)
    return kp


def test_heatmap_peak_value_position_and_background():
    kp = one_person()
    hm = encode_heatmaps(kp, (64, 96), stride=4, sigma=2.0)
    assert hm.shape == (18, 16, 24) and hm.dtype == np.float32
    # cell centres are at 4 j + 1.5 px: the nearest to (40, 20) is (41.5, 21.5), 1.5 px off on each axis
    k = 5
    assert hm[k].max() == pytest.approx(np.exp(-(1.5 ** 2 * 2) / (2 * 8.0 ** 2)), rel=1e-5)
    assert np.unravel_index(hm[k].argmax(), hm[k].shape) == (5, 10)
    assert np.all(hm[1] == 0)  # unlabelled keypoint: no Gaussian
    assert np.allclose(hm[17], 1 - hm[:17].max(axis=0))


def test_overlapping_people_take_the_max_not_the_sum():
    kp = np.concatenate([one_person(), one_person(x0=42.0)])
    hm = encode_heatmaps(kp, (64, 96), stride=4)
    assert hm[:17].max() <= 1.0


def test_paf_is_unit_along_limb_and_zero_away_from_it():
    kp = one_person()
    paf = encode_pafs(kp, (64, 96), stride=4, paf_width=1.0)
    li = COCO_17.limbs.index((5, 7))
    px, py = paf[2 * li], paf[2 * li + 1]
    on = (px != 0) | (py != 0)
    assert on.any()
    assert np.allclose(np.hypot(px[on], py[on]), 1.0)
    assert np.allclose(py[on], 1.0)  # the limb points straight down
    # cells farther than paf_width (1 cell) from the segment are empty
    ys, xs = np.nonzero(on)
    cx = (xs + 0.5) * 4 - 0.5
    assert np.all(np.abs(cx - 40.0) <= 4.0 + 1e-9)
    # a limb with one endpoint unlabelled is not drawn
    lj = COCO_17.limbs.index((7, 9))
    assert not paf[2 * lj:2 * lj + 2].any()


def test_overlapping_pafs_are_averaged():
    a = one_person()
    b = one_person()
    b[0, 7] = (40 + 24, 20, 2)  # same shoulder, elbow to the right
    paf = encode_pafs(np.concatenate([a, b]), (64, 96), stride=4)
    li = COCO_17.limbs.index((5, 7))
    # at the shoulder cell both limbs overlap: (0, 1) and (1, 0) average to (.5, .5)
    i, j = 4, 9  # cell centre (37.5, 17.5), within 1 cell of both limbs
    assert paf[2 * li, i, j] == pytest.approx(0.5) and paf[2 * li + 1, i, j] == pytest.approx(0.5)


def test_mask_honours_ignore_regions():
    ignore = np.zeros((64, 96), bool)
    ignore[8:24, 16:48] = True            # exactly cells rows 2..5, cols 4..11 at stride 4
    ignore[40:42, 80:82] = True           # a quarter of cell (10, 20)
    t = encode(one_person(), (64, 96), 4, ignore=ignore)
    assert t.mask.shape == grid_shape((64, 96), 4)
    assert np.all(t.mask[2:6, 4:12] == 0)
    assert t.mask[10, 20] == pytest.approx(0.75)
    expect = np.ones_like(t.mask)
    expect[2:6, 4:12] = 0
    expect[10, 20] = 0.75
    assert np.array_equal(t.mask, expect)
    # targets themselves do not depend on the mask
    t0 = encode(one_person(), (64, 96), 4)
    assert np.array_equal(t.heatmaps, t0.heatmaps) and np.array_equal(t.pafs, t0.pafs)


def test_mask_pads_odd_sizes_and_rejects_wrong_shape():
    m = encode_mask(np.ones((10, 10), bool), (10, 10), 4)
    # 10 px pad to 12: cell (2, 2) holds 2x2 ignored image pixels and 12 padded pixels (kept)
    assert m.shape == (3, 3) and m[0, 0] == 0 and m[2, 2] == pytest.approx(12 / 16)
    with pytest.raises(ValueError, match="does not match image"):
        encode_mask(np.zeros((5, 5)), (10, 10), 4)


def test_bad_keypoint_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(N, 17, 3\)"):
        encode_heatmaps(np.zeros((2, 16, 3)), (32, 32), 4)
