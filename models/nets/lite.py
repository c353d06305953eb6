"""``lite``: a small real-time bottom-up model for CPUs, the pipeline's default.

Design (in the spirit of Lightweight OpenPose, Osokin 2018, which puts CMU-style stages on a
MobileNet): a MobileNetV2-style backbone of inverted residual blocks (Sandler et al., CVPR 2018)
to stride 8, a light top-down merge with the stride-4 features (a head on stride 4 resolves the
limbs of medium people at 256-320 px inputs, where a stride-8 grid is only 32-40 cells), then a
CMU-style initial stage and one refinement stage built from depthwise-separable convolutions. The
refinement stage sees the features concatenated with the first stage's heatmaps and PAFs.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..registry import register_model
from .base import PoseNet, conv_bn_relu

__all__ = ["InvertedResidual", "SeparableConv", "LiteBackbone", "LiteStage", "LitePose"]


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 project (linear); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(conv_bn_relu(cin, hidden, 1), conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
                                  conv_bn_relu(hidden, cout, 1, relu=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class SeparableConv(nn.Sequential):
    """Depthwise k x k + pointwise 1x1, each with BatchNorm and ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__(conv_bn_relu(cin, cin, k, groups=cin), conv_bn_relu(cin, cout, 1))


class LiteBackbone(nn.Module):
    """Stride-2 stem, inverted residual blocks to stride 8, merged back to stride 4.

    Returns (B, width, H/4, W/4) features.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, 16, 3, 2), InvertedResidual(16, 16, 1, 1))
        self.s4 = nn.Sequential(InvertedResidual(16, 24, 2), InvertedResidual(24, 24))
        self.s8 = nn.Sequential(InvertedResidual(24, 48, 2), InvertedResidual(48, 48), InvertedResidual(48, 64),
                                InvertedResidual(64, 96), InvertedResidual(96, 96))
        self.lat4 = conv_bn_relu(24, width, 1)
        self.lat8 = conv_bn_relu(96, width, 1)
        self.merge = SeparableConv(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c4 = self.s4(self.stem(x))
        c8 = self.s8(c4)
        up = F.interpolate(self.lat8(c8), size=c4.shape[-2:], mode="nearest")
        return self.merge(self.lat4(c4) + up)


class LiteStage(nn.Module):
    """Shared trunk of separable convs, then 1x1 heads for heatmaps and PAFs."""

    def __init__(self, cin: int, width: int, num_heatmaps: int, num_pafs: int, depth: int = 3, k: int = 3) -> None:
        super().__init__()
        layers = [conv_bn_relu(cin, width, 1)] if cin != width else []
        layers += [SeparableConv(width, width, k) for _ in range(depth)]
        self.trunk = nn.Sequential(*layers)
        self.heat = nn.Conv2d(width, num_heatmaps, 1)
        self.paf = nn.Conv2d(width, num_pafs, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.trunk(x)
        return self.heat(t), self.paf(t)


class LitePose(PoseNet):
    """Light backbone (stride 4) + initial stage + ``num_refine`` refinement stages."""

    stride = 4
    input_size = 256
    input_multiple = 8

    def __init__(self, width: int = 64, num_refine: int = 1, **kw) -> None:
        super().__init__(**kw)
        self.num_stages = 1 + num_refine
        self.backbone = LiteBackbone(width)
        self.initial = LiteStage(width, width, self.num_heatmaps, self.num_pafs, depth=3, k=3)
        cin = width + self.num_heatmaps + self.num_pafs
        self.refine = nn.ModuleList(LiteStage(cin, width, self.num_heatmaps, self.num_pafs, depth=3, k=5)
                                    for _ in range(num_refine))

    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        f = self.backbone(x)
        s, l = self.initial(f)
        out = [(s, l)]
        for stage in self.refine:
            s, l = stage(torch.cat([f, s, l], dim=1))
            out.append((s, l))
        return out


@register_model
def lite(**kw) -> LitePose:
    """Small real-time model: MobileNetV2-style backbone merged to stride 4, 2 separable stages."""
    return LitePose(**kw)
