"""Image -> people: preprocessing, network, optional flip test, decoding, mapping back.

One implementation used by evaluation (``posestream eval``) and by the pipeline, so that what is
measured is what runs. Input normalisation comes from the model's metadata (checkpoint), never
from constants here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fields import DecoderConfig, Poses, decode, decode_graph, decode_single
from .preprocess import Letterbox, letterbox
from .skeleton import get_skeleton

__all__ = ["Predictor", "Prediction", "flip_outputs", "normalise", "torch_runner"]


def normalise(image_rgb: np.ndarray, mean, std) -> "torch.Tensor":
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 ``(rgb / 255 - mean) / std``."""
    import torch

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
    import torch

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


def torch_runner(model, device: str = "cpu", half: bool = False):
    """A PoseNet as a runner: (B, 3, H, W) float32 ndarray -> tuple of output ndarrays."""
    import torch

    model = model.eval().to(device)
    if half:
        model = model.half()

    @torch.no_grad()
    def run(x: np.ndarray):
        t = torch.from_numpy(x).to(device)
        return tuple(o.float().cpu().numpy() for o in model(t.half() if half else t))

    return run


class Predictor:
    """Image -> people with any network runner (PyTorch, ONNX Runtime).

    Args:
        run: ``(B, 3, H, W) float32 ndarray -> (heatmaps, pafs)`` raw network outputs as ndarrays.
        meta: the model's metadata (checkpoint or ONNX ``meta``): input size, mean/std, stride,
            skeleton, background, heatmap activation.
        decoder: decoder settings.
        input_size: long side of the network input (default: meta["input_size"]).
        flip: average with the outputs for the mirrored image (flip test).
        heatmap_activation: "identity" or "sigmoid" (models trained with a focal loss on logits);
            default from meta.
    """

    def __init__(self, run, meta: dict, decoder: DecoderConfig | None = None, input_size: int | None = None,
                 flip: bool = False, heatmap_activation: str | None = None) -> None:
        self.run = run
        self.meta = meta
        self.decoder = decoder or DecoderConfig()
        self.input_size = int(input_size or meta["input_size"])
        self.flip = flip
        self.skeleton = get_skeleton(meta["skeleton"])
        self.activation = heatmap_activation or meta.get("heatmap_activation", "identity")
        if self.activation not in ("identity", "sigmoid"):
            raise ValueError(f"unknown heatmap activation {self.activation!r}")
        self.mean = np.asarray(meta["mean"], np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(meta["std"], np.float32) * 255.0)
        g = meta.get("graph_decode") or {}
        # the graph's decoding outputs are used when they are what the host would compute: same
        # working stride and activation, no flip test (which averages raw maps first)
        self.graph_decode = bool(g) and not flip and g.get("activation") == self.activation and abs(
            float(meta["stride"]) / float(g.get("factor", 0) or np.inf) - self.decoder.working_stride) < 1e-9

    @classmethod
    def from_model(cls, model, meta: dict, device: str = "cpu", **kw) -> "Predictor":
        return cls(torch_runner(model, device), meta, **kw)

    def _act(self, heat: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-heat)) if self.activation == "sigmoid" else heat

    def forward(self, x: np.ndarray, out=None) -> tuple[np.ndarray, np.ndarray | None]:
        """(1, 3, H, W) normalised input -> (heatmaps, pafs) of the image, activation applied
        (``out``: the network's outputs for ``x`` when already run)."""
        out = self.run(x) if out is None else out
        heat, paf = self._act(out[0]), (out[1] if len(out) > 1 else None)
        if self.flip:
            out_f = self.run(np.ascontiguousarray(x[..., ::-1]))
            import torch

            hf, pf = flip_outputs(torch.from_numpy(self._act(out_f[0])),
                                  torch.from_numpy(out_f[1]) if len(out_f) > 1 else None,
                                  self.skeleton, bool(self.meta["background"]))
            heat = (heat + hf.numpy()) / 2
            paf = None if paf is None else (paf + pf.numpy()) / 2
        return heat, paf

    def _prepare(self, image_rgb: np.ndarray):
        """(H, W, 3) uint8 RGB -> (the letterboxed uint8 image, its record)."""
        return letterbox(image_rgb, self.input_size, multiple=int(self.meta.get("input_multiple", 32)))

    def _normalise(self, imgs: list[np.ndarray]) -> np.ndarray:
        """Letterboxed uint8 images -> one (B, 3, H, W) float32 input. Images of different sizes
        (sources of other aspect ratios) are padded right/bottom to the largest, with the
        letterbox's own padding value, so every record still maps its image's poses back."""
        h = max(i.shape[0] for i in imgs)
        w = max(i.shape[1] for i in imgs)
        x = np.empty((len(imgs), 3, h, w), np.float32)
        for b, img in enumerate(imgs):
            if img.shape[:2] != (h, w):
                big = np.zeros((h, w) + img.shape[2:], img.dtype)
                big[:img.shape[0], :img.shape[1]] = img
                img = big
            x[b] = ((img.astype(np.float32) - self.mean) * self.inv_std).transpose(2, 0, 1)
        return x

    def __call__(self, image_rgb: np.ndarray) -> Prediction:
        """(H, W, 3) uint8 RGB -> people in image pixels (keypoints not found: (0, 0, 0))."""
        return self.batch([image_rgb])[0]

    def batch(self, images_rgb: list[np.ndarray]) -> list[Prediction]:
        """Several images in one forward call (``--batch``): the same people as one call per image."""
        prepared = [self._prepare(im) for im in images_rgb]
        x = self._normalise([img for img, _ in prepared])
        out = self.run(x)
        if self.graph_decode and len(out) == 5:  # upsampling and peak NMS done by the runtime
            return [self._to_image(decode_graph(out[2][b], out[3][b], out[4][b], out[1][b], int(self.meta["stride"]),
                                                self.decoder, self.skeleton), rec)
                    for b, (_, rec) in enumerate(prepared)]
        heat, paf = self.forward(x, out)
        preds = []
        for b, (_, rec) in enumerate(prepared):
            if paf is None:  # a heatmap-only (single-person) model: one person, each keypoint its channel's maximum
                poses = decode_single(heat[b], int(self.meta["stride"]), self.decoder, self.skeleton.num_keypoints)
            else:
                poses = decode(heat[b], paf[b], int(self.meta["stride"]), self.decoder, self.skeleton)
            preds.append(self._to_image(poses, rec))
        return preds

    @staticmethod
    def _to_image(poses: Poses, rec: Letterbox) -> Prediction:
        kps = rec.to_image(poses.keypoints).astype(np.float32)
        kps[poses.keypoints[..., 2] <= 0] = 0.0
        return Prediction(Poses(kps, poses.scores), rec)
