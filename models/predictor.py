"""Image -> people: preprocessing, network, optional flip test, decoding, mapping back.

One implementation used by evaluation (``posestream eval``) and by the pipeline, so that what is
measured is what runs. Input normalisation comes from the model's metadata (checkpoint), never
from constants here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .fields import DecoderConfig, Poses, decode
from .preprocess import Letterbox, letterbox
from .skeleton import get_skeleton

__all__ = ["Predictor", "flip_outputs", "normalise"]


def normalise(image_rgb: np.ndarray, mean, std) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 ``(rgb / 255 - mean) / std``."""
    x = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((x - m) / s)[None]


def flip_outputs(heatmaps: torch.Tensor, pafs: torch.Tensor | None, skeleton, background: bool):
    """Map the outputs for a horizontally flipped image back to the original image's frame.

    Heatmaps: mirror and swap left/right channels. PAFs: mirror, move each limb to its mirrored
    limb, negate x, and negate the whole vector where the mirrored limb runs the other way.
    Shapes: (B, C, h, w).
    """
    k = skeleton.num_keypoints
    order = list(skeleton.flip_map) + ([k] if background else [])
    hm = heatmaps.flip(-1)[:, order]
    if pafs is None:
        return hm, None
    idx, rev = skeleton.paf_flip_map
    p = pafs.flip(-1).reshape(pafs.shape[0], -1, 2, *pafs.shape[2:])  # (B, L, 2, h, w)
    src = torch.empty(len(idx), dtype=torch.long)
    src[torch.as_tensor(idx)] = torch.arange(len(idx))  # limb i of the output comes from limb src[i]
    p = p[:, src]
    sign_x = torch.tensor([-1.0 * (-1.0 if rev[j] else 1.0) for j in src.tolist()])
    sign_y = torch.tensor([(-1.0 if rev[j] else 1.0) for j in src.tolist()])
    p = torch.stack([p[:, :, 0] * sign_x[None, :, None, None], p[:, :, 1] * sign_y[None, :, None, None]], 2)
    return hm, p.reshape(pafs.shape)


@dataclass
class Prediction:
    poses: Poses          # in original image pixels
    record: Letterbox


class Predictor:
    """Runs a PoseNet (PyTorch) on images.

    Args:
        model: a PoseNet in eval mode.
        meta: its metadata (checkpoint ``meta``); input size, mean/std, stride, skeleton.
        decoder: decoder settings.
        input_size: long side of the network input (default: meta["input_size"]).
        flip: average with the prediction for the mirrored image (flip test).
        device: torch device.
        heatmap_activation: "identity" or "sigmoid" (models trained with a focal loss on logits);
            default from meta.
    """

    def __init__(self, model, meta: dict, decoder: DecoderConfig | None = None, input_size: int | None = None,
                 flip: bool = False, device: str = "cpu", heatmap_activation: str | None = None) -> None:
        self.model = model.eval().to(device)
        self.meta = meta
        self.decoder = decoder or DecoderConfig()
        self.input_size = int(input_size or meta["input_size"])
        self.flip = flip
        self.device = device
        self.skeleton = get_skeleton(meta["skeleton"])
        self.activation = heatmap_activation or meta.get("heatmap_activation", "identity")
        if self.activation not in ("identity", "sigmoid"):
            raise ValueError(f"unknown heatmap activation {self.activation!r}")

    @torch.no_grad()
    def forward(self, x: torch.Tensor):
        out = self.model(x.to(self.device))
        heat, paf = out[0], (out[1] if len(out) > 1 else None)
        if self.activation == "sigmoid":
            heat = torch.sigmoid(heat)
        if self.flip:
            out_f = self.model(x.flip(-1).to(self.device))
            hf = torch.sigmoid(out_f[0]) if self.activation == "sigmoid" else out_f[0]
            hf, pf = flip_outputs(hf, out_f[1] if len(out_f) > 1 else None, self.skeleton, self.meta["background"])
            heat = (heat + hf) / 2
            paf = None if paf is None else (paf + pf) / 2
        return heat, paf

    def __call__(self, image_rgb: np.ndarray) -> Prediction:
        """(H, W, 3) uint8 RGB -> people in image pixels."""
        img, rec = letterbox(image_rgb, self.input_size, multiple=int(self.meta.get("input_multiple", 32)))
        x = normalise(img, self.meta["mean"], self.meta["std"])
        heat, paf = self.forward(x)
        heat_np = heat[0].float().cpu().numpy()
        paf_np = paf[0].float().cpu().numpy()
        poses = decode(heat_np, paf_np, int(self.meta["stride"]), self.decoder, self.skeleton)
        kps = rec.to_image(poses.keypoints).astype(np.float32)
        return Prediction(Poses(kps, poses.scores), rec)
