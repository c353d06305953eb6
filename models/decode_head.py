"""Decoding on the runtime: the upsampling and peak NMS of the decoder as layers of the network.

The host decoder (``fields/decoder.py``) resamples all 57 maps bicubically to the working stride and
scans every cell for 3x3 maxima before grouping. With :class:`GraphDecoder` around a bottom-up
network, the exported graph does both and the host receives what grouping needs:

- ``heatmaps_up`` (B, K, H, W): the (activated) heatmaps at the working stride — the bicubic
  upsampling written as a polyphase convolution, the same values as OpenCV's ``INTER_CUBIC``
  (a = -0.75, half-pixel centres, edge pixels replicated) to float rounding. ONNX ``Resize`` in
  cubic mode computes the same but took 40-50 ms in ONNX Runtime for 17 maps (its cubic kernel is
  scalar); two depthwise convolutions take ~1 ms.
- ``peak_scores``, ``peak_index`` (B, K, C): per keypoint type the ``C`` strongest 3x3 local maxima
  of ``heatmaps_up`` (separable ``MaxPool``, then ``TopK`` over the flattened map; where there are
  fewer, cells that are no maximum follow, pushed down by ``NOT_A_PEAK``). The host applies the threshold, the minimum distance and ``max_peaks`` to this list,
  and scans the full map only when the list may have been cut short (all C above the threshold).
- ``heatmaps``, ``pafs``: the network's own outputs, unchanged (first, so code that reads outputs
  0 and 1 sees the same network). Grouping samples the PAFs where it needs them, bicubically from
  the network's stride (``fields/_numba.py``), instead of upsampling 38 maps of which it reads a
  few hundred cells.

The graph's constants are in the export's metadata under ``graph_decode``:
``{"factor": stride / working stride, "candidates": C, "activation": ...}``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DecodeHead", "GraphDecoder", "bicubic_phase_weights", "graph_factor", "CANDIDATES", "OUTPUT_NAMES"]

CANDIDATES = 64  # peak candidates per keypoint type (the decoder's max_peaks default; more: the host scans)
NOT_A_PEAK = 1.0e4  # subtracted from cells that are not 3x3 maxima before TopK (cheaper than Where(-inf))
OUTPUT_NAMES = ("heatmaps", "pafs", "heatmaps_up", "peak_scores", "peak_index")
CUBIC_A = -0.75  # OpenCV's (and PyTorch's) bicubic coefficient


def _cubic_weights(t: float) -> list[float]:
    """The 4 tap weights at fractional offset t in [0, 1) (taps at floor - 1 .. floor + 2)."""
    a = CUBIC_A
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return [w0, w1, w2, 1.0 - w0 - w1 - w2]


def bicubic_phase_weights(factor: int) -> np.ndarray:
    """(factor, 5) float32: output cell ``factor * s + p`` = sum_j W[p, j] * source[s - 2 + j].

    Half-pixel centres: output p of source cell s sits at source coordinate s + (p + 0.5) / factor
    - 0.5, whose floor is s - 1 or s, so its 4 taps lie within s - 2 .. s + 2."""
    w = np.zeros((factor, 5), np.float64)
    for p in range(factor):
        d = (p + 0.5) / factor - 0.5
        fl = math.floor(d)
        for i, wi in enumerate(_cubic_weights(d - fl)):
            w[p, fl - 1 + i + 2] += wi
    return w.astype(np.float32)


def graph_factor(stride: float, working_stride: float) -> int | None:
    """The integer upsampling factor stride / working_stride, or None when it is not an integer."""
    f = float(stride) / float(working_stride)
    return int(round(f)) if f >= 1 and abs(f - round(f)) < 1e-9 else None


class DecodeHead(nn.Module):
    """(heatmaps at the network stride) -> (heatmaps_up, peak_scores, peak_index); see the module doc."""

    def __init__(self, num_keypoints: int, factor: int, candidates: int = CANDIDATES, activation: str = "identity"):
        super().__init__()
        if activation not in ("identity", "sigmoid"):
            raise ValueError(f"unknown heatmap activation {activation!r}")
        self.k, self.factor, self.candidates, self.activation = int(num_keypoints), int(factor), int(candidates), activation
        w = torch.from_numpy(bicubic_phase_weights(self.factor))
        self.register_buffer("wx", w[:, None, None, :].repeat(self.k, 1, 1, 1), persistent=False)  # (K f, 1, 1, 5)
        self.register_buffer("wy", w[:, None, :, None].repeat(self.k, 1, 1, 1), persistent=False)  # (K f, 1, 5, 1)

    def upsample(self, h: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) -> (B, K, f h, f w) bicubic (edge replicated), as two depthwise convolutions."""
        f = self.factor
        if f == 1:
            return h
        b, k, hh, ww = h.shape
        x = F.pad(h, (2, 2, 2, 2), mode="replicate")
        x = F.conv2d(x, self.wx, groups=k)  # (B, K f, h + 4, w): phase p of column s in channel k f + p
        x = x.reshape(b, k, f, hh + 4, ww).permute(0, 1, 3, 4, 2).reshape(b, k, hh + 4, ww * f)
        x = F.conv2d(x, self.wy, groups=k)  # (B, K f, h, f w)
        return x.reshape(b, k, f, hh, ww * f).permute(0, 1, 3, 2, 4).reshape(b, k, hh * f, ww * f)

    def forward(self, heatmaps: torch.Tensor):
        h = heatmaps[:, : self.k]
        if self.activation == "sigmoid":
            h = torch.sigmoid(h)
        up = self.upsample(h)
        # 3x3 maximum as two separable pools (ONNX Runtime's 3x3 MaxPool is ~2x slower)
        pooled = F.max_pool2d(F.max_pool2d(up, (1, 3), 1, (0, 1)), (3, 1), 1, (1, 0))
        masked = up - (up < pooled).to(up.dtype) * NOT_A_PEAK
        scores, index = masked.flatten(2).topk(self.candidates, dim=2)
        return up, scores, index

    def meta(self) -> dict:
        return {"factor": self.factor, "candidates": self.candidates, "activation": self.activation}


class GraphDecoder(nn.Module):
    """A bottom-up PoseNet with the :class:`DecodeHead` after it: outputs :data:`OUTPUT_NAMES`."""

    output_names = list(OUTPUT_NAMES)

    def __init__(self, model: nn.Module, meta: dict | None = None, working_stride: float = 2.0,
                 candidates: int = CANDIDATES):
        """``meta``: the checkpoint's metadata (its ``heatmap_activation``); default ``model.meta()``."""
        super().__init__()
        if not getattr(model, "with_pafs", False):
            raise ValueError("decoding in the graph needs a bottom-up model with PAFs")
        factor = graph_factor(model.stride, working_stride)
        if factor is None:
            raise ValueError(f"stride {model.stride} / working stride {working_stride:g} is not an integer")
        meta = dict(meta if meta is not None else model.meta())
        self._meta = {k: v for k, v in meta.items() if k != "graph_decode"}
        self.model = model
        self.head = DecodeHead(model.skeleton.num_keypoints, factor, candidates,
                               meta.get("heatmap_activation", "identity"))
        self.input_size, self.input_multiple = model.input_size, model.input_multiple
        self.stride, self.with_pafs, self.skeleton = model.stride, True, model.skeleton

    def forward(self, x: torch.Tensor):
        heat, paf = self.model(x)[:2]
        return (heat, paf) + tuple(self.head(heat))

    def meta(self) -> dict:
        return {**self._meta, "graph_decode": self.head.meta()}
