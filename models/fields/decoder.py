"""Bottom-up decoder: keypoint heatmaps + Part Affinity Fields -> people.

The encoder of these fields sits beside this file (``encoder.py``). Decoding is a pure function
of the fields: inputs are never modified, nothing is drawn, no global state is read.

Steps (Cao et al., "OpenPose", TPAMI 2019, with the details that measured best on real poses;
see ``posestream bench oracle``):

1. **Upsample** heatmaps and PAFs bicubically from the network stride to ``working_stride``
   (default 2 input pixels per cell). Bicubic keeps peaks round; bilinear cost ~0.1 AP in the
   oracle.
2. **Peaks** per keypoint type: 3x3 local maxima above ``peak_threshold``; peaks closer than
   ``min_peak_distance`` input pixels to a stronger one are dropped (plateaus and ringing of the
   upsampling otherwise yield duplicates that split people); a parabola fit gives the sub-cell
   position.
3. **Limb scores**: each candidate pair of peaks of a limb is scored by sampling the limb's PAF at
   ``paf_samples`` points on the segment: mean projection on the segment direction plus a length
   prior ``min(0, length_prior * H / |ab| - 1)``; accepted when ``paf_min_fraction`` of the samples
   exceed ``paf_threshold``. Greedy bipartite matching per limb (best score first, each peak once).
4. **Assembly**: connections in limb order (the skeleton's spanning tree first) grow people; a
   connection between two partial people merges them when they share no keypoint type.
5. **Finish**: person score = mean peak score x sqrt(n / K) (keypoint and person scores are
   clipped to [0, 1]: bicubic upsampling can overshoot 1); people with fewer than
   ``min_keypoints`` or a score below ``min_score`` are dropped; a missing keypoint is filled from
   the heatmap maximum inside the person's box (enlarged by ``fill_margin``), with that value as
   its score.

Steps 2-5 run as Numba kernels (``_numba.py``); ``_reference.py`` is the same algorithm in NumPy.
The kernels are called through ``_aot.py``: their ahead-of-time build when ``posestream warmup``
made one for this host and these sources (no ``import numba`` at start-up), else the JIT kernels.

Decoding on the runtime (:func:`decode_graph`): an export with ``models/decode_head.py`` after the
network computes step 1 for the heatmaps and the 3x3 maxima of step 2 in the graph; the host keeps
steps 2-5 and reads the PAFs at the network's stride, bicubically at each sample's cell. Same
poses as :func:`decode` up to float rounding (``posestream bench decode``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from ..skeleton import COCO_17, Skeleton
from . import _aot, _reference
from ..config import from_section

__all__ = ["decode_single", "DecoderConfig", "Poses", "decode", "decode_graph", "group", "upsample",
           "IMPLEMENTATIONS"]

# "numba": the Numba kernels, ahead-of-time built (``_aot.py``) or JIT (``_numba.py``, imported on
# first use); "numpy": the reference
IMPLEMENTATIONS = {"numba": _aot, "numpy": _reference}


@dataclass(frozen=True)
class DecoderConfig:
    """Decoder settings. Distances are in input pixels so they mean the same at any stride."""

    working_stride: float = 2.0
    peak_threshold: float = 0.1
    min_peak_distance: float = 6.0
    max_peaks: int = 64
    paf_samples: int = 10
    paf_threshold: float = 0.05
    paf_min_fraction: float = 0.8
    length_prior: float = 0.5
    min_keypoints: int = 3
    min_score: float = 0.05
    fill_missing: bool = True
    fill_margin: float = 0.1

    def __post_init__(self) -> None:
        if self.working_stride <= 0:
            raise ValueError(f"working_stride must be > 0, got {self.working_stride}")
        if self.paf_samples < 2:
            raise ValueError(f"paf_samples must be >= 2, got {self.paf_samples}")
        if self.max_peaks < 1:
            raise ValueError(f"max_peaks must be >= 1, got {self.max_peaks}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "DecoderConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return from_section(cls, d, "decoder option")


class Poses(NamedTuple):
    """Decoded people of one image.

    keypoints: (N, K, 3) float32 x, y, score in input-image pixels (score 0: not found).
    scores: (N,) float32 person scores, descending.
    """

    keypoints: np.ndarray
    scores: np.ndarray


def upsample(maps: np.ndarray, factor: float) -> np.ndarray:
    """Bicubic resize of (C, h, w) maps by ``factor`` (a new float32 array)."""
    maps = np.asarray(maps, dtype=np.float32)
    c, h, w = maps.shape
    if factor == 1.0:
        return np.array(maps, dtype=np.float32, copy=True)
    size = (int(round(w * factor)), int(round(h * factor)))
    out = np.empty((c, size[1], size[0]), np.float32)
    for i in range(c):  # cv2 handles at most 4 channels per call for cubic; per channel is as fast
        out[i] = cv2.resize(maps[i], size, interpolation=cv2.INTER_CUBIC)
    return out


def group(heatmaps: np.ndarray, pafs: np.ndarray, stride: float, config: DecoderConfig | None = None,
          skeleton: Skeleton = COCO_17, impl: str = "numba") -> Poses:
    """Steps 2-5 on maps already at the working resolution.

    Args:
        heatmaps: (K, H, W) or (K + 1, H, W) float32 (a background channel is ignored).
        pafs: (2 L, H, W) float32.
        stride: input pixels per cell of these maps.
        impl: ``"numba"`` (default) or ``"numpy"`` (reference).
    """
    cfg = config or DecoderConfig()
    try:
        mod = IMPLEMENTATIONS[impl]
    except KeyError:
        raise ValueError(f"unknown decoder implementation {impl!r}; known: {', '.join(IMPLEMENTATIONS)}") from None
    k_count, n_limbs = skeleton.num_keypoints, skeleton.num_limbs
    if heatmaps.ndim != 3 or heatmaps.shape[0] not in (k_count, k_count + 1):
        raise ValueError(f"heatmaps must be ({k_count}[+1], H, W), got {heatmaps.shape}")
    if pafs.shape != (2 * n_limbs,) + heatmaps.shape[1:]:
        raise ValueError(f"pafs must be ({2 * n_limbs}, {heatmaps.shape[1]}, {heatmaps.shape[2]}), got {pafs.shape}")
    heat = np.ascontiguousarray(heatmaps[:k_count], dtype=np.float32)
    paf = np.ascontiguousarray(pafs, dtype=np.float32)
    kps, scores = mod.group(heat, paf, skeleton.limb_array, float(cfg.peak_threshold),
                            float(cfg.min_peak_distance / stride), int(cfg.max_peaks), int(cfg.paf_samples),
                            float(cfg.paf_threshold), float(cfg.paf_min_fraction),
                            float(cfg.length_prior * heat.shape[1]), int(cfg.min_keypoints), float(cfg.min_score),
                            bool(cfg.fill_missing), float(cfg.fill_margin))
    return _to_input_pixels(kps, scores, stride)


def _to_input_pixels(kps: np.ndarray, scores: np.ndarray, stride: float) -> Poses:
    out = kps.astype(np.float32)
    found = out[..., 2] > 0
    # cell -> input pixel (see encoder.py); keypoints not found stay at (0, 0, 0)
    out[..., :2] = np.where(found[..., None], (out[..., :2] + 0.5) * stride - 0.5, 0.0)
    # scores are probabilities: bicubic upsampling overshoots between two high cells (a 2-cell
    # plateau at 1.0 peaks at ~1.1), and identity-activated heatmaps are not bounded at all
    np.clip(out[..., 2], 0.0, 1.0, out=out[..., 2])
    return Poses(out, np.clip(scores, 0.0, 1.0).astype(np.float32))


def decode(heatmaps: np.ndarray, pafs: np.ndarray, stride: int, config: DecoderConfig | None = None,
           skeleton: Skeleton = COCO_17, impl: str = "numba") -> Poses:
    """Network outputs of one image -> people, in input-image pixels.

    Args:
        heatmaps: (K[+1], h, w) float32 at the network's output stride.
        pafs: (2 L, h, w) float32.
        stride: the network's output stride (input pixels per cell).
        config: decoder settings (defaults: :class:`DecoderConfig`).
        impl: ``"numba"`` or ``"numpy"``.

    Returns:
        :class:`Poses`. Map them to the original image with the preprocessing record.
    """
    cfg = config or DecoderConfig()
    k_count = skeleton.num_keypoints
    factor = float(stride) / cfg.working_stride
    heat = upsample(np.asarray(heatmaps)[:k_count], factor)
    paf = upsample(pafs, factor)
    return group(heat, paf, stride / factor, cfg, skeleton, impl)


def decode_graph(heatmaps_up: np.ndarray, peak_scores: np.ndarray, peak_index: np.ndarray, pafs: np.ndarray,
                 stride: int, config: DecoderConfig | None = None, skeleton: Skeleton = COCO_17) -> Poses:
    """The graph-decoding export's outputs of one image -> people, in input-image pixels.

    Args:
        heatmaps_up: (K, H, W) activated heatmaps at the working stride.
        peak_scores, peak_index: (K, C) their 3x3 maxima, strongest first (flat index into H x W).
        pafs: (2 L, h, w) at the network's ``stride`` (H = h x stride / working stride).
        config: decoder settings; ``working_stride`` must be the export's.
    """
    cfg = config or DecoderConfig()
    k_count, n_limbs = skeleton.num_keypoints, skeleton.num_limbs
    heat = np.ascontiguousarray(heatmaps_up[:k_count], dtype=np.float32)
    paf = np.ascontiguousarray(pafs, dtype=np.float32)
    factor = heat.shape[1] / paf.shape[1]
    if (paf.shape[0] != 2 * n_limbs or heat.shape[2] / paf.shape[2] != factor
            or abs(float(stride) / factor - cfg.working_stride) > 1e-9):
        raise ValueError(f"graph outputs {heat.shape} / pafs {paf.shape} at stride {stride} do not match working "
                         f"stride {cfg.working_stride:g}")
    kps, scores = _aot.group_candidates(
        heat, np.ascontiguousarray(peak_scores[:k_count], np.float32),
        np.ascontiguousarray(peak_index[:k_count], np.int64), paf, float(factor), skeleton.limb_array,
        float(cfg.peak_threshold), float(cfg.min_peak_distance / cfg.working_stride), int(cfg.max_peaks),
        int(cfg.paf_samples), float(cfg.paf_threshold), float(cfg.paf_min_fraction),
        float(cfg.length_prior * heat.shape[1]), int(cfg.min_keypoints), float(cfg.min_score),
        bool(cfg.fill_missing), float(cfg.fill_margin))
    return _to_input_pixels(kps, scores, cfg.working_stride)


def decode_single(heatmaps: np.ndarray, stride: int, config: DecoderConfig | None = None,
                  num_keypoints: int | None = None) -> Poses:
    """One person from heatmaps alone (single-person models, e.g. MPII hourglasses: no PAFs).

    Each keypoint is its channel's maximum, refined to sub-cell precision by a parabola through
    the neighbours (as the multi-person decoder does), at the cell-centre convention
    ``((j + .5) s - .5, (i + .5) s - .5)``; a maximum at or below ``peak_threshold`` is "not
    found" (0, 0, 0). The person's score is the mean of the found keypoints' scores; no keypoint
    above the threshold, or fewer than ``min_keypoints``, gives no person.

    Args:
        heatmaps: (C, h, w) activated heatmaps (a background channel after the keypoints is ignored).
        stride: input pixels per heatmap cell.
        num_keypoints: keypoint channels (default: all of C).
    """
    cfg = config or DecoderConfig()
    hm = np.asarray(heatmaps, dtype=np.float32)
    k = int(num_keypoints or hm.shape[0])
    h, w = hm.shape[1:]
    kps = np.zeros((1, k, 3), np.float32)
    for c in range(k):
        ch = hm[c]
        flat = int(np.argmax(ch))
        i, j = divmod(flat, w)
        v = float(ch[i, j])
        if not v > cfg.peak_threshold:
            continue
        dx = dy = 0.0
        if 0 < j < w - 1:
            a, b = float(ch[i, j - 1]), float(ch[i, j + 1])
            den = a - 2 * v + b
            dx = 0.5 * (a - b) / den if den < 0 else 0.0
        if 0 < i < h - 1:
            a, b = float(ch[i - 1, j]), float(ch[i + 1, j])
            den = a - 2 * v + b
            dy = 0.5 * (a - b) / den if den < 0 else 0.0
        kps[0, c] = ((j + dx + 0.5) * stride - 0.5, (i + dy + 0.5) * stride - 0.5, min(v, 1.0))
    found = kps[0, :, 2] > 0
    if found.sum() < max(1, min(cfg.min_keypoints, k)):
        return Poses(np.zeros((0, k, 3), np.float32), np.zeros(0, np.float32))
    return Poses(kps, np.array([kps[0, found, 2].mean()], np.float32))
