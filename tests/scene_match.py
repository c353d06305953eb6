"""Helpers shared by the field tests: match decoded people to ground-truth people."""
from __future__ import annotations

import numpy as np


def assign_keypoints(gt: np.ndarray, pred: np.ndarray, tol: float) -> np.ndarray:
    """For every predicted keypoint (score > 0), the ground-truth person whose same-type visible
    keypoint lies within ``tol`` pixels (nearest), or -1.

    Args:
        gt: (G, K, 3) x, y, v. pred: (P, K, 3) x, y, score.
    Returns:
        (P, K) int.
    """
    owner = -np.ones(pred.shape[:2], dtype=np.int64)
    for p in range(pred.shape[0]):
        for k in range(pred.shape[1]):
            if pred[p, k, 2] <= 0:
                continue
            vis = gt[:, k, 2] > 0
            if not vis.any():
                continue
            d = np.hypot(gt[:, k, 0] - pred[p, k, 0], gt[:, k, 1] - pred[p, k, 1])
            d[~vis] = np.inf
            g = int(np.argmin(d))
            if d[g] <= tol:
                owner[p, k] = g
    return owner
