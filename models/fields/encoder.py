"""Training targets: Gaussian keypoint heatmaps and Part Affinity Fields.

The decoder that reads these fields back sits beside this file (``decoder.py``); the round-trip
tests (``tests/test_fields_roundtrip.py``) hold the two together.

Grid convention (shared with the decoder): cell ``(i, j)`` of a map at stride ``s`` is centred on
input pixel ``((j + 0.5) * s - 0.5, (i + 0.5) * s - 0.5)``, pixel centres being integer coordinates.
This is what ``cv2.resize`` assumes when the decoder upsamples the maps, so upsampling never shifts
a peak.

Sizes (``sigma``, ``paf_width``) are in grid cells, so one setting means the same thing to the
network at any input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..skeleton import COCO_17, Skeleton

__all__ = ["Targets", "encode", "encode_heatmaps", "encode_pafs", "encode_mask", "grid_shape", "cell_centres"]


@dataclass
class Targets:
    """What the loss compares the network's outputs with.

    Attributes:
        heatmaps: (K + 1, h, w) float32 in [0, 1]; the last channel is the background (1 - max).
        pafs: (2 L, h, w) float32; channels 2i, 2i+1 are the x, y components for limb i.
        mask: (h, w) float32 in [0, 1]; loss weight per cell, 0 inside ignore regions.
    """

    heatmaps: np.ndarray
    pafs: np.ndarray
    mask: np.ndarray


def grid_shape(image_hw: tuple[int, int], stride: int) -> tuple[int, int]:
    """Output map size for an input of ``image_hw`` pixels (sides are rounded up)."""
    h, w = image_hw
    return (-(-int(h) // stride), -(-int(w) // stride))


def cell_centres(n: int, stride: float) -> np.ndarray:
    """(n,) float64 input-pixel coordinate of each cell centre along one axis."""
    return (np.arange(n, dtype=np.float64) + 0.5) * stride - 0.5


def _check_keypoints(keypoints: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.size == 0:
        return np.zeros((0, skeleton.num_keypoints, 3))
    if kp.ndim != 3 or kp.shape[1:] != (skeleton.num_keypoints, 3):
        raise ValueError(f"keypoints must be (N, {skeleton.num_keypoints}, 3), got {kp.shape}")
    return kp


def encode_heatmaps(keypoints: np.ndarray, image_hw: tuple[int, int], stride: int, sigma: float = 2.0,
                    skeleton: Skeleton = COCO_17) -> np.ndarray:
    """Render one Gaussian per labelled keypoint; overlapping people take the maximum.

    Args:
        keypoints: (N, K, 3) x, y, v in input pixels; v > 0 means labelled.
        image_hw: input image (height, width) in pixels.
        stride: output stride of the network.
        sigma: Gaussian standard deviation in grid cells.

    Returns:
        (K + 1, h, w) float32; channel K is the background, 1 - max over keypoints.
    """
    kp = _check_keypoints(keypoints, skeleton)
    h, w = grid_shape(image_hw, stride)
    k_count = skeleton.num_keypoints
    out = np.zeros((k_count + 1, h, w), dtype=np.float32)
    xs = cell_centres(w, stride)
    ys = cell_centres(h, stride)
    scale = 1.0 / (2.0 * (sigma * stride) ** 2)
    for k in range(k_count):
        sel = kp[:, k, 2] > 0
        if not sel.any():
            continue
        px, py = kp[sel, k, 0], kp[sel, k, 1]
        # separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2)
        gx = np.exp(-((xs[None, :] - px[:, None]) ** 2) * scale).astype(np.float32)  # (n, w)
        gy = np.exp(-((ys[None, :] - py[:, None]) ** 2) * scale).astype(np.float32)  # (n, h)
        out[k] = np.max(gy[:, :, None] * gx[:, None, :], axis=0)
    out[k_count] = 1.0 - out[:k_count].max(axis=0)
    return out


def encode_pafs(keypoints: np.ndarray, image_hw: tuple[int, int], stride: int, paf_width: float = 1.0,
                skeleton: Skeleton = COCO_17) -> np.ndarray:
    """Render a unit vector field along every limb whose two keypoints are labelled.

    A cell belongs to a limb when its centre lies within ``paf_width`` cells of the segment,
    including ``paf_width`` beyond either end (so the field covers the keypoints themselves).
    Where limbs of several people overlap, the vectors are averaged (OpenPose's rule).

    Returns:
        (2 L, h, w) float32.
    """
    kp = _check_keypoints(keypoints, skeleton)
    h, w = grid_shape(image_hw, stride)
    out = np.zeros((2 * skeleton.num_limbs, h, w), dtype=np.float32)
    # cell centres in cell units: the stride-independent frame of paf_width
    cx = cell_centres(w, 1.0)[None, None, :]
    cy = cell_centres(h, 1.0)[None, :, None]
    for li, (a, b) in enumerate(skeleton.limbs):
        sel = (kp[:, a, 2] > 0) & (kp[:, b, 2] > 0)
        if not sel.any():
            continue
        pa = (kp[sel, a, :2] + 0.5) / stride - 0.5  # (n, 2) in cell units
        pb = (kp[sel, b, :2] + 0.5) / stride - 0.5
        d = pb - pa
        length = np.hypot(d[:, 0], d[:, 1])
        ok = length > 1e-6
        if not ok.any():
            continue
        pa, d, length = pa[ok], d[ok], length[ok]
        ux = (d[:, 0] / length)[:, None, None]
        uy = (d[:, 1] / length)[:, None, None]
        rx = cx - pa[:, 0, None, None]
        ry = cy - pa[:, 1, None, None]
        along = rx * ux + ry * uy               # (n, h, w)
        across = np.abs(rx * uy - ry * ux)
        inside = (along >= -paf_width) & (along <= length[:, None, None] + paf_width) & (across <= paf_width)
        count = inside.sum(axis=0)
        hit = count > 0
        if not hit.any():
            continue
        sx = (inside * ux).sum(axis=0)
        sy = (inside * uy).sum(axis=0)
        out[2 * li][hit] = sx[hit] / count[hit]
        out[2 * li + 1][hit] = sy[hit] / count[hit]
    return out


def encode_mask(ignore: np.ndarray | None, image_hw: tuple[int, int], stride: int) -> np.ndarray:
    """Loss weight per cell from an ignore mask in input pixels.

    Args:
        ignore: (H, W) bool or uint8, true/non-zero where the loss must not look (crowd regions,
            people without keypoint labels); None for "nothing ignored".

    Returns:
        (h, w) float32: the fraction of each cell's pixels that are *not* ignored.
    """
    h, w = grid_shape(image_hw, stride)
    if ignore is None:
        return np.ones((h, w), dtype=np.float32)
    ignore = np.asarray(ignore)
    if ignore.shape != tuple(image_hw):
        raise ValueError(f"ignore mask shape {ignore.shape} does not match image {tuple(image_hw)}")
    keep = (ignore == 0).astype(np.float32)
    ph, pw = h * stride - keep.shape[0], w * stride - keep.shape[1]
    if ph or pw:  # the padded border counts as kept, like the padded image it stands for
        keep = np.pad(keep, ((0, ph), (0, pw)), constant_values=1.0)
    return keep.reshape(h, stride, w, stride).mean(axis=(1, 3)).astype(np.float32)


def encode(keypoints: np.ndarray, image_hw: tuple[int, int], stride: int, sigma: float = 2.0,
           paf_width: float = 1.0, ignore: np.ndarray | None = None,
           skeleton: Skeleton = COCO_17) -> Targets:
    """All targets of one image. See :func:`encode_heatmaps`, :func:`encode_pafs`, :func:`encode_mask`."""
    return Targets(
        heatmaps=encode_heatmaps(keypoints, image_hw, stride, sigma, skeleton),
        pafs=encode_pafs(keypoints, image_hw, stride, paf_width, skeleton),
        mask=encode_mask(ignore, image_hw, stride),
    )
