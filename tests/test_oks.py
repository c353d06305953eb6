"""OKS is defined once (``models.oks``) and used by both tracking and evaluation."""
from __future__ import annotations

import numpy as np
import pytest

import posestream.models.oks as oks_mod
import posestream.stream.track as track
from posestream.models.oks import oks_distance, oks_matrix, oks_terms
from posestream.models.skeleton import get_skeleton
from posestream.training.evaluation import evaluate

SIGMAS = np.asarray(get_skeleton("coco17").sigmas, np.float64)


def _random_poses(rng, n, k=17, p_hidden=0.3):
    xy = rng.uniform(0, 200, (n, 1, 2)) + rng.normal(0, 30, (n, k, 2))
    score = rng.uniform(0.05, 1.0, (n, k, 1)) * (rng.random((n, k, 1)) > p_hidden)
    return np.concatenate([xy, score], axis=-1)


def test_matrix_equals_per_joint_terms_on_random_poses():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = _random_poses(rng, 4), _random_poses(rng, 5)
        areas = rng.uniform(100, 5000, 4)
        m = oks_matrix(a, b, SIGMAS, areas=areas)
        assert m.shape == (4, 5)
        for i in range(4):
            for j in range(5):
                vis = (a[i, :, 2] > 0) & (b[j, :, 2] > 0)
                terms = oks_terms(a[i], b[j], areas[i], SIGMAS)
                assert terms.shape == (17,) and np.all((terms >= 0) & (terms <= 1))
                want = terms[vis].mean() if vis.any() else 0.0
                assert m[i, j] == pytest.approx(want, rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(oks_distance(a, b, SIGMAS), 1.0 - oks_matrix(a, b, SIGMAS))


def test_terms_match_cocos_formula():
    gt = np.array([[10.0, 20.0, 2.0], [30.0, 40.0, 1.0]])
    pred = np.array([[13.0, 24.0, 1.0], [30.0, 40.0, 1.0]])
    sig = np.array([0.05, 0.1])
    area = 900.0
    # pycocotools: e = d^2 / (2 sigma)^2 / (area + eps) / 2
    want = np.exp(-np.array([25.0, 0.0]) / (2 * sig) ** 2 / (area + np.spacing(1)) / 2)
    np.testing.assert_allclose(oks_terms(gt, pred, area, sig), want, rtol=1e-15)
    # broadcasting over leading dims: (2, 1, K) against (1, 3, K) -> (2, 3, K)
    g = np.stack([gt, gt + 1])[:, None]
    p = np.stack([pred, pred, gt])[None]
    assert oks_terms(g, p, np.array([[900.0], [400.0]]), sig).shape == (2, 3, 2)


def test_tracking_and_evaluation_use_the_same_function():
    assert track.oks_matrix is oks_mod.oks_matrix
    assert track.oks_distance is oks_mod.oks_distance
    assert "oks_matrix" in track.__all__ and "oks_distance" in track.__all__
    assert not hasattr(evaluate, "_oks_terms")


class _FakeCoco:
    """The three calls of pycocotools.COCO that per_joint_recall makes."""

    def __init__(self, anns):
        self.anns = anns

    def getImgIds(self):
        return sorted({a["image_id"] for a in self.anns})

    def getAnnIds(self, imgIds, iscrowd=False):
        return [i for i, a in enumerate(self.anns) if a["image_id"] == imgIds]

    def loadAnns(self, ids):
        return [self.anns[i] for i in ids]


def test_evaluation_calls_models_oks_terms(monkeypatch):
    rng = np.random.default_rng(1)
    gt = _random_poses(rng, 1, p_hidden=0.0)[0]
    gt[:, 2] = 2
    anns = [{"image_id": 7, "keypoints": gt.ravel().tolist(), "num_keypoints": 17, "area": 40000.0}]
    pred = gt.copy()
    pred[:9, :2] += 1.0      # close: recalled
    pred[9:, :2] += 500.0    # far: missed (OKS of the person stays >= 0.5 through the first 9 joints)
    pred[:, 2] = 1
    results = [{"image_id": 7, "keypoints": pred.ravel().tolist(), "score": 0.9}]
    calls = []
    real = oks_mod.oks_terms

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(oks_mod, "oks_terms", spy)
    names = get_skeleton("coco17").keypoints
    recall = evaluate.per_joint_recall(_FakeCoco(anns), results, SIGMAS, names)
    assert calls, "per_joint_recall did not call posestream.models.oks.oks_terms"
    assert [recall[n] for n in names] == [1.0] * 9 + [0.0] * 8
