"""``movenet_paf``: the shipped real-time model — MoveNet MultiPose Lightning's backbone + FPN with
bottom-up heatmap and Part Affinity Field heads on the stride-4 FPN output.

Backbone and FPN: **MoveNet MultiPose Lightning** by Google, released under the Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0; TF Hub ``google/movenet/multipose/lightning/1``).
Implemented here from the specification in ``../shared/data/init/SPEC.md``; the weights
(``movenet_multipose_backbone.npz``, the published float16 values) are loaded with
``load_state_dict(strict=True)`` and are not part of this repository's source. The heatmap head may
start from MoveNet's keypoint-heatmap head (``movenet_multipose_heads.npz``). Trained checkpoints of
this model are derived works of those weights and carry the same licence.

Architecture (SPEC.md §3–4): a MobileNetV2-style backbone (width ≈1.5, batch norms folded into the
conv biases, ReLU6, TF "SAME" padding: stride-2 convs pad bottom/right only) tapped at strides 4, 8,
16 and 32, and a top-down FPN (1×1 laterals, bilinear ×2 upsampling, separable 3×3 smoothing, ReLU)
ending in P2: 24 channels at stride 4. Input: RGB ``pixel / 127.5 - 1`` (``mean = std = 0.5``),
sides multiple of 32.

Heads on P2, chosen for real time (NOTES.md: at 256–320 px inputs a stride-8 grid is 32–40 cells and a
medium person's limbs span 1–2 cells, too short for PAF line integrals, so the heads stay at stride 4):

* heatmaps (17 logits, no background channel; decode with a sigmoid, train with the focal loss):
  MoveNet's own head shape — depthwise 3×3 → 1×1 to 96 → ReLU → 1×1 — so that it can start from
  MoveNet's trained keypoint-heatmap head;
* PAFs (2 × 20 limbs): three separable 5×5 layers (depthwise 5×5 + 1×1 to 128, BatchNorm, ReLU) and a
  1×1 to 40 channels (≈ 48 k parameters).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..registry import register_model
from .base import PoseNet

__all__ = ["MOVENET_HEADS", "MoveNetBackbone", "MoveNetOriginal", "MoveNetPAF", "load_npz_state", "movenet_paf"]

# Blocks 0..16 (SPEC.md §3): expand ratio (block 0 has no expand conv) and stride are the same in
# every MoveNet; the widths are what differ between MultiPose Lightning and SinglePose Thunder
# (thunder/SPEC.md §2: width ≈ 1.75 instead of 1.5).
_EXPAND = (1,) + (6,) * 16
_STRIDES = (1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1)
WIDTHS = {
    # name: (stem channels, out channels of blocks 0..16)
    "multipose": (48, (24, 40, 40, 48, 48, 48, 96, 96, 96, 96, 144, 144, 144, 240, 240, 240, 480)),
    "thunder": (56, (32, 40, 40, 56, 56, 56, 112, 112, 112, 112, 168, 168, 168, 280, 280, 280, 560)),
}
_TAPS = {2: "C2", 5: "C3", 9: "C4"}


def _same_s2(x: torch.Tensor) -> torch.Tensor:
    """TF 'SAME' padding of a 3x3 stride-2 conv on an even-sized input: one pixel bottom/right."""
    return F.pad(x, (0, 1, 0, 1))


def _relu6(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, 0.0, 6.0)


class _Stem(nn.Module):
    def __init__(self, width: int = 48) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _relu6(self.conv(_same_s2(x)))


class _Block(nn.Module):
    """Inverted residual: [1x1 expand, ReLU6] → 3x3 depthwise, ReLU6 → 1x1 project (linear) [+ x]."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self.expand = nn.Conv2d(cin, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, stride, 0 if stride == 2 else 1, groups=hidden)
        self.project = nn.Conv2d(hidden, cout, 1)
        self.stride = stride
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _relu6(self.expand(x)) if hasattr(self, "expand") else x
        h = _relu6(self.dw(_same_s2(h) if self.stride == 2 else h))
        h = self.project(h)
        return x + h if self.residual else h


class _SepConv(nn.Module):
    """FPN smoothing: depthwise 3x3 (no bias) → 1x1 with bias → ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pw(self.dw(x)))


class _FPN(nn.Module):
    def __init__(self, c2: int = 40, c3: int = 48, c4: int = 96) -> None:
        super().__init__()
        self.lateral5 = nn.Conv2d(1280, 64, 1)
        self.lateral4 = nn.Conv2d(c4, 64, 1)
        self.lateral3 = nn.Conv2d(c3, 32, 1)
        self.lateral2 = nn.Conv2d(c2, 24, 1)
        self.smooth4 = _SepConv(64, 32)
        self.smooth3 = _SepConv(32, 24)
        self.smooth2 = _SepConv(24, 24)

    @staticmethod
    def _up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, c2, c3, c4, c5) -> dict[str, torch.Tensor]:
        p4 = self.smooth4(self._up(self.lateral5(c5)) + self.lateral4(c4))
        p3 = self.smooth3(self._up(p4) + self.lateral3(c3))
        p2 = self.smooth2(self._up(p3) + self.lateral2(c2))
        return {"P4": p4, "P3": p3, "P2": p2}


class MoveNetBackbone(nn.Module):
    """MobileNetV2 backbone + FPN of MoveNet (SPEC.md): ``width="multipose"`` (MultiPose Lightning,
    the state-dict names of ``movenet_multipose_backbone.npz``) or ``"thunder"`` (SinglePose
    Thunder, thunder/SPEC.md §2: the same layers, wider). The FPN's P4/P3/P2 widths are the same in both.

    ``forward(x)`` returns P2 (B, 24, H/4, W/4); :meth:`features` returns every tap
    (C2, C3, C4, C5, P4, P3, P2) for parity checks.
    """

    def __init__(self, width: str = "multipose") -> None:
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"unknown MoveNet width {width!r}; known: {', '.join(WIDTHS)}")
        stem, outs = WIDTHS[width]
        self.width = width
        self.stem = _Stem(stem)
        blocks, cin = [], stem
        for expand, cout, stride in zip(_EXPAND, outs, _STRIDES):
            blocks.append(_Block(cin, cout, expand, stride))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.last_conv = nn.Conv2d(outs[-1], 1280, 1)
        self.fpn = _FPN(c2=outs[2], c3=outs[5], c4=outs[9])

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps = {}
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in _TAPS:
                taps[_TAPS[i]] = x
        taps["C5"] = _relu6(self.last_conv(x))
        taps.update(self.fpn(taps["C2"], taps["C3"], taps["C4"], taps["C5"]))
        return taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["P2"]


def load_npz_state(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Arrays of an npz file as a float32 state dict (keys optionally filtered by ``prefix``, which
    is removed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    with np.load(path) as z:
        return {k[len(prefix):]: torch.from_numpy(np.asarray(z[k])).float() for k in z.files if k.startswith(prefix)}


class _HeatHead(nn.Module):
    """MoveNet's head shape: depthwise 3x3 (no bias) → 1x1 to ``width`` + ReLU → 1x1 to ``n``."""

    def __init__(self, cin: int, n: int, width: int = 96) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, width, 1)
        self.out = nn.Conv2d(width, n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.pw(self.dw(x))))


# MoveNet MultiPose's own heads on P2 and their output channels (SPEC.md §8)
MOVENET_HEADS = {"center": 1, "kpt_heatmap": 17, "kpt_regress": 34, "kpt_offset": 34, "box_scale": 2, "box_offset": 2}


class MoveNetOriginal(nn.Module):
    """MoveNet MultiPose Lightning as Google published it: backbone + FPN + its six CenterNet-style
    heads on P2 (SPEC.md §8), without the in-graph decoding. Not a posestream model (no PAFs): it
    is the **timing reference** of ``posestream bench models`` — ../shared/NOTES.md measured this
    network at 13.0 ms at 320² (ONNX Runtime, 2 threads), so timing both side by side tells how
    fast this machine is now compared with that one.
    """

    input_size = 320
    input_multiple = 32
    output_names = list(MOVENET_HEADS)

    def __init__(self) -> None:
        super().__init__()
        self.backbone = MoveNetBackbone()
        self.heads = nn.ModuleDict({name: _HeatHead(24, n) for name, n in MOVENET_HEADS.items()})

    def load_pretrained(self, init_dir: str | Path) -> None:
        d = Path(init_dir)
        self.backbone.load_state_dict(load_npz_state(d / "movenet_multipose_backbone.npz"), strict=True)
        self.heads.load_state_dict(load_npz_state(d / "movenet_multipose_heads.npz", "heads."), strict=True)

    def meta(self) -> dict:
        return {"arch": "movenet_multipose_original", "input_size": self.input_size}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p2 = self.backbone(x)
        return tuple(head(p2) for head in self.heads.values())


def _sep_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, k, 1, k // 2, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MoveNetPAF(PoseNet):
    """MoveNet MultiPose Lightning backbone + FPN (Google, Apache-2.0) with heatmap + PAF heads at
    stride 4 (see the module docstring)."""

    stride = 4
    num_stages = 1
    input_size = 320
    input_multiple = 32

    def __init__(self, skeleton: str = "coco17", paf_width: int = 128, paf_depth: int = 3, paf_kernel: int = 5,
                 heat_width: int = 96, relation: dict | None = None) -> None:
        super().__init__(skeleton=skeleton, background=False, with_pafs=True, mean=(0.5, 0.5, 0.5),
                         std=(0.5, 0.5, 0.5))
        self.backbone = MoveNetBackbone()
        self.heat = _HeatHead(24, self.num_heatmaps, heat_width)
        layers, cin = [], 24
        for _ in range(paf_depth):
            layers.append(_sep_bn_relu(cin, paf_width, paf_kernel))
            cin = paf_width
        self.paf_trunk = nn.Sequential(*layers)
        self.paf = nn.Conv2d(paf_width, self.num_pafs, 1)
        nn.init.normal_(self.paf.weight, std=0.01)
        nn.init.zeros_(self.paf.bias)
        # focal-loss logits: start the heatmaps near p = 0.01 (overwritten by a MoveNet head init)
        nn.init.constant_(self.heat.out.bias, -4.6)
        # optional joint-relation refinement of the heatmap logits from P2 (joint_relation.py; an exact
        # identity at initialisation, so it trains on top of a frozen heatmap head)
        self.relation = None
        if relation is not None:
            from .joint_relation import JointRelationModule

            self.relation = JointRelationModule(24, self.num_heatmaps, **relation)

    def load_pretrained(self, init_dir: str | Path) -> list[str]:
        """Load MoveNet's backbone + FPN (strict) and, when the skeleton is COCO-17 and the file is
        there, its keypoint-heatmap head. Returns what was loaded."""
        d = Path(init_dir)
        self.backbone.load_state_dict(load_npz_state(d / "movenet_multipose_backbone.npz"), strict=True)
        loaded = ["backbone+fpn"]
        heads = d / "movenet_multipose_heads.npz"
        if heads.is_file() and self.skeleton.name == "coco17" and self.heat.pw.out_channels == 96:
            self.heat.load_state_dict(load_npz_state(heads, "heads.kpt_heatmap."), strict=True)
            loaded.append("kpt_heatmap head")
        return loaded

    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        p2 = self.backbone(x)
        heat = self.heat(p2)
        if self.relation is not None:
            heat = self.relation(p2, heat)
        return [(heat, self.paf(self.paf_trunk(p2)))]


@register_model
def movenet_paf(**kw) -> MoveNetPAF:
    """Shipped real-time model: MoveNet MultiPose backbone+FPN (Apache-2.0), heatmap + PAF heads at stride 4."""
    return MoveNetPAF(**kw)
