"""Stacked hourglass networks: the original single-scale stack and a multi-scale cascade.

Sources:
  * Newell, Yang, Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016:
    7x7/2 conv stem, pre-activation bottleneck residual modules everywhere, hourglasses of depth 4
    (max-pool down, nearest upsample up, a residual skip branch at every resolution), one
    supervised prediction per hourglass, and the predictions plus the features remapped by 1x1
    convs and added to the next hourglass's input. Output stride 4 (64x64 maps for 256x256).
  * Multi-scale cascaded hourglass (patent, Hangzhou Dianzi University): three groups of
    hourglasses at strides 2, 4 and 8, each group fed by its own stem branch at that scale and by
    the features and predictions of the group before it. The patent text is not at hand; the
    design implemented here is spelt out in :class:`MultiScaleHourglass`.

Both networks predict heatmaps (``num_heatmaps`` channels) and, when ``with_pafs``, part affinity
fields (``num_pafs`` channels) after every hourglass; see :mod:`.base` for the forward contract.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_model
from .base import PoseNet, conv_bn_relu

__all__ = ["Residual", "Hourglass", "PredictionHead", "HourglassStack", "StackedHourglassStem",
           "MultiScaleStem", "ScaleBridge", "StackedHourglass", "MultiScaleHourglass"]


# ---------------------------------------------------------------------------------------------
# building blocks


class Residual(nn.Module):
    """Pre-activation bottleneck residual module (the paper's Fig. 4, left).

    BN-ReLU-conv1x1(C/2), BN-ReLU-conv3x3(C/2), BN-ReLU-conv1x1(C), added to the input; the input
    goes through a 1x1 conv when the channels or the resolution change.

    Args:
        cin: input channels.
        cout: output channels C.
        stride: 1, or 2 to halve the resolution (strided 3x3 conv and strided 1x1 skip conv).

    Shapes: ``(B, cin, H, W) -> (B, cout, H / stride, W / stride)``.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        mid = cout // 2
        # Convs followed by a BatchNorm carry no bias: the BN's shift makes it redundant.
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1),
        )
        self.skip = nn.Conv2d(cin, cout, 1, stride) if cin != cout or stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Hourglass(nn.Module):
    """One hourglass of the given depth (the paper's Fig. 3), built recursively.

    Level ``depth``: ``up = Residual(x)``; ``low = Residual(maxpool(x))``, then an hourglass of
    depth ``depth - 1`` (or one more residual module at the bottom), then a residual module;
    ``out = up + upsample_nearest(low)``.

    Args:
        depth: number of 2x poolings; the deepest level sees ``H / 2**depth``.
        channels: channels C kept at every level.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``, ``H`` and ``W`` multiples of ``2**depth``.
    """

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"hourglass depth must be >= 1, got {depth}")
        self.up = Residual(channels, channels)
        self.down = Residual(channels, channels)
        self.inner = Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        self.after = Residual(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        low = self.after(self.inner(self.down(F.max_pool2d(x, 2))))
        return up + F.interpolate(low, scale_factor=2.0, mode="nearest")


class PredictionHead(nn.Module):
    """1x1 conv prediction heads: heatmaps and, optionally, PAFs.

    Args:
        channels: input feature channels C.
        num_heatmaps: heatmap channels (keypoints [+ background]).
        num_pafs: PAF channels (2 per limb); 0 for a heatmap-only head.

    Shapes: ``(B, C, H, W) -> ((B, num_heatmaps, H, W), (B, num_pafs, H, W))``, or a 1-tuple of
    heatmaps when ``num_pafs == 0``.
    """

    def __init__(self, channels: int, num_heatmaps: int, num_pafs: int) -> None:
        super().__init__()
        self.heatmaps = nn.Conv2d(channels, num_heatmaps, 1)
        self.pafs = nn.Conv2d(channels, num_pafs, 1) if num_pafs else None
        self.out_channels = num_heatmaps + num_pafs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.pafs is None:
            return (self.heatmaps(x),)
        return self.heatmaps(x), self.pafs(x)


class HourglassStack(nn.Module):
    """One supervised stack: hourglass, residual module, 1x1 conv-BN-ReLU, prediction heads.

    With ``remap``, the next stack's input is formed as in the paper:
    ``x + conv1x1(concat(predictions)) + conv1x1(features)``. The last stack of a network has no
    remap (its convs would get no gradient).

    Args:
        channels: feature channels C.
        depth: hourglass depth.
        num_heatmaps, num_pafs: prediction channels (see :class:`PredictionHead`).
        remap: whether to build the input of a following stack.

    Shapes: ``(B, C, H, W) -> (predictions, next_x)``; ``predictions`` as
    :class:`PredictionHead`, ``next_x`` ``(B, C, H, W)`` (``None`` without ``remap``).
    """

    def __init__(self, channels: int, depth: int, num_heatmaps: int, num_pafs: int, remap: bool) -> None:
        super().__init__()
        self.hourglass = Hourglass(depth, channels)
        self.residual = Residual(channels, channels)
        self.features = conv_bn_relu(channels, channels, k=1)
        self.head = PredictionHead(channels, num_heatmaps, num_pafs)
        self.remap_predictions = nn.Conv2d(self.head.out_channels, channels, 1) if remap else None
        self.remap_features = nn.Conv2d(channels, channels, 1) if remap else None

    def forward(self, x: torch.Tensor, relation: nn.Module | None = None
                ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
        features = self.features(self.residual(self.hourglass(x)))
        predictions = self.head(features)
        if relation is not None:  # joint-relation refinement of the heatmaps (joint_relation.py)
            predictions = (relation(features, predictions[0]),) + tuple(predictions[1:])
        if self.remap_predictions is None or self.remap_features is None:
            return predictions, None
        merged = torch.cat(predictions, 1) if len(predictions) > 1 else predictions[0]
        return predictions, x + self.remap_predictions(merged) + self.remap_features(features)


class StackedHourglassStem(nn.Sequential):
    """The paper's stem: 7x7/2 conv (64) + BN + ReLU, residual to 128, max-pool, two residuals.

    Shapes: ``(B, 3, H, W) -> (B, channels, H / 4, W / 4)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(conv_bn_relu(3, 64, k=7, stride=2), Residual(64, 128), nn.MaxPool2d(2),
                         Residual(128, 128), Residual(128, channels))


class MultiScaleStem(nn.Module):
    """Input features at strides 2, 4 and 8 for the three stages of :class:`MultiScaleHourglass`.

    A 7x7/2 conv (64) + BN + ReLU is shared; from it, three branches:
    stride 2: ``Residual(64, widths[0])``;
    stride 4: ``Residual(64, 128, stride=2)``, ``Residual(128, widths[1])``;
    stride 8: ``Residual(64, 128, stride=2)``, ``Residual(128, widths[2], stride=2)``.

    Args:
        widths: output channels at strides 2, 4, 8.

    Shapes: ``(B, 3, H, W) -> [(B, widths[i], H / s, W / s) for s in (2, 4, 8)]``.
    """

    def __init__(self, widths: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = conv_bn_relu(3, 64, k=7, stride=2)
        self.branch2 = Residual(64, widths[0])
        self.branch4 = nn.Sequential(Residual(64, 128, stride=2), Residual(128, widths[1]))
        self.branch8 = nn.Sequential(Residual(64, 128, stride=2), Residual(128, widths[2], stride=2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.conv(x)
        return [self.branch2(x), self.branch4(x), self.branch8(x)]


class ScaleBridge(nn.Module):
    """Joins a stage's output into the next, coarser stage (half the resolution).

    ``conv1x1-BN-ReLU(concat(conv3x3/2-BN-ReLU(x), avgpool2(predictions), skip))``. Predictions
    are average-pooled rather than max-pooled: PAFs are signed vectors, and averaging keeps their
    sign and direction.

    Args:
        cin: channels of the previous stage's features ``x``.
        cpred: channels of its (concatenated) predictions.
        cout: channels of the next stage (and of its stem features ``skip``).

    Shapes: ``x (B, cin, H, W)``, ``predictions (B, cpred, H, W)``, ``skip (B, cout, H/2, W/2)``
    ``-> (B, cout, H/2, W/2)``.
    """

    def __init__(self, cin: int, cpred: int, cout: int) -> None:
        super().__init__()
        self.down = conv_bn_relu(cin, cout, k=3, stride=2)
        self.join = conv_bn_relu(cout + cpred + cout, cout, k=1)

    def forward(self, x: torch.Tensor, predictions: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.join(torch.cat([self.down(x), F.avg_pool2d(predictions, 2), skip], 1))


# ---------------------------------------------------------------------------------------------
# networks


class StackedHourglass(PoseNet):
    """Newell et al.'s stacked hourglass network, with an optional PAF head.

    Stem (:class:`StackedHourglassStem`) to stride 4, then ``num_stacks`` :class:`HourglassStack`
    s of depth ``depth``; every stack is supervised (training mode returns ``num_stacks`` outputs,
    all at stride 4).

    Args:
        num_stacks: number of hourglasses (the paper's 8).
        features: channels of the hourglasses (the paper's 256).
        depth: hourglass depth (the paper's 4); input sides must be multiples of ``4 * 2**depth``.
        relation: arguments of a :class:`JointRelationModule` shared by all stacks that refines each
            stack's heatmaps from its features (None: no relation module).
        **base: :class:`PoseNet` arguments (skeleton, background, with_pafs, mean, std).

    Shapes: ``x (B, 3, H, W)`` -> per stage ``heatmaps (B, num_heatmaps, H/4, W/4)`` [,
    ``pafs (B, num_pafs, H/4, W/4)``].
    """

    stride = 4
    input_size = 256
    input_multiple = 64

    def __init__(self, num_stacks: int = 8, features: int = 256, depth: int = 4, relation: dict | None = None,
                 **base) -> None:
        super().__init__(**base)
        if num_stacks < 1:
            raise ValueError(f"num_stacks must be >= 1, got {num_stacks}")
        self.relation = None
        if relation is not None:
            from .joint_relation import JointRelationModule

            self.relation = JointRelationModule(features, self.skeleton.num_keypoints, **relation)
        self.num_stages = num_stacks
        self.input_multiple = self.stride * 2 ** depth
        self.stem = StackedHourglassStem(features)
        self.stacks = nn.ModuleList(
            HourglassStack(features, depth, self.num_heatmaps, self.num_pafs, remap=i < num_stacks - 1)
            for i in range(num_stacks))

    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        x = self.stem(x)
        outputs = []
        for stack in self.stacks:
            predictions, x = stack(x, self.relation)
            outputs.append(predictions)
        return outputs


class MultiScaleHourglass(PoseNet):
    """Multi-scale cascaded hourglass network (after the Hangzhou Dianzi University patent).

    Design (the patent text was not available; this is the specification implemented):

    * Stem (:class:`MultiScaleStem`): a shared 7x7/2 conv, then branches giving input features at
      strides 2, 4 and 8 (128x128, 64x64 and 32x32 for a 256x256 input).
    * Stage A, stride 2: ``stacks[0]`` "modified" hourglasses. The modification: at the highest
      resolution the hourglasses run at half width (``high_res_features``, default
      ``features // 2``) and depth 3 instead of 4, which keeps a stride-2 hourglass about as
      costly as a full-width stride-4 one (4x the pixels, 1/4 of the MACs per pixel) while its
      deepest level (16x16 for 256 input) still sees the whole body.
    * Stage B, stride 4: a :class:`ScaleBridge` downsamples stage A's last features (3x3/2 conv)
      and predictions (2x2 average pooling), concatenates them with the stride-4 stem features
      and mixes them with a 1x1 conv; then ``stacks[1]`` full-width (``features``) hourglasses of
      depth 4, as in the stacked hourglass.
    * Stage C, stride 8: the same bridge from stage B, then ``stacks[2]`` full-width hourglasses
      of depth 3 (32x32 -> 4x4 at the bottom for 256 input).
    * Every hourglass is a supervised :class:`HourglassStack`: its predictions (heatmaps [+ PAFs])
      at its own stride, remapped by 1x1 convs and added to the features with its own features,
      as in the stacked hourglass. The features passed to a bridge are this remapped sum.

    Training mode returns ``sum(stacks)`` outputs with strides ``stage_strides`` (default
    ``(2, 2, 4, 4, 4, 4, 8, 8)``); eval mode returns the last, at ``stride = 8``.
    ``input_multiple = max(stride_i * 2**depth_i) = 64`` for the default depths ``(3, 4, 3)``:
    every level pools evenly and the deepest levels are at least 1x1 (a 64x64 input gives 32, 16
    and 8 pixel stages with 4x4, 1x1 and 1x1 bottoms).

    Args:
        stacks: number of hourglasses at strides 2, 4, 8; each at least 1.
        features: channels at strides 4 and 8.
        high_res_features: channels at stride 2 (default ``features // 2``).
        depths: hourglass depth per stage.
        **base: :class:`PoseNet` arguments (skeleton, background, with_pafs, mean, std).

    Shapes: ``x (B, 3, H, W)`` -> per stage ``heatmaps (B, num_heatmaps, H/s, W/s)`` [,
    ``pafs (B, num_pafs, H/s, W/s)``], ``s`` from ``stage_strides``.
    """

    stride = 8
    input_size = 256
    input_multiple = 64
    scale_strides = (2, 4, 8)

    def __init__(self, stacks: tuple[int, int, int] = (2, 4, 2), features: int = 256,
                 high_res_features: int | None = None, depths: tuple[int, int, int] = (3, 4, 3), **base) -> None:
        super().__init__(**base)
        stacks, depths = tuple(stacks), tuple(depths)
        if len(stacks) != 3 or min(stacks) < 1:
            raise ValueError(f"stacks must be three counts >= 1 (strides 2, 4, 8), got {stacks}")
        if len(depths) != 3 or min(depths) < 1:
            raise ValueError(f"depths must be three depths >= 1 (strides 2, 4, 8), got {depths}")
        widths = (high_res_features or features // 2, features, features)
        self.num_stages = sum(stacks)
        self.stage_strides = tuple(s for s, n in zip(self.scale_strides, stacks) for _ in range(n))
        self.input_multiple = max(s * 2 ** d for s, d in zip(self.scale_strides, depths))
        self.stem = MultiScaleStem(widths)
        cpred = self.num_heatmaps + self.num_pafs
        self.bridges = nn.ModuleList(ScaleBridge(widths[i], cpred, widths[i + 1]) for i in range(2))
        self.stages = nn.ModuleList(
            nn.ModuleList(HourglassStack(widths[s], depths[s], self.num_heatmaps, self.num_pafs,
                                         remap=not (s == 2 and i == n - 1)) for i in range(n))
            for s, n in enumerate(stacks))

    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        inputs = self.stem(x)
        outputs: list[tuple[torch.Tensor, ...]] = []
        x = inputs[0]
        for s, stage in enumerate(self.stages):
            if s > 0:
                last = outputs[-1]
                x = self.bridges[s - 1](x, torch.cat(last, 1) if len(last) > 1 else last[0], inputs[s])
            for stack in stage:
                predictions, x = stack(x)
                outputs.append(predictions)
        return outputs


# ---------------------------------------------------------------------------------------------
# registered variants

_BOTTOM_UP = dict(skeleton="coco17", background=True, with_pafs=True)
_SINGLE_PERSON = dict(skeleton="mpii16", background=False, with_pafs=False)


@register_model
def stacked_hourglass(**kwargs) -> StackedHourglass:
    """8-stack hourglass, bottom-up COCO: 18 heatmaps (with background) and 40 PAFs at stride 4."""
    return StackedHourglass(**dict(_BOTTOM_UP, **kwargs))


@register_model
def stacked_hourglass_mpii(**kwargs) -> StackedHourglass:
    """8-stack hourglass as in the paper: 16 MPII heatmaps at stride 4, single person."""
    return StackedHourglass(**dict(_SINGLE_PERSON, **kwargs))


@register_model
def multiscale_hourglass(**kwargs) -> MultiScaleHourglass:
    """Multi-scale cascaded hourglass (2 + 4 + 2), bottom-up COCO: heatmaps and PAFs, stride 8."""
    return MultiScaleHourglass(**dict(_BOTTOM_UP, **kwargs))


@register_model
def multiscale_hourglass_mpii(**kwargs) -> MultiScaleHourglass:
    """Multi-scale cascaded hourglass (2 + 4 + 2): 16 MPII heatmaps at stride 8, single person."""
    return MultiScaleHourglass(**dict(_SINGLE_PERSON, **kwargs))


@register_model
def stacked_hourglass_jr(**kwargs) -> StackedHourglass:
    """8-stack hourglass, bottom-up COCO, with joint-relation self-attention refining each stack's heatmaps."""
    return StackedHourglass(**dict({**_BOTTOM_UP, "relation": {}}, **kwargs))
