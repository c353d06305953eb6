"""Overlay rendering: skeletons, track ids and a small HUD, drawn on RGB frames.

Colours come from :mod:`models.skeleton`, where they are stored as BGR tuples (OpenCV's order);
frames travel as RGB, so every colour is reversed before drawing. The drawing functions draw in
place on the array they are given and return it (as OpenCV does); :class:`RenderStage` copies a
frame's image only when it is read-only (images rebuilt from a socket buffer are).
"""
from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from posestream.models.skeleton import Skeleton, get_skeleton
from posestream.stream.messages import Frame, People, now_ns
from posestream.models.config import from_section
from posestream.stream.lazy import LazyModule

cv2 = LazyModule("cv2")

__all__ = ["draw_people", "draw_hud", "default_thickness", "RenderConfig", "RenderStage"]

LOG = logging.getLogger(__name__)

_SHIFT = 4  # cv2 fixed-point bits: keypoints are drawn with 1/16 pixel precision
_ONE = 1 << _SHIFT
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _rgb(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    return (int(bgr[2]), int(bgr[1]), int(bgr[0]))


def _fixed(x: float, y: float) -> tuple[int, int]:
    return (int(round(x * _ONE)), int(round(y * _ONE)))


def default_thickness(height: int, width: int) -> int:
    """Limb line thickness in pixels for an image size: 2 at 480p, 4 at 1080p, at least 1."""
    return max(1, int(round(min(height, width) / 250)))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = getattr(image, "shape", None), getattr(image, "dtype", None)
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape/dtype {got}")
    if not image.flags.writeable or not image.flags.c_contiguous:
        raise ValueError("image must be a writeable C-contiguous array (draw on a copy)")


def draw_people(image_rgb: np.ndarray, people: People | None, skeleton: Skeleton, min_score: float = 0.1,
                thickness: int | None = None) -> np.ndarray:
    """Draw skeletons, keypoints and track ids in place.

    Limbs are drawn only between two keypoints that both have score > ``min_score``; keypoints
    with score <= ``min_score`` (or non-finite coordinates) are not drawn at all. A person with
    ``track_id >= 0`` gets its id as a small label above the top of its keypoints' box. A person
    whose track is tentative (``track_id == -2``: a weak detection not yet confirmed, or a
    duplicate pose of another person; see ``posestream.stream.track``) is not drawn: a viewer
    sees no flicker of unconfirmed skeletons, and no person drawn without an id while tracking.

    Args:
        image_rgb: (H, W, 3) uint8 RGB, writeable and C-contiguous; drawn on in place.
        people: keypoints (N, K, 3) float32 x, y, score in image pixels; track_ids (N,) int64.
            ``None`` or no people draws nothing.
        skeleton: the layout of the K keypoints (limbs and BGR colours).
        min_score: keypoint score threshold.
        thickness: limb thickness in pixels; ``None`` scales it with the image size
            (:func:`default_thickness`). Keypoint dots have radius ``thickness + 1``.

    Returns:
        ``image_rgb`` itself.

    Raises:
        ValueError: on a bad image or a keypoint count that does not match the skeleton.
    """
    _check_image(image_rgb)
    if people is None or len(people) == 0:
        return image_rgb
    kps = np.asarray(people.keypoints, dtype=np.float32)
    if kps.ndim != 3 or kps.shape[1:] != (skeleton.num_keypoints, 3):
        raise ValueError(f"keypoints of shape {kps.shape} do not fit skeleton {skeleton.name} "
                         f"({skeleton.num_keypoints} keypoints)")
    h, w = image_rgb.shape[:2]
    t = int(thickness) if thickness is not None else default_thickness(h, w)
    if t < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    limb_colors = [_rgb(c) for c in skeleton.limb_colors]
    kp_colors = [_rgb(c) for c in skeleton.keypoint_colors]
    track_ids = np.asarray(people.track_ids).reshape(-1)
    visible = (kps[:, :, 2] > min_score) & np.isfinite(kps).all(axis=2)
    for n in range(kps.shape[0]):
        if n < track_ids.shape[0] and track_ids[n] == -2:
            continue  # tentative (TENTATIVE in stream/track.py)
        pts, vis = kps[n], visible[n]
        for (a, b), color in zip(skeleton.limbs, limb_colors):
            if vis[a] and vis[b]:
                cv2.line(image_rgb, _fixed(pts[a, 0], pts[a, 1]), _fixed(pts[b, 0], pts[b, 1]), color, t,
                         cv2.LINE_AA, _SHIFT)
        # Dots after all limbs so that a joint is never hidden under a limb of another colour.
        for k in np.flatnonzero(vis):
            cv2.circle(image_rgb, _fixed(pts[k, 0], pts[k, 1]), (t + 1) * _ONE, kp_colors[k], -1, cv2.LINE_AA,
                       _SHIFT)
        if n < track_ids.shape[0] and track_ids[n] >= 0 and vis.any():
            x0, y0 = float(pts[vis, 0].min()), float(pts[vis, 1].min())
            _label(image_rgb, str(int(track_ids[n])), x0, y0 - 2 * t - 2, t)
    return image_rgb


def _label(image: np.ndarray, text: str, x: float, y: float, t: int) -> None:
    """Text with a dark outline (readable on any background); (x, y) is its bottom-left corner."""
    scale = 0.35 + 0.15 * t
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
    h, w = image.shape[:2]
    # Keep the label inside the image: above the person when there is room, else inside the box.
    xi = int(min(max(x, 0), max(w - tw, 0)))
    yi = int(min(max(y, th + 1), h - 1))
    cv2.putText(image, text, (xi, yi), _FONT, scale, (0, 0, 0), max(2, t + 1), cv2.LINE_AA)
    cv2.putText(image, text, (xi, yi), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_hud(image_rgb: np.ndarray, lines: list[str], alpha: float = 0.5) -> np.ndarray:
    """Draw text lines in a semi-transparent dark box at the top-left corner, in place.

    Args:
        image_rgb: (H, W, 3) uint8 RGB, writeable and C-contiguous; drawn on in place.
        lines: text lines (ASCII; OpenCV's Hershey fonts have no other glyphs).
        alpha: how much the box darkens the image below it (0: invisible, 1: black).

    Returns:
        ``image_rgb`` itself.
    """
    _check_image(image_rgb)
    if not lines:
        return image_rgb
    h, w = image_rgb.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    pad = max(2, int(round(6 * scale)))
    sizes = [cv2.getTextSize(s, _FONT, scale, 1) for s in lines]
    line_h = max(th + base for (_, th), base in sizes) + pad
    box_w = min(w, max(tw for (tw, _), _ in sizes) + 2 * pad)
    box_h = min(h, line_h * len(lines) + pad)
    roi = image_rgb[:box_h, :box_w]
    # Darken in place (uint16 math avoids a float copy of the box).
    roi[...] = (roi.astype(np.uint16) * int(round((1.0 - alpha) * 256)) >> 8).astype(np.uint8)
    for i, (text, ((_, th), _)) in enumerate(zip(lines, sizes)):
        cv2.putText(image_rgb, text, (pad, pad + th + i * line_h), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image_rgb


@dataclass
class RenderConfig:
    """Options of :class:`RenderStage` (the ``render`` config section).

    Attributes:
        skeleton: skeleton name (:func:`models.skeleton.get_skeleton`); None: the model's.
        min_score: keypoints with score <= this are not drawn.
        thickness: limb thickness in pixels; ``None`` scales with the image size.
        hud: draw the fps / latency box.
        fps_window: number of recent frames (per source) the HUD's fps is computed from.
    """

    skeleton: str | None = None
    min_score: float = 0.1
    thickness: int | None = None
    hud: bool = True
    fps_window: int = 30

    def __post_init__(self) -> None:
        if self.skeleton is not None:
            get_skeleton(self.skeleton)  # fails early, listing the known names
        if not (isinstance(self.min_score, (int, float)) and math.isfinite(self.min_score)):
            raise ValueError(f"min_score must be a finite number, got {self.min_score!r}")
        if self.thickness is not None and (isinstance(self.thickness, bool) or int(self.thickness) < 1):
            raise ValueError(f"thickness must be an integer >= 1 or null, got {self.thickness!r}")
        if not isinstance(self.hud, bool):
            raise ValueError(f"hud must be true or false, got {self.hud!r}")
        if isinstance(self.fps_window, bool) or int(self.fps_window) < 2:
            raise ValueError(f"fps_window must be an integer >= 2, got {self.fps_window!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "RenderConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return from_section(cls, d, "render option")


class RenderStage:
    """Draws people (and optionally a HUD) on each frame's image.

    The HUD shows, per source, the frame rate measured from the capture timestamps of the last
    ``fps_window`` frames and the latency from capture to this stage. Frames without an image
    pass through unchanged; an end of stream or a new epoch (``end`` / ``reset``, called by the
    runner) restarts that source's fps measurement. The skeleton is the model's (``open(meta)``
    with ``meta["model"]["skeleton"]``) unless the config names one.

    Args:
        config: the options.
    """

    name = "render"

    def __init__(self, config: RenderConfig | None = None) -> None:
        self.config = config or RenderConfig()
        self.skeleton = get_skeleton(self.config.skeleton or "coco17")
        self._history: dict[int, deque] = {}

    def open(self, meta: dict | None = None) -> None:
        """Take the model's skeleton from the metadata (unless the config names one)."""
        model = (meta or {}).get("model") or {}
        if self.config.skeleton is None and model.get("skeleton"):
            self.skeleton = get_skeleton(model["skeleton"])
        self._history.clear()

    def reset(self, source_id: int) -> None:
        """That source restarted (new epoch): forget its timestamps."""
        self._history.pop(source_id, None)

    def end(self, source_id: int) -> None:
        self._history.pop(source_id, None)

    def close(self) -> None:
        """Nothing to release; present for the stage protocol."""

    def fps(self, source_id: int) -> float | None:
        """Frame rate of a source from its recent capture timestamps; ``None`` with fewer than 2 frames."""
        hist = self._history.get(source_id)
        if not hist or len(hist) < 2:
            return None
        span = hist[-1] - hist[0]
        return (len(hist) - 1) * 1e9 / span if span > 0 else None

    def process(self, frame: Frame) -> Frame:
        """Draw on ``frame.image`` (a copy when it is read-only)."""
        if frame.eos or frame.image is None:
            return frame
        src = frame.source_id
        hist = self._history.get(src)
        if hist is None:
            hist = self._history[src] = deque(maxlen=int(self.config.fps_window))
        hist.append(int(frame.t_capture_ns))
        image = frame.image
        if not image.flags.writeable or not image.flags.c_contiguous:
            image = np.array(image, dtype=np.uint8, order="C", copy=True)
        cfg = self.config
        draw_people(image, frame.people, self.skeleton, cfg.min_score, cfg.thickness)
        if cfg.hud:
            fps = self.fps(src)
            latency_ms = (now_ns() - int(frame.t_capture_ns)) / 1e6
            lines = [f"fps {fps:.1f}" if fps is not None else "fps --", f"latency {latency_ms:.0f} ms"]
            if frame.people is not None:
                lines.append(f"people {len(frame.people)}")
            draw_hud(image, lines)
        frame.image = image
        return frame
