import numpy as np
import pytest

from posestream.models.skeleton import COCO_17, MPII_16, SKELETONS, get_skeleton


@pytest.mark.parametrize("sk", list(SKELETONS.values()), ids=list(SKELETONS))
def test_flip_map_is_an_involution(sk):
    fm = sk.flip_map
    assert np.array_equal(fm[fm], np.arange(sk.num_keypoints))
    # every left keypoint maps to the right one of the same joint
    for a, b in sk.flip_pairs:
        assert sk.keypoints[a].replace("left", "X") == sk.keypoints[b].replace("right", "X")


@pytest.mark.parametrize("sk", list(SKELETONS.values()), ids=list(SKELETONS))
def test_limbs_flip_onto_limbs_and_connect_every_keypoint(sk):
    pm, rev = sk.paf_flip_map
    assert np.array_equal(pm[pm], np.arange(sk.num_limbs))
    assert np.array_equal(rev[pm], rev)
    for i, (a, b) in enumerate(sk.limbs):
        fa, fb = sk.flip_map[a], sk.flip_map[b]
        assert sk.limbs[pm[i]] == ((fb, fa) if rev[i] else (fa, fb))
    # the limb graph is connected, so grouping can reach every keypoint
    seen, stack = {0}, [0]
    while stack:
        u = stack.pop()
        for a, b in sk.limbs:
            for x, y in ((a, b), (b, a)):
                if x == u and y not in seen:
                    seen.add(y)
                    stack.append(y)
    assert seen == set(range(sk.num_keypoints))
    assert len(set(sk.limbs)) == sk.num_limbs


def test_coco_matches_pycocotools_sigmas_and_names():
    from pycocotools.cocoeval import Params

    assert np.allclose(COCO_17.sigma_array, Params(iouType="keypoints").kpt_oks_sigmas)
    assert COCO_17.keypoints[COCO_17.flip_map[COCO_17.index("left_wrist")]] == "right_wrist"
    assert MPII_16.num_keypoints == 16


def test_unknown_skeleton_lists_known_ones():
    with pytest.raises(KeyError, match="coco17.*mpii16"):
        get_skeleton("body25")
