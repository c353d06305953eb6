"""Training losses: masked multi-stage heatmap + PAF losses, online keypoint hard mining, focal loss.

Every network returns, in training mode, one tuple per supervised stage (``models/nets/base.py``):
``(heatmaps, pafs)`` or ``(heatmaps,)``. :class:`PoseLoss` compares each stage with the targets at
that stage's stride and sums the stages (intermediate supervision, as CMU-Pose and the stacked
hourglass do; the multi-scale cascaded hourglass sums its 8 losses the same way).

Normalisation (all heatmap forms, PAFs and OKHM alike): a stage's loss is the **sum over channels
and pixels** of the mask-weighted per-pixel loss, **averaged over the batch** (divided by ``B``).
So a stage's number is "loss per image"; it grows with the map area, which the learning rate absorbs.
No factor 1/2 (OpenPose's Caffe loss has one; it only rescales the learning rate).

Heatmap forms (``LossConfig.heatmap_loss``), with ``x`` the network output, ``y`` the target in
[0, 1] and ``m`` the mask (loss weight) of the pixel:

* ``"l2"`` (CMU-Pose): ``m * (x - y)^2``.
* ``"weighted_l2"``: ``m * (1 + fg_weight * y) * (x - y)^2``; the sparse Gaussian peaks weigh up to
  ``1 + fg_weight`` times a background pixel (NOTES.md: plain L2 left the peaks weak). On the
  background channel the foreground is the person area, ``1 - y_bg`` (= max over the keypoint
  targets), so the emphasis lands on the same pixels as on the keypoint channels.
* ``"focal"``: a focal loss for *soft* targets on **logits** (the form of the Quality Focal Loss,
  Li et al., "Generalized Focal Loss", NeurIPS 2020)::

      p = sigmoid(x)
      m * |y - p|^gamma * -(y * log(p) + (1 - y) * log(1 - p))

  It is zero exactly where ``p == y`` and down-weights the pixels the network already fits (the
  huge, easy background), keeping the gradient on hard and invisible keypoints. The
  CenterNet form (positives where ``y == 1``) does not fit these targets: the encoder centres each
  Gaussian on the sub-cell keypoint position, so a peak is almost never exactly 1. The network
  output is then a logit: decode ``sigmoid(x)`` (see :func:`heatmap_activation`), and start the last
  heatmap conv's bias near ``-log((1 - 0.01) / 0.01)`` so the early loss is not dominated by the
  background.

OKHM (online keypoint hard mining, patent CN114581953B): in the stages ``okhm_stages`` the heatmap
loss of sample ``b`` is ``sum of the okhm_k largest f_bj`` over the keypoint channels ``j``, with
``f_bj = sum_p (pixel loss of channel j at p)`` of the chosen form (the patent states it for L2 with
``W(p)`` the mask). The top-k is taken **per sample** (the patent works per image). The background
channel is not a joint: its loss is always added in full (times ``background_weight``), never mined.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F
from posestream.models.config import from_section

__all__ = ["LossConfig", "PoseLoss", "heatmap_activation", "heatmap_pixel_loss", "masked_l2"]

HEATMAP_LOSSES = ("l2", "weighted_l2", "focal")


@dataclass(frozen=True)
class LossConfig:
    """Loss settings (the ``loss`` section of a training recipe).

    Attributes:
        heatmap_loss: ``"l2"``, ``"weighted_l2"`` or ``"focal"`` (see the module docstring).
        paf_weight: factor on each stage's PAF loss.
        okhm: online keypoint hard mining in the stages ``okhm_stages``.
        okhm_k: number of joint losses kept per sample in an OKHM stage (the patent: 8).
        okhm_stages: 0-based stage indices that use OKHM (negative ones count from the end); None
            means the last two stages (t = 5, 6 of a 6-stage CMU-Pose, as in the patent).
        fg_weight: foreground emphasis of ``weighted_l2``: pixel weight ``1 + fg_weight * target``.
        focal_gamma: exponent of the modulating factor ``|y - sigmoid(x)|^gamma`` of ``focal``
            (0 gives plain binary cross-entropy on soft targets).
        background_weight: factor on the background channel's loss (when the model has one).
        stage_weights: one factor per stage; None means 1 for every stage.
    """

    heatmap_loss: str = "l2"
    paf_weight: float = 1.0
    okhm: bool = False
    okhm_k: int = 8
    okhm_stages: tuple[int, ...] | None = None
    fg_weight: float = 9.0
    focal_gamma: float = 2.0
    background_weight: float = 1.0
    stage_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.heatmap_loss not in HEATMAP_LOSSES:
            raise ValueError(f"heatmap_loss must be one of {', '.join(HEATMAP_LOSSES)}; got {self.heatmap_loss!r}")
        if isinstance(self.okhm_k, bool) or int(self.okhm_k) != self.okhm_k or self.okhm_k < 1:
            raise ValueError(f"okhm_k must be an integer >= 1, got {self.okhm_k!r}")
        for name in ("paf_weight", "fg_weight", "focal_gamma", "background_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        # YAML gives lists; frozen dataclasses want hashable, immutable fields
        if self.okhm_stages is not None:
            stages = tuple(self.okhm_stages)
            if any(isinstance(s, bool) or int(s) != s for s in stages):
                raise ValueError(f"okhm_stages must be integers, got {self.okhm_stages!r}")
            object.__setattr__(self, "okhm_stages", tuple(int(s) for s in stages))
        if self.stage_weights is not None:
            weights = tuple(float(w) for w in self.stage_weights)
            if any(not math.isfinite(w) or w < 0 for w in weights):
                raise ValueError(f"stage_weights must be finite numbers >= 0, got {self.stage_weights!r}")
            object.__setattr__(self, "stage_weights", weights)

    @classmethod
    def from_dict(cls, d: dict | None) -> "LossConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return from_section(cls, d, "loss option")


def heatmap_activation(config: LossConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """What turns raw heatmap outputs into the [0, 1] maps the decoder reads.

    Returns:
        ``torch.sigmoid`` for ``focal`` (the network outputs logits), the identity otherwise.
    """
    if config.heatmap_loss == "focal":
        return torch.sigmoid
    return _identity


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def masked_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel masked squared error summed over pixels.

    Args:
        pred: (B, C, h, w) float.
        target: (B, C, h, w) float.
        mask: (B, h, w) float loss weight per pixel.

    Returns:
        (B, C) float: ``sum_p mask(p) * (pred(p) - target(p))^2``.
    """
    return (mask[:, None] * (pred - target) ** 2).sum(dim=(2, 3))


def heatmap_pixel_loss(pred: torch.Tensor, target: torch.Tensor, config: LossConfig,
                       foreground: torch.Tensor | None = None) -> torch.Tensor:
    """Unmasked per-pixel heatmap loss of the configured form (module docstring).

    Args:
        pred: (B, C, h, w) float network output (logits for ``focal``).
        target: (B, C, h, w) float in [0, 1].
        config: picks the form and its parameters.
        foreground: (B, C, h, w) what ``weighted_l2`` emphasises; None means ``target``.

    Returns:
        (B, C, h, w) float, >= 0.
    """
    if config.heatmap_loss == "l2":
        return (pred - target) ** 2
    if config.heatmap_loss == "weighted_l2":
        fg = target if foreground is None else foreground
        return (1.0 + config.fg_weight * fg) * (pred - target) ** 2
    bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    if config.focal_gamma == 0:
        return bce
    # the floor keeps the gradient of |u|^gamma finite at u == 0 when gamma < 1
    modulator = (target - torch.sigmoid(pred)).abs().clamp_min(1e-12) ** config.focal_gamma
    return modulator * bce


class PoseLoss:
    """Multi-stage heatmap (+ PAF) loss of a :class:`~models.nets.base.PoseNet`.

    Args:
        config: the loss settings.
        background: whether the model's heatmaps end with a background channel
            (``model.meta()["background"]``). None infers it from the channel counts under the
            encoder's contract that targets always carry the background: as many target channels as
            predicted means a predicted background; one more target channel means none (the
            target's background channel is then dropped). Pass it when targets may lack it.
    """

    def __init__(self, config: LossConfig | None = None, background: bool | None = None) -> None:
        self.config = config if config is not None else LossConfig()
        self.background = background

    def __call__(self, outputs: list[tuple[torch.Tensor, ...]], targets: dict,
                 stage_strides: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss over the stages.

        Args:
            outputs: one tuple per stage: ``(heatmaps (B, C, h, w), pafs (B, 2L, h, w))`` or
                ``(heatmaps,)``; ``h, w`` follow the stage's stride.
            targets: ``{f"s{stride}": {"heatmaps": (B, K + 1, h, w), "pafs": (B, 2L, h, w),
                "mask": (B, h, w)}}``; ``pafs`` may be absent for heatmap-only models, ``mask``
                (loss weight in [0, 1]) defaults to ones.
            stage_strides: (n_stages,) stride of each stage (``model.meta()["stage_strides"]``).

        Returns:
            The scalar total ``sum_i stage_weight_i * (heatmap_i + paf_weight * paf_i)`` and, for
            logging, ``{"heatmap/s<i>": heatmap_i, "paf/s<i>": paf_i, "total": total}`` with
            ``i`` the stage index (per-stage values before stage and PAF weights).
        """
        cfg = self.config
        n = len(outputs)
        if n == 0:
            raise ValueError("outputs is empty: expected one tuple per stage")
        if len(stage_strides) != n:
            raise ValueError(f"{n} stage outputs but {len(stage_strides)} stage strides")
        weights = cfg.stage_weights if cfg.stage_weights is not None else (1.0,) * n
        if len(weights) != n:
            raise ValueError(f"stage_weights has {len(weights)} entries for {n} stages")
        mined = self._okhm_stages(n)

        total: torch.Tensor | None = None
        parts: dict[str, float] = {}
        for i, (outs, stride) in enumerate(zip(outputs, stage_strides)):
            key = f"s{int(stride)}"
            if key not in targets:
                raise KeyError(f"no targets for stride {stride} (stage {i}); have {sorted(targets)}")
            tgt = targets[key]
            heat = outs[0]
            mask = tgt.get("mask")
            if mask is None:
                mask = heat.new_ones((heat.shape[0],) + tuple(heat.shape[2:]))
            mask = mask.to(heat.dtype)
            heat_loss = self._heatmap_loss(heat, tgt["heatmaps"], mask, i in mined, i)
            stage = heat_loss
            parts[f"heatmap/s{i}"] = float(heat_loss.detach())
            if len(outs) > 1:
                if "pafs" not in tgt:
                    raise KeyError(f"stage {i} predicts PAFs but targets[{key!r}] has no 'pafs'")
                pafs = outs[1]
                paf_t = tgt["pafs"].to(pafs.dtype)
                _check_shape(pafs, paf_t, "pafs", i)
                paf_loss = masked_l2(pafs, paf_t, mask).sum() / pafs.shape[0]
                stage = stage + cfg.paf_weight * paf_loss
                parts[f"paf/s{i}"] = float(paf_loss.detach())
            stage = weights[i] * stage
            total = stage if total is None else total + stage
        parts["total"] = float(total.detach())
        return total, parts

    def _okhm_stages(self, n: int) -> set[int]:
        cfg = self.config
        if not cfg.okhm:
            return set()
        if cfg.okhm_stages is None:
            return set(range(max(0, n - 2), n))
        chosen = set()
        for s in cfg.okhm_stages:
            if not -n <= s < n:
                raise ValueError(f"okhm_stages names stage {s}, but the model has {n} stages")
            chosen.add(s % n)
        return chosen

    def _heatmap_loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, okhm: bool,
                      stage: int) -> torch.Tensor:
        """Scalar heatmap loss of one stage (sum over channels and pixels, mean over the batch)."""
        cfg = self.config
        target = target.to(pred.dtype)
        c_pred, c_tgt = pred.shape[1], target.shape[1]
        background = self.background
        if background is None:
            if c_tgt not in (c_pred, c_pred + 1):
                raise ValueError(f"stage {stage}: {c_pred} heatmap channels predicted, {c_tgt} in the targets")
            background = c_tgt == c_pred
        if not background and c_tgt == c_pred + 1:
            target = target[:, :c_pred]
        _check_shape(pred, target, "heatmaps", stage)

        # foreground of the background channel: the person area, 1 - y_bg (module docstring)
        foreground = None
        if background and cfg.heatmap_loss == "weighted_l2":
            foreground = torch.cat([target[:, :-1], 1.0 - target[:, -1:]], dim=1)
        per_pixel = heatmap_pixel_loss(pred, target, cfg, foreground)
        per_channel = (mask[:, None] * per_pixel).sum(dim=(2, 3))  # (B, C)
        if background:
            joints, bg = per_channel[:, :-1], cfg.background_weight * per_channel[:, -1]
        else:
            joints, bg = per_channel, None
        if okhm:
            k = min(cfg.okhm_k, joints.shape[1])
            joints = torch.topk(joints, k, dim=1, sorted=False).values  # per sample
        per_sample = joints.sum(dim=1)
        if bg is not None:
            per_sample = per_sample + bg
        return per_sample.mean()


def _check_shape(pred: torch.Tensor, target: torch.Tensor, name: str, stage: int) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"stage {stage}: {name} {tuple(pred.shape)} predicted but targets are {tuple(target.shape)}")
