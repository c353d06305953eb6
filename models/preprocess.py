"""Input preprocessing that records what it did, so results map back to the original image.

``letterbox`` scales an image so that its long side fits the network input and pads the short
side only up to the next multiple of the network's alignment (not to a square: same accuracy,
less compute). The returned :class:`Letterbox` record maps points both ways; callers never
repeat its constants.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Letterbox", "letterbox_record", "letterbox"]


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterbox transform: ``input = image * scale + (pad_x, pad_y)``.

    Attributes:
        scale: image -> input scale factor.
        pad_x, pad_y: left/top padding in input pixels.
        image_hw: original image (height, width).
        input_hw: network input (height, width), multiples of ``multiple``.
    """

    scale: float
    pad_x: int
    pad_y: int
    image_hw: tuple[int, int]
    input_hw: tuple[int, int]

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """(..., >=2) image pixel x, y -> input pixels (extra columns copied unchanged)."""
        out = np.array(points, dtype=np.float64, copy=True)
        out[..., 0] = out[..., 0] * self.scale + self.pad_x
        out[..., 1] = out[..., 1] * self.scale + self.pad_y
        return out

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(..., >=2) input pixel x, y -> original image pixels (extra columns copied unchanged)."""
        out = np.array(points, dtype=np.float64, copy=True)
        out[..., 0] = (out[..., 0] - self.pad_x) / self.scale
        out[..., 1] = (out[..., 1] - self.pad_y) / self.scale
        return out


def letterbox_record(image_hw: tuple[int, int], size: int, multiple: int = 32, center: bool = False) -> Letterbox:
    """The letterbox for an image of ``image_hw`` whose long side becomes ``size``.

    Args:
        size: target long side in pixels (rounded up to ``multiple``).
        multiple: both input sides become multiples of this (the network's alignment).
        center: pad on both sides instead of right/bottom only.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image {image_hw}")
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    ih, iw = -(-nh // multiple) * multiple, -(-nw // multiple) * multiple
    px, py = ((iw - nw) // 2, (ih - nh) // 2) if center else (0, 0)
    # the effective scale per axis differs by < 1/size from `scale`; keep one number so that
    # keypoints map back exactly as the image was resized
    return Letterbox(scale=scale, pad_x=px, pad_y=py, image_hw=(h, w), input_hw=(ih, iw))


def letterbox(image: np.ndarray, size: int, multiple: int = 32, center: bool = False,
              pad_value: int = 0) -> tuple[np.ndarray, Letterbox]:
    """Resize + pad an (H, W, C) uint8 image. Returns the network-sized image and its record."""
    rec = letterbox_record(image.shape[:2], size, multiple, center)
    nh, nw = max(1, round(rec.image_hw[0] * rec.scale)), max(1, round(rec.image_hw[1] * rec.scale))
    interp = cv2.INTER_AREA if rec.scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    out = np.full((rec.input_hw[0], rec.input_hw[1]) + image.shape[2:], pad_value, dtype=image.dtype)
    out[rec.pad_y:rec.pad_y + nh, rec.pad_x:rec.pad_x + nw] = resized
    return out, rec
