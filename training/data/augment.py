"""Training augmentation: one affine warp (scale, rotation, translation, flip) + colour jitter.

Geometry is a single 2x3 matrix from original image pixels to output pixels (pixel centres at
integer coordinates, the convention of ``cv2.warpAffine`` and of the target encoder). The same
matrix moves the image, the ignore mask and the keypoints, so they cannot drift apart, and the
returned :class:`AffineRecord` maps predictions back to the original image.

A horizontal flip is part of that matrix (``x -> S - 1 - x``) *and* relabels keypoints through
``skeleton.flip_map``: after a flip the person's left wrist sits where a right wrist would, so it
becomes the right wrist.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from posestream.models.skeleton import COCO_17, Skeleton
from posestream.models.config import from_section

__all__ = ["AugmentConfig", "AffineRecord", "random_affine", "eval_affine", "color_jitter", "affine_matrix"]

LOG = logging.getLogger(__name__)

_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma of RGB


@dataclass
class AugmentConfig:
    """Augmentation settings (the ``augment`` section of a training config).

    Attributes:
        input_size: output side S in pixels (square S x S).
        scale_range: the image's long side becomes ``input_size * u``, u uniform in this range.
        max_rotation: rotation about the image centre, uniform in [-max, max] degrees.
        max_translation: shift per axis, uniform in [-max, max] * input_size pixels.
        flip_prob: probability of a horizontal flip.
        brightness: pixel values times a factor uniform in [1 - b, 1 + b].
        contrast: distance from the mean grey times a factor uniform in [1 - c, 1 + c].
        saturation: distance from the pixel's grey times a factor uniform in [1 - s, 1 + s].
        hue: hue shift uniform in [-h, h] turns of the colour circle (0.5 = opposite colour).
        pad_with_mean: fill the border with the model's mean colour (0 after normalisation)
            instead of black.
    """

    input_size: int = 256
    scale_range: tuple[float, float] = (0.75, 1.25)
    max_rotation: float = 30.0
    max_translation: float = 0.1
    flip_prob: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.02
    pad_with_mean: bool = True

    def __post_init__(self) -> None:
        self.scale_range = tuple(float(v) for v in self.scale_range)
        if self.input_size <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        for name in ("max_rotation", "max_translation", "brightness", "contrast", "saturation", "hue"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) >= 1:
                raise ValueError(f"{name} must be < 1 (a factor of 1 - {name} must stay positive)")
        if self.hue > 0.5:
            raise ValueError(f"hue must be <= 0.5 turns, got {self.hue}")

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        """Build from a config section; an unknown key is an error that names it."""
        return from_section(cls, d, "augment config key")

    @property
    def jitters_colour(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue))


@dataclass(frozen=True, eq=False)
class AffineRecord:
    """What one warp did: ``output = matrix @ [x, y, 1]`` (the flip included).

    Attributes:
        matrix: (2, 3) float64, original image pixels -> output pixels.
        flipped: whether a horizontal flip was applied (keypoint labels were swapped by flip_map).
        scale: the isotropic scale factor of ``matrix`` (lengths multiply by it).
        image_hw: original image (height, width).
        output_hw: output (height, width).
    """

    matrix: np.ndarray
    flipped: bool
    scale: float
    image_hw: tuple[int, int]
    output_hw: tuple[int, int]

    def to_output(self, points: np.ndarray) -> np.ndarray:
        """(..., >=2) original x, y -> output pixels (extra columns copied unchanged)."""
        return _apply(self.matrix, points)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(..., >=2) output x, y -> original image pixels (extra columns copied unchanged)."""
        return _apply(cv2.invertAffineTransform(self.matrix), points)

    def keypoints_to_image(self, keypoints: np.ndarray, skeleton: Skeleton = COCO_17) -> np.ndarray:
        """(N, K, >=2) keypoints in output pixels -> original pixels, undoing the flip's relabelling."""
        out = self.to_image(keypoints)
        return out[:, skeleton.flip_map] if self.flipped else out


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    out = np.array(points, dtype=np.float64, copy=True)
    x, y = out[..., 0].copy(), out[..., 1].copy()
    out[..., 0] = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
    out[..., 1] = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
    return out


def affine_matrix(image_hw: tuple[int, int], size: int, scale: float, angle_deg: float = 0.0,
                  shift: tuple[float, float] = (0.0, 0.0), flip: bool = False) -> np.ndarray:
    """The (2, 3) float64 matrix: scale by ``scale`` and rotate by ``angle_deg`` (counter-clockwise
    on screen) about the image centre, put that centre at the output centre plus ``shift``, then
    mirror x if ``flip``.
    """
    h, w = image_hw
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    o = (size - 1) / 2.0
    a = math.radians(angle_deg)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    # y points down, so a counter-clockwise turn on screen is [[c, s], [-s, c]]
    m = np.array([[c, s, 0.0], [-s, c, 0.0]])
    m[:, 2] = (o + shift[0], o + shift[1]) - m[:, :2] @ (cx, cy)
    if flip:
        m[0] = -m[0]
        m[0, 2] += size - 1
    return m


def _warp(sample: dict, matrix: np.ndarray, flipped: bool, scale: float, size: int, skeleton: Skeleton,
          fill: tuple[int, int, int]) -> tuple[dict, AffineRecord]:
    image = sample["image"]
    h, w = image.shape[:2]
    out = dict(sample)
    m_image = matrix
    if scale < 0.5:
        # bilinear sampling alone aliases at strong downscaling; shrink by area averaging first and
        # fold the exact resize into the warp so the geometry is still the one matrix
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        rx, ry = nw / w, nh / h
        # cv2.resize maps pixel centres x -> (x + 0.5) * r - 0.5; undo it before `matrix`
        unresize = np.array([[1 / rx, 0.0, (0.5 / rx) - 0.5], [0.0, 1 / ry, (0.5 / ry) - 0.5], [0.0, 0.0, 1.0]])
        m_image = matrix @ unresize
    out["image"] = cv2.warpAffine(image, m_image, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(int(v) for v in fill))
    ignore = sample.get("ignore")
    if ignore is not None:
        # nearest keeps the mask binary; the constant border 0 means "outside the photo is not ignored"
        out["ignore"] = cv2.warpAffine(np.ascontiguousarray(ignore, dtype=np.uint8), matrix, (size, size),
                                       flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0

    kp = np.asarray(sample["keypoints"], dtype=np.float32)
    kp = kp.reshape(-1, skeleton.num_keypoints, 3) if kp.size else np.zeros((0, skeleton.num_keypoints, 3), np.float32)
    kp = _apply(matrix, kp).astype(np.float32)
    if flipped:
        kp = kp[:, skeleton.flip_map]
    x, y = kp[..., 0], kp[..., 1]
    # a point owns the output pixel whose centre is nearest, so the valid range is [-0.5, S - 0.5)
    outside = (x < -0.5) | (y < -0.5) | (x >= size - 0.5) | (y >= size - 0.5)
    kp[..., 2][outside] = 0.0
    kp[kp[..., 2] <= 0] = 0.0  # COCO's convention: unlabelled is (0, 0, 0)
    out["keypoints"] = kp

    # per-person single-person fields (MPII) follow the geometry too
    if "center" in sample:
        out["center"] = _apply(matrix, sample["center"]).astype(np.float32)
    for key in ("scale", "head_size"):
        if key in sample:
            out[key] = (np.asarray(sample[key], dtype=np.float32) * np.float32(scale))
    record = AffineRecord(matrix=matrix, flipped=flipped, scale=scale, image_hw=(h, w), output_hw=(size, size))
    return out, record


def random_affine(sample: dict, cfg: AugmentConfig, rng: np.random.Generator, skeleton: Skeleton = COCO_17,
                  fill: tuple[int, int, int] = (0, 0, 0)) -> tuple[dict, AffineRecord]:
    """Random scale/rotation/translation/flip, then colour jitter.

    Args:
        sample: ``image`` (H, W, 3) uint8, ``keypoints`` (N, K, 3) float32 x, y, v, optional
            ``ignore`` (H, W) bool; other keys are copied (``center``/``scale``/``head_size``
            are transformed).
        cfg: the ranges.
        rng: the only source of randomness (the same generator state gives the same output).
        skeleton: keypoint layout, for the flip's relabelling.
        fill: RGB border colour (0..255).

    Returns:
        ``(sample_out, record)``: ``image`` (S, S, 3) uint8, ``keypoints`` (N, K, 3) float32 in output
        pixels (v = 0 and x = y = 0 where unlabelled or outside the output), ``ignore`` (S, S) bool;
        ``record`` maps points back.
    """
    h, w = sample["image"].shape[:2]
    size = cfg.input_size
    # draw every parameter every time so that a setting of 0 does not shift the other draws
    u_scale = rng.uniform(*cfg.scale_range)
    angle = rng.uniform(-cfg.max_rotation, cfg.max_rotation)
    shift = rng.uniform(-cfg.max_translation, cfg.max_translation, size=2) * size
    flip = bool(rng.random() < cfg.flip_prob)
    scale = size / max(h, w) * u_scale
    matrix = affine_matrix((h, w), size, scale, angle, (float(shift[0]), float(shift[1])), flip)
    out, record = _warp(sample, matrix, flip, scale, size, skeleton, fill)
    if cfg.jitters_colour:
        out["image"] = color_jitter(out["image"], cfg, rng)
    return out, record


def eval_affine(sample: dict, cfg: AugmentConfig, skeleton: Skeleton = COCO_17,
                fill: tuple[int, int, int] = (0, 0, 0)) -> tuple[dict, AffineRecord]:
    """The deterministic path: scale the long side to ``cfg.input_size``, centre, pad; no flip,
    no jitter. Same arguments and return value as :func:`random_affine`.
    """
    h, w = sample["image"].shape[:2]
    size = cfg.input_size
    scale = size / max(h, w)
    return _warp(sample, affine_matrix((h, w), size, scale), False, scale, size, skeleton, fill)


def color_jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation, then hue jitter of an (H, W, 3) uint8 RGB image.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    b = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    dh = rng.uniform(-cfg.hue, cfg.hue)
    img = image.astype(np.float32) * np.float32(b)
    mean = float((img @ _GRAY).mean())
    img = (img - mean) * np.float32(c) + np.float32(mean)
    grey = (img @ _GRAY)[..., None]
    img = grey + (img - grey) * np.float32(s)
    np.clip(img, 0.0, 255.0, out=img)
    if dh:
        hsv = cv2.cvtColor(img * np.float32(1 / 255), cv2.COLOR_RGB2HSV)  # float input: H in [0, 360)
        hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(dh * 360.0), 360.0)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(255)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
