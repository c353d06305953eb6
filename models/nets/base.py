"""What every registered network is: a ``PoseNet``.

Forward contract:
  * ``model.train()``: ``forward(x)`` returns a list with one tuple per supervised stage, in order
    (for intermediate supervision): ``(heatmaps, pafs)`` — or ``(heatmaps,)`` for heatmap-only
    models.
  * ``model.eval()`` (and ONNX export): ``forward(x)`` returns the final stage's tuple.

Shapes: ``x`` is ``(B, 3, H, W)`` float32, normalised with the model's ``mean``/``std`` (RGB),
``H`` and ``W`` multiples of ``model.stride`` (sides that are not multiples of
``model.input_multiple`` are padded inside and the outputs cropped; ONNX exports need multiples
of ``input_multiple``). ``heatmaps`` is ``(B, K [+1], H/s, W/s)``
(the last channel is the background when ``model.background`` is true), ``pafs`` is
``(B, 2 L, H/s, W/s)`` with ``s = model.stride``; K and L come from the model's skeleton.
Training-mode outputs of a multi-scale model may have other strides: ``model.stage_strides``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..skeleton import Skeleton, get_skeleton

__all__ = ["PoseNet", "conv_bn_relu", "count_parameters"]


class PoseNet(nn.Module):
    """Base of the registered networks. Subclasses implement :meth:`forward_stages`.

    Attributes:
        stride: output stride of the maps.
        num_stages: number of supervised outputs in training mode.
        input_size: the standard (square) input side, used for FLOPs and benchmarks.
        input_multiple: input sides must be multiples of this.
        skeleton: the keypoint layout (K keypoints, L limbs).
        background: whether heatmaps carry a background channel.
        with_pafs: whether the model predicts PAFs (bottom-up) or heatmaps only (single person).
        mean, std: RGB normalisation of inputs in [0, 1] pixel units: ``x = (rgb / 255 - mean) / std``.
    """

    stride: int = 8
    num_stages: int = 1
    stage_strides: tuple[int, ...] = ()  # per training-mode output; empty means all at `stride`
    input_size: int = 368
    input_multiple: int = 8

    def __init__(self, skeleton: str | Skeleton = "coco17", background: bool = True, with_pafs: bool = True,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> None:
        super().__init__()
        self.skeleton = get_skeleton(skeleton) if isinstance(skeleton, str) else skeleton
        self.background = background
        self.with_pafs = with_pafs
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.arch: dict = {}

    @property
    def num_heatmaps(self) -> int:
        return self.skeleton.num_keypoints + int(self.background)

    @property
    def num_pafs(self) -> int:
        return 2 * self.skeleton.num_limbs if self.with_pafs else 0

    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        m = self.input_multiple
        if (h % m or w % m) and not torch.jit.is_tracing():
            # sides that are multiples of the stride but not of the architecture's alignment (an
            # hourglass pools 4 times): pad bottom/right, run, crop. Exports require aligned sides.
            stages = self.forward_stages(F.pad(x, (0, -w % m, 0, -h % m)))
            strides = self.stage_strides or (self.stride,) * len(stages)
            stages = [tuple(t[..., : -(-h // s), : -(-w // s)] for t in outs) for outs, s in zip(stages, strides)]
        else:
            stages = self.forward_stages(x)
        if self.training:
            return stages
        return stages[-1]

    def meta(self) -> dict:
        """What a checkpoint or ONNX file must carry to use this model."""
        return {"arch": self.arch.get("name", type(self).__name__), "arch_kwargs": self.arch.get("kwargs", {}),
                "stride": self.stride, "input_size": self.input_size, "input_multiple": self.input_multiple,
                "mean": list(self.mean), "std": list(self.std), "skeleton": self.skeleton.name,
                "background": self.background, "with_pafs": self.with_pafs, "num_stages": self.num_stages,
                "stage_strides": list(self.stage_strides or (self.stride,) * self.num_stages)}


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1,
                 bn: bool = True, relu: bool = True) -> nn.Sequential:
    """Conv (same padding) + optional BatchNorm + optional ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation,
                                         groups=groups, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
