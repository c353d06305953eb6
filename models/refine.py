"""Top-down refinement: every person a bottom-up model found, cropped and run through a
single-person model (MoveNet Thunder), the refined keypoints mapped back to image pixels.

Boxes (:func:`person_boxes`): the extent of a person's found keypoints, squared on its longer side
and enlarged by ``box_scale`` (1.25, the crop Thunder's parity files and our prototype use), with a
floor of ``min_side_frac`` × the body size implied by the skeleton so that a person seen by a few
keypoints (a face) is not blown up to fill the crop. The crop is centred on the box, **also for
people cut by the frame border**: the part outside the image is black (as Thunder's own video
pipeline pads), so the person stays centred and Thunder's centre weighting keeps choosing them
(of two people in one crop, the centred one wins). Refined keypoints that land outside the frame
are marked not found (score 0): the camera did not see them.

Fusion (:func:`fuse`, by measurement on ``coco-mini/train2017``: README "Accurate mode"): a refined
keypoint replaces the bottom-up one unless Thunder's score is below ``keep_bottomup_below`` and the
bottom-up keypoint exists; the person's score becomes the mean of the refined keypoint scores
(``score="refined"``). After refinement two detections of one person (a split skeleton) become
the same person: :func:`suppress_duplicates` keeps the higher-scored of any pair with OKS above
``nms_oks``.

On CUDA all crops of a frame go through the network in one call; on a CPU one crop per call,
which measured faster there (``batch`` sets it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from . import oks as oks_mod
from .skeleton import COCO_17, body_height

if TYPE_CHECKING:
    from .fields import Poses

__all__ = ["RefineConfig", "Refiner", "person_boxes", "crop_matrix", "make_crops", "crops_to_image", "fuse",
           "suppress_duplicates", "boxes_from_xywh", "order_for_cap", "RefinedPredictor", "mean_found_score"]


@dataclass
class RefineConfig:
    """Refinement settings (YAML section ``refine``).

    enabled: run the refinement (``posestream run --refine``).
    model: ``default`` (the shipped ``models/weights/movenet_thunder.pt``), a ``movenet_thunder``
        checkpoint or its ONNX export.
    box_scale: crop side = box_scale × the longer side of the keypoints' extent.
    min_side_frac: the crop side is at least this × the person's body size estimated from the
        skeleton (limb lengths), so a person seen by a few keypoints is not over-magnified.
    keep_bottomup_below: a refined keypoint whose score is below this keeps the bottom-up one
        (when there is one).
    min_score: refined keypoints scoring below this are marked not found (score 0); 0 keeps all.
    nms_oks: after refinement, of two people with OKS above this the lower-scored is dropped
        (1 disables).
    max_people: refine at most this many people per frame (the largest first); the rest keep
        their bottom-up keypoints. ``None``: all (lossless runs); live runs default to ``live_max_people``.
    live_max_people: the cap used for live sources when ``max_people`` is not given (2: a live
        frame then costs at most ≈ 3× the bottom-up model's time on a 2-core CPU, README "Accurate mode").
    batch: crops per forward call. ``None`` (auto): every crop of a frame in one call on CUDA;
        one crop per call on a CPU, where batching measured 0.4–0.9× as fast (``posestream bench refine``).
    """

    enabled: bool = False
    model: str = "default"
    box: str = "extent"
    box_scale: float = 1.25
    iterations: int = 1
    min_side_frac: float = 0.6
    keep_bottomup_below: float = 0.0
    min_score: float = 0.0
    nms_oks: float = 0.8
    score: str = "product"
    max_people: int | None = None
    live_max_people: int = 2
    batch: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled must be true or false, got {self.enabled!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a name or a path, got {self.model!r}")
        for name, lo, hi in (("box_scale", 0.5, 4.0), ("min_side_frac", 0.0, 4.0), ("keep_bottomup_below", 0.0, 1.0),
                             ("min_score", 0.0, 1.0), ("nms_oks", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {v!r}")
        if self.box not in ("extent", "torso"):
            raise ValueError(f"box must be extent or torso, got {self.box!r}")
        if isinstance(self.iterations, bool) or self.iterations not in (1, 2, 3):
            raise ValueError(f"iterations must be 1, 2 or 3, got {self.iterations!r}")
        if self.score not in ("refined", "bottomup", "product"):
            raise ValueError(f"score must be refined, bottomup or product, got {self.score!r}")
        for name in ("max_people", "live_max_people", "batch"):
            v = getattr(self, name)
            if name in ("max_people", "batch") and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10000 or (name == "batch" and v < 1):
                raise ValueError(f"{name} must be a whole number >= {1 if name == 'batch' else 0}, got {v!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "RefineConfig":
        from .config import from_section

        return from_section(cls, d, "refine option")


def person_boxes(keypoints: np.ndarray, box_scale: float = 1.25, min_side_frac: float = 0.0,
                 skeleton=COCO_17) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 3) people in image pixels -> (centres (N, 2) x, y; sides (N,)) of square crops.

    The centre is the middle of the found keypoints' extent; the side is ``box_scale`` × its
    longer side, at least ``min_side_frac`` × the skeleton-estimated body height, and at least 16 px.
    """
    kps = np.asarray(keypoints, np.float32).reshape(len(keypoints), -1, 3)
    found = kps[..., 2] > 0
    big = np.float32(1e9)
    x0 = np.where(found, kps[..., 0], big).min(1)
    y0 = np.where(found, kps[..., 1], big).min(1)
    x1 = np.where(found, kps[..., 0], -big).max(1)
    y1 = np.where(found, kps[..., 1], -big).max(1)
    none = ~found.any(1)
    x0[none] = y0[none] = x1[none] = y1[none] = 0.0
    centres = np.stack([(x0 + x1) / 2, (y0 + y1) / 2], 1)
    sides = box_scale * np.maximum(x1 - x0, y1 - y0)
    if min_side_frac > 0:
        sides = np.maximum(sides, min_side_frac * body_height(kps, skeleton))
    return centres.astype(np.float32), np.maximum(sides, 16.0).astype(np.float32)


def torso_boxes(keypoints: np.ndarray, skeleton=COCO_17) -> tuple[np.ndarray, np.ndarray]:
    """MoveNet's own crop rule (its video pipeline's crop region): centred on the hips' midpoint
    (the extent's centre when a hip is missing), half side = max(1.9 × the torso's reach, 1.2 ×
    the whole body's reach) from that centre."""
    kps = np.asarray(keypoints, np.float32).reshape(len(keypoints), -1, 3)
    idx = {n: i for i, n in enumerate(skeleton.keypoints)}
    torso = [idx[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    lh, rh = idx["left_hip"], idx["right_hip"]
    centres, sides = person_boxes(kps, 1.0)
    for i, k in enumerate(kps):
        f = k[:, 2] > 0
        if not f.any():
            continue
        if f[lh] and f[rh]:
            centres[i] = (k[lh, :2] + k[rh, :2]) / 2
        d = np.abs(k[:, :2] - centres[i])
        reach_body = d[f].max(0)
        tf = [j for j in torso if f[j]]
        reach_torso = d[tf].max(0) if tf else np.zeros(2, np.float32)
        sides[i] = 2 * max(1.9 * reach_torso.max(), 1.2 * reach_body.max(), 8.0)
    return centres, sides


def boxes_from_xywh(boxes: np.ndarray, box_scale: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """COCO boxes (N, 4) x, y, w, h -> (centres, sides) as the parity crops were made."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    centres = np.stack([b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    return centres, np.maximum(box_scale * np.maximum(b[:, 2], b[:, 3]), 16.0)


def crop_matrix(cx: float, cy: float, side: float, size: int = 256) -> np.ndarray:
    """The 2×3 affine taking image pixels to crop pixels (thunder/SPEC.md §1)."""
    s = size / side
    return np.array([[s, 0.0, size / 2 - cx * s], [0.0, s, size / 2 - cy * s]], np.float64)


def make_crops(image: np.ndarray, centres: np.ndarray, sides: np.ndarray, size: int = 256) -> np.ndarray:
    """(H, W, 3) uint8 -> (N, size, size, 3) uint8 crops (outside the image: black)."""
    out = np.empty((len(sides), size, size, 3), np.uint8)
    for i, ((cx, cy), side) in enumerate(zip(centres, sides)):
        cv2.warpAffine(image, crop_matrix(cx, cy, side, size), (size, size), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def crops_to_image(yxs: np.ndarray, centres: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Thunder's (N, K, 3) rows (y, x, score) in [0, 1] of each crop -> (N, K, 3) x, y, score in
    image pixels (the inverse of :func:`crop_matrix`)."""
    out = np.empty_like(yxs, dtype=np.float32)
    s = sides[:, None]
    out[..., 0] = centres[:, None, 0] + (yxs[..., 1] - 0.5) * s
    out[..., 1] = centres[:, None, 1] + (yxs[..., 0] - 0.5) * s
    out[..., 2] = yxs[..., 2]
    return out


def fuse(bottom_up: np.ndarray, refined: np.ndarray, keep_bottomup_below: float = 0.0) -> np.ndarray:
    """Per keypoint: the refined one, unless its score is below ``keep_bottomup_below`` and the
    bottom-up one was found. Both (N, K, 3) image pixels."""
    out = refined.copy()
    keep = (refined[..., 2] < keep_bottomup_below) & (bottom_up[..., 2] > 0)
    out[keep] = bottom_up[keep]
    return out


def mean_found_score(kps: np.ndarray) -> np.ndarray:
    """(N, K, 3) -> (N,) the mean score of each person's found keypoints (0 when none is found)."""
    found = kps[..., 2] > 0
    return np.where(found.any(1), (kps[..., 2] * found).sum(1) / np.maximum(found.sum(1), 1), 0.0).astype(np.float32)


def _person_area(kps: np.ndarray) -> float:
    f = kps[:, 2] > 0
    if f.sum() < 2:
        return 0.0
    x, y = kps[f, 0], kps[f, 1]
    return float((x.max() - x.min()) * (y.max() - y.min()))


def suppress_duplicates(keypoints: np.ndarray, scores: np.ndarray, threshold: float,
                        sigmas: np.ndarray | None = None) -> np.ndarray:
    """Indices of the people to keep (greedy by score): a person whose OKS with a kept,
    higher-scored one exceeds ``threshold`` is dropped."""
    order = np.argsort(-scores, kind="stable")
    if threshold >= 1.0 or len(order) < 2:
        return order
    sig = COCO_17.sigma_array if sigmas is None else sigmas
    kept: list[int] = []
    for i in order:
        dup = False
        for j in kept:
            area = max(_person_area(keypoints[j]), 1.0) * 0.55  # COCO's area ≈ 0.55 × box
            vis = (keypoints[j][:, 2] > 0) & (keypoints[i][:, 2] > 0)
            if vis.sum() == 0:
                continue
            if oks_mod.oks_terms(keypoints[j], keypoints[i], area, sig)[vis].mean() > threshold:
                dup = True
                break
        if not dup:
            kept.append(int(i))
    return np.asarray(kept, np.int64)


def order_for_cap(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The order in which a per-frame cap refines people: the largest (keypoint extent) first,
    ties by score."""
    sizes = np.array([_person_area(k) for k in keypoints], np.float64)
    return np.lexsort((-np.asarray(scores, np.float64), -sizes))


class Refiner:
    """Bottom-up people -> refined people, with any runner of the Thunder network.

    Args:
        run: ``(B, 3, 256, 256) float32 -> (kpt_heatmap, center, kpt_regress, kpt_offset)``
            (PyTorch or ONNX Runtime; :func:`posestream.stream.infer.load_network` makes one).
        meta: the model's metadata (input size, mean, std).
        config: :class:`RefineConfig`.
    """

    def __init__(self, run, meta: dict, config: RefineConfig | None = None, device: str = "cpu") -> None:
        from .nets.thunder import decode

        self.run, self.meta, self.cfg = run, meta, config or RefineConfig()
        self.batch = self.cfg.batch or (64 if device == "cuda" else 1)
        self.size = int(meta.get("input_size", 256))
        self.mean = np.asarray(meta["mean"], np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(meta["std"], np.float32) * 255.0)
        self._decode = decode
        self.last_refined = 0  # people refined in the last call (the cap's effect)

    def forward_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB crops -> (N, 17, 3) rows (y, x, score) in [0, 1], ``batch`` crops per call."""
        out = []
        for i in range(0, len(crops), self.batch):
            x = ((crops[i:i + self.batch].astype(np.float32) - self.mean) * self.inv_std).transpose(0, 3, 1, 2)
            heads = self.run(np.ascontiguousarray(x))
            out.append(self._decode(*heads[:4]))
        return np.concatenate(out) if out else np.zeros((0, 17, 3), np.float32)

    def refine_boxes(self, image: np.ndarray, centres: np.ndarray, sides: np.ndarray) -> np.ndarray:
        """Refined (N, 17, 3) keypoints in image pixels for given crops (outside the frame: score 0)."""
        if len(sides) == 0:
            return np.zeros((0, 17, 3), np.float32)
        kps = crops_to_image(self.forward_crops(make_crops(image, centres, sides, self.size)), centres, sides)
        h, w = image.shape[:2]
        outside = (kps[..., 0] < 0) | (kps[..., 1] < 0) | (kps[..., 0] > w - 1) | (kps[..., 1] > h - 1)
        low = kps[..., 2] < self.cfg.min_score
        kps[outside | low] = 0.0
        return kps

    def __call__(self, image: np.ndarray, poses: Poses, max_people: int | None = None) -> Poses:
        """Refine ``poses`` (bottom-up, image pixels) found on ``image`` (H, W, 3 uint8 RGB).

        ``max_people`` (default: the config's) caps how many are refined: the largest first; the
        others keep their bottom-up keypoints and score."""
        cfg = self.cfg
        kps_in = np.asarray(poses.keypoints, np.float32)
        scores_in = np.asarray(poses.scores, np.float32)
        n = len(scores_in)
        cap = cfg.max_people if max_people is None else max_people
        chosen = np.arange(n) if cap is None or cap >= n else np.sort(order_for_cap(kps_in, scores_in)[:cap])
        self.last_refined = len(chosen)
        if n == 0 or len(chosen) == 0:
            from .fields import Poses

            return Poses(kps_in, scores_in)
        refined = kps_in[chosen]
        for _ in range(cfg.iterations):  # a further pass crops around the refined keypoints
            if cfg.box == "torso":
                centres, sides = torso_boxes(refined)
            else:
                centres, sides = person_boxes(refined, cfg.box_scale, cfg.min_side_frac)
            refined = self.refine_boxes(image, centres, sides)
        fused = fuse(kps_in[chosen], refined, cfg.keep_bottomup_below)
        kps, scores = kps_in.copy(), scores_in.copy()
        kps[chosen] = fused
        found = fused[..., 2] > 0  # Thunder's mean score over the keypoints the fused person has
        mean_ref = np.where(found.any(1), (refined[..., 2] * found).sum(1) / np.maximum(found.sum(1), 1), 0.0)
        if cfg.score == "refined":
            scores[chosen] = mean_ref
        elif cfg.score == "product":
            scores[chosen] = np.sqrt(mean_ref * scores_in[chosen])
        keep = suppress_duplicates(kps, scores, cfg.nms_oks)
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        from .fields import Poses

        return Poses(np.ascontiguousarray(kps[keep]), np.ascontiguousarray(scores[keep]))


class RefinedPredictor:
    """A bottom-up :class:`~posestream.models.predictor.Predictor` followed by a :class:`Refiner`:
    the same interface (``__call__(image) -> Prediction``, ``skeleton``, ``input_size``), so that
    evaluation measures what the pipeline runs.

    ``gt_boxes=True``: the crops come from the ground-truth person boxes instead of the
    detections (the upper bound of top-down refinement); evaluation then passes each image's
    annotations (``uses_annotations``) and the bottom-up model is not run.
    """

    def __init__(self, predictor, refiner: Refiner, gt_boxes: bool = False) -> None:
        self.predictor, self.refiner, self.gt_boxes = predictor, refiner, bool(gt_boxes)
        self.skeleton = predictor.skeleton
        self.input_size = predictor.input_size
        self.uses_annotations = self.gt_boxes

    def __call__(self, image: np.ndarray, annotations: list | None = None):
        from .predictor import Prediction

        if self.gt_boxes:
            anns = [a for a in (annotations or []) if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd")]
            centres, sides = boxes_from_xywh(np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4),
                                             self.refiner.cfg.box_scale)
            kps = self.refiner.refine_boxes(image, centres, sides)
            from .fields import Poses

            return Prediction(Poses(kps, mean_found_score(kps)), None)
        pred = self.predictor(image)
        return Prediction(self.refiner(image, pred.poses), pred.record)
