"""Object keypoint similarity (OKS), COCO's formula, defined once for tracking and evaluation.

For one keypoint j of a reference pose (the ground truth in COCO) and another pose::

    term_j = exp(-d_j² / (2 s² k_j²)),   k_j = 2 sigma_j,   s² = area of the reference pose

which is pycocotools' ``e = d² / vars / (area + eps) / 2`` with ``vars = (2 sigma)²``; the ``eps``
(``np.spacing(1)``) keeps a zero-area pose (one keypoint) defined. OKS is the mean of the terms over
the keypoints that count: in COCO the labelled ones of the ground truth, in
:func:`oks_matrix` the ones visible (score > 0) in both poses.

:func:`oks_terms` gives the per-joint terms (``training.evaluation`` uses them for per-joint
recall); :func:`oks_matrix` is the all-pairs OKS built from them (``stream.track`` uses it for
association).
"""
from __future__ import annotations

import numpy as np

__all__ = ["oks_terms", "oks_matrix", "oks_distance"]


def oks_terms(gt, pred, area, sigmas) -> np.ndarray:
    """Per-joint OKS terms ``exp(-d² / (2 s² k²))`` of ``pred`` against the reference ``gt``.

    Args:
        gt: (..., K, 2+) reference keypoints (x, y first; further columns, e.g. visibility, ignored).
        pred: (..., K, 2+) keypoints compared with ``gt``; its leading dims broadcast with ``gt``'s.
        area: reference area s² in px², a scalar or an array broadcastable to the leading dims.
        sigmas: (K,) per-keypoint OKS sigmas (``models.skeleton``).

    Returns:
        (..., K) float64 in [0, 1]; visibility is not applied (the caller picks the joints that count).
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    k2 = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2  # pycocotools: vars = (2 sigma)^2
    area = np.asarray(area, dtype=np.float64)[..., None]
    d2 = (gt[..., 0] - pred[..., 0]) ** 2 + (gt[..., 1] - pred[..., 1]) ** 2
    return np.exp(-d2 / k2 / (area + np.spacing(1)) / 2.0)


def oks_matrix(a_kps: np.ndarray, b_kps: np.ndarray, sigmas, areas=None) -> np.ndarray:
    """Object keypoint similarity between every pose of ``a`` and every pose of ``b`` (COCO formula).

    ``OKS = mean over keypoints visible in both poses of exp(-d² / (2 s² k²))``, with ``k = 2 sigma``
    and ``s² = area`` of the ``a`` pose (``a`` is the reference, as the ground truth in COCO).

    Args:
        a_kps: (Na, K, 3) x, y, score; visibility is score > 0.
        b_kps: (Nb, K, 3) x, y, score.
        sigmas: (K,) per-keypoint OKS sigmas (``models.skeleton``).
        areas: optional (Na,) areas in px² of the ``a`` poses; default: the area of the box around
            each pose's visible keypoints.

    Returns:
        (Na, Nb) float64 in [0, 1]; 0 where the poses share no visible keypoint.
    """
    a = np.asarray(a_kps, dtype=np.float64)
    b = np.asarray(b_kps, dtype=np.float64)
    sig = np.asarray(sigmas, dtype=np.float64)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:] or a.shape[2] != 3 or a.shape[1] != sig.shape[0]:
        raise ValueError(f"oks_matrix needs (Na, K, 3) and (Nb, K, 3) with K = {sig.shape[0]} sigmas, "
                         f"got {a.shape} and {b.shape}")
    na, nb = a.shape[0], b.shape[0]
    if na == 0 or nb == 0:
        return np.zeros((na, nb))
    va, vb = a[..., 2] > 0, b[..., 2] > 0
    if areas is None:
        areas = np.zeros(na)
        for i in range(na):
            if va[i].any():
                p = a[i, va[i], :2]
                areas[i] = np.prod(p.max(axis=0) - p.min(axis=0))
    areas = np.asarray(areas, dtype=np.float64).reshape(na)
    terms = oks_terms(a[:, None], b[None, :], areas[:, None], sig)                # (Na, Nb, K)
    vis = va[:, None, :] & vb[None, :, :]
    n = vis.sum(-1)
    return np.where(n > 0, (terms * vis).sum(-1) / np.maximum(n, 1), 0.0)


def oks_distance(a_kps: np.ndarray, b_kps: np.ndarray, sigmas) -> np.ndarray:
    """``1 - oks_matrix(a, b, sigmas)``: the tracker's default distance, (Na, Nb) in [0, 1]."""
    return 1.0 - oks_matrix(a_kps, b_kps, sigmas)
