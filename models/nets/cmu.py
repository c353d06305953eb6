"""CMU-Pose (OpenPose) multi-stage heatmap + PAF networks, on a VGG-19 or SE-ResNet backbone.

Sources:
  * Cao, Simon, Wei, Sheikh, "Realtime Multi-Person 2D Pose Estimation using Part Affinity
    Fields", CVPR 2017 (and TPAMI 2019): backbone F = first 10 conv layers of VGG-19 (+ two 3x3
    convs to 128 channels, "conv4_3_CPM/conv4_4_CPM" of the released model); stage 1 = per branch
    three 3x3 convs (128) and two 1x1 convs (512, then the outputs); stages 2-6 = per branch five
    7x7 convs (128) and two 1x1 convs (128, then the outputs); every refinement stage sees F
    concatenated with the previous stage's heatmaps S and PAFs L. No BatchNorm in the stages, as
    released.
  * Patent CN114581953B: the same stages on a ResNet backbone with squeeze-and-excitation on the
    channels: z = GAP(U), s = sigmoid(W2 relu(W1 z)), W1: C/R x C, W2: C x C/R, R = 8, output
    s_c * u_c. The ResNet is used up to its third stage with that stage dilated (stride 1,
    dilation 2) so that F stays at output stride 8, then reduced to 128 channels like the CPM
    convs above. (Online keypoint hard mining, the patent's loss, is in ``training``.)
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_model
from .base import PoseNet, conv_bn_relu

__all__ = ["CMUStages", "VGG19Backbone", "SEBlock", "SEBottleneck", "SEBasicBlock", "SEResNetBackbone", "CMUPose"]


# ---------------------------------------------------------------------------------------------
# stages


def _conv_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True))


class Stage1Branch(nn.Sequential):
    """3x3 conv x3 (128), 1x1 conv (512), 1x1 conv (outputs)."""

    def __init__(self, cin: int, cout: int, width: int = 128, hidden: int = 512) -> None:
        super().__init__(_conv_relu(cin, width, 3), _conv_relu(width, width, 3), _conv_relu(width, width, 3),
                         _conv_relu(width, hidden, 1), nn.Conv2d(hidden, cout, 1))


class RefineBranch(nn.Sequential):
    """7x7 conv x5 (128), 1x1 conv (128), 1x1 conv (outputs)."""

    def __init__(self, cin: int, cout: int, width: int = 128, kernel: int = 7) -> None:
        layers = [_conv_relu(cin if i == 0 else width, width, kernel) for i in range(5)]
        super().__init__(*layers, _conv_relu(width, width, 1), nn.Conv2d(width, cout, 1))


class CMUStages(nn.Module):
    """Stage 1 + ``num_stages - 1`` refinement stages, two branches each (heatmaps, PAFs).

    Args:
        in_channels: channels of the backbone features F.
        num_heatmaps, num_pafs: output channels of the two branches.
    """

    def __init__(self, in_channels: int, num_heatmaps: int, num_pafs: int, num_stages: int = 6,
                 width: int = 128, kernel: int = 7) -> None:
        super().__init__()
        self.first_heat = Stage1Branch(in_channels, num_heatmaps, width)
        self.first_paf = Stage1Branch(in_channels, num_pafs, width)
        cin = in_channels + num_heatmaps + num_pafs
        self.refine_heat = nn.ModuleList(RefineBranch(cin, num_heatmaps, width, kernel) for _ in range(num_stages - 1))
        self.refine_paf = nn.ModuleList(RefineBranch(cin, num_pafs, width, kernel) for _ in range(num_stages - 1))

    def forward(self, f: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        s, l = self.first_heat(f), self.first_paf(f)
        out = [(s, l)]
        for rh, rp in zip(self.refine_heat, self.refine_paf):
            x = torch.cat([f, s, l], dim=1)
            s, l = rh(x), rp(x)
            out.append((s, l))
        return out


# ---------------------------------------------------------------------------------------------
# backbones


class VGG19Backbone(nn.Module):
    """First 10 conv layers of VGG-19 (conv1_1 .. conv4_2, 3 max-pools: stride 8), then 3x3 convs
    to 256 and 128 channels (OpenPose's CPM convs)."""

    out_channels = 128

    def __init__(self) -> None:
        super().__init__()
        cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512]
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(_conv_relu(cin, v, 3))
                cin = v
        layers += [_conv_relu(512, 256, 3), _conv_relu(256, 128, 3)]
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class SEBlock(nn.Module):
    """Squeeze-and-excitation (CN114581953B): z = GAP(u); s = sigmoid(W2 relu(W1 z)); out = s_c u_c.

    W1 is C/R x C and W2 is C x C/R, both with bias (Hu et al., CVPR 2018)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = u.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))
        return u * s[:, :, None, None]


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class SEBottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1, expansion 4) with SE on the residual before the sum."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1, reduction: int = 8) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(conv_bn_relu(cin, width, 1), conv_bn_relu(width, width, 3, stride, dilation),
                                  conv_bn_relu(width, cout, 1, relu=False))
        self.se = SEBlock(cout, reduction)
        self.down = _downsample(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        return torch.relu(self.se(self.body(x)) + skip)


class SEBasicBlock(nn.Module):
    """ResNet basic block (3x3, 3x3) with SE on the residual before the sum."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1, reduction: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, width, 3, stride, dilation),
                                  conv_bn_relu(width, width, 3, 1, dilation, relu=False))
        self.se = SEBlock(width, reduction)
        self.down = _downsample(cin, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        return torch.relu(self.se(self.body(x)) + skip)


class SEResNetBackbone(nn.Module):
    """SE-ResNet stem + stages 1-3 (stage 3 dilated: output stride 8) + 3x3 convs to 256, 128."""

    out_channels = 128

    def __init__(self, block: type, layers: tuple[int, int, int], reduction: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        cin = 64
        stages = []
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256))):
            stride, dilation = ((1, 1), (2, 1), (1, 2))[i]
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, stride if j == 0 else 1, dilation, reduction))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.reduce = nn.Sequential(conv_bn_relu(cin, 256, 3), conv_bn_relu(256, 128, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.stages(self.stem(x)))


# ---------------------------------------------------------------------------------------------
# the network


class CMUPose(PoseNet):
    """Backbone F + CMU stages; optional joint-relation refinement of the final heatmaps.

    Args:
        backbone: an ``nn.Module`` with ``out_channels``, output stride 8.
        num_stages: CMU stages (6 in the paper).
        relation: optional module ``(features, heatmaps) -> heatmaps`` applied to every stage's
            heatmaps (the attention-based joint relation model), sharing its weights across stages.
    """

    stride = 8
    input_size = 368
    input_multiple = 8

    def __init__(self, backbone: nn.Module, num_stages: int = 6, relation_factory=None, **kw) -> None:
        super().__init__(**kw)
        self.num_stages = num_stages
        self.backbone = backbone
        self.stages = CMUStages(backbone.out_channels, self.num_heatmaps, self.num_pafs, num_stages)
        self.relation = relation_factory(backbone.out_channels, self.skeleton.num_keypoints) if relation_factory else None

    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        f = self.backbone(x)
        out = self.stages(f)
        if self.relation is not None:
            out = [(self.relation(f, s), l) for s, l in out]
        return out


# ---------------------------------------------------------------------------------------------
# registered variants


def _kw(kw: dict, **defaults) -> dict:
    return {**defaults, **kw}


@register_model
def cmu_pose_vgg19(**kw) -> CMUPose:
    """CMU-Pose baseline: VGG-19 (10 convs) + 6 stages, COCO-17 heatmaps + PAFs, stride 8."""
    kw = _kw(kw, num_stages=6)
    return CMUPose(VGG19Backbone(), **kw)


@register_model
def cmu_pose_se_resnet50(**kw) -> CMUPose:
    """CMU-Pose stages on SE-ResNet-50 (stages 1-3, R = 8), stride 8 (CN114581953B)."""
    kw = _kw(kw, num_stages=6)
    reduction = kw.pop("reduction", 8)
    return CMUPose(SEResNetBackbone(SEBottleneck, (3, 4, 6), reduction), **kw)


@register_model
def cmu_pose_se_resnet18(**kw) -> CMUPose:
    """The same on SE-ResNet-18 (basic blocks): a smaller depth for small data and CPUs."""
    kw = _kw(kw, num_stages=6)
    reduction = kw.pop("reduction", 8)
    return CMUPose(SEResNetBackbone(SEBasicBlock, (2, 2, 2), reduction), **kw)


@register_model
def cmu_pose_se_resnet50_jr(**kw) -> CMUPose:
    """SE-ResNet-50 CMU-Pose + joint-relation self-attention refining every stage's heatmaps."""
    from .joint_relation import JointRelationModule

    kw = _kw(kw, num_stages=6)
    reduction = kw.pop("reduction", 8)
    jr = kw.pop("relation", {})
    return CMUPose(SEResNetBackbone(SEBottleneck, (3, 4, 6), reduction),
                   relation_factory=lambda c, k: JointRelationModule(c, k, **jr), **kw)


@register_model
def cmu_pose_vgg19_jr(**kw) -> CMUPose:
    """VGG-19 CMU-Pose + joint-relation self-attention refining every stage's heatmaps."""
    from .joint_relation import JointRelationModule

    kw = _kw(kw, num_stages=6)
    jr = kw.pop("relation", {})
    return CMUPose(VGG19Backbone(), relation_factory=lambda c, k: JointRelationModule(c, k, **jr), **kw)
