"""COCO-format keypoint data: COCO 2017 itself, the pseudo-labelled sets, or a user's own set.

Every item is one image with all its people, the form bottom-up training needs::

    {"image": (H, W, 3) uint8 RGB, "keypoints": (N, K, 3) float32 x, y, v,
     "ignore": (H, W) bool, "image_id": int, "file": str}

``keypoints`` holds the non-crowd annotations with ``num_keypoints > 0``, in json order. ``ignore``
is true where the loss must not look, as OpenPose masks it: crowd regions (``iscrowd=1``; polygon,
uncompressed or compressed RLE; the pseudo-labelled sets store rectangle polygons) and people
without keypoint labels (``iscrowd=0``, ``num_keypoints == 0``: their segmentation, else their
bbox). Teaching "no person here" on those pixels would fight the labelled people.

Images are read with EXIF orientation ignored: COCO's annotations are on the stored pixels.
"""
from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from posestream.models.skeleton import COCO_17, Skeleton

__all__ = ["CocoKeypoints", "ConcatKeypoints", "read_rgb", "segmentation_rle", "training_mix_pairs"]

LOG = logging.getLogger(__name__)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file exists but OpenCV cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise ValueError(f"cannot decode image file: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def segmentation_rle(segmentation, bbox, height: int, width: int) -> dict:
    """One compressed RLE for an annotation's region.

    Args:
        segmentation: COCO segmentation: a list of polygons ``[x0, y0, x1, y1, ...]``, an
            uncompressed RLE (``counts`` a list) or a compressed RLE (``counts`` a str/bytes);
            empty or None to use ``bbox``.
        bbox: ``[x, y, w, h]`` in pixels, used when there is no usable segmentation.
        height, width: image size in pixels.

    Returns:
        a pycocotools RLE dict of size (height, width).
    """
    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation)
        if [int(v) for v in rle["size"]] != [height, width]:
            raise ValueError(f"RLE size {rle['size']} does not match image size {[height, width]}")
        return rle
    # pycocotools reads a list whose first entry has 4 numbers as boxes, so degenerate polygons
    # (fewer than 3 points) must go before the call
    polygons = [p for p in (segmentation or []) if len(p) >= 6 and len(p) % 2 == 0]
    if polygons:
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if bbox is None or len(bbox) != 4:
        raise ValueError("annotation has neither a segmentation nor a bbox")
    return mask_utils.frPyObjects(np.asarray([bbox], dtype=np.float64), height, width)[0]


class CocoKeypoints:
    """A COCO keypoint json plus its image folder, one item per image.

    Args:
        ann_file: COCO keypoint json (``person_keypoints_*.json``).
        image_dir: folder the images' ``file_name`` entries are relative to.
        skeleton: keypoint layout; the json's keypoint category must have ``skeleton.num_keypoints``
            keypoints.

    Raises:
        FileNotFoundError: ``ann_file`` or ``image_dir`` does not exist.
        ValueError: the json's keypoints do not fit ``skeleton``.
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, skeleton: Skeleton = COCO_17) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.skeleton = skeleton
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"annotation file not found: {self.ann_file}")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        with open(self.ann_file, encoding="utf-8") as f:
            data = json.load(f)
        k = skeleton.num_keypoints
        categories = [c for c in data.get("categories", []) if "keypoints" in c]
        for c in categories:
            if len(c["keypoints"]) != k:
                raise ValueError(f"{self.ann_file}: category {c.get('name', c['id'])!r} has "
                                 f"{len(c['keypoints'])} keypoints, skeleton {skeleton.name} has {k}")
        # a json without keypoint categories (a user's own set) is taken as all people
        category_ids = {c["id"] for c in categories} or None

        by_image: dict[int, tuple[list, list]] = {}
        for ann in data.get("annotations", []):
            if category_ids is not None and ann.get("category_id") not in category_ids:
                continue
            people, ignored = by_image.setdefault(ann["image_id"], ([], []))
            kps = ann.get("keypoints")
            if kps is not None and len(kps) != 3 * k:
                raise ValueError(f"{self.ann_file}: annotation {ann.get('id')} has {len(kps)} keypoint values, "
                                 f"expected {3 * k}")
            n_kp = ann.get("num_keypoints")
            if n_kp is None:
                n_kp = int(np.count_nonzero(np.asarray(kps, dtype=np.float64)[2::3] > 0)) if kps else 0
            if ann.get("iscrowd", 0) or n_kp == 0:
                ignored.append(ann)
            else:
                people.append(kps)

        # per image: (file_name, image_id, height, width, keypoints (N, K, 3) float32, ignore RLE or None);
        # ignore regions are merged into one compressed RLE now, so an item decodes a single mask
        self._images: list[tuple[str, int, int, int, np.ndarray, dict | None]] = []
        for img in data.get("images", []):
            h, w = int(img["height"]), int(img["width"])
            people, ignored = by_image.get(img["id"], ([], []))
            kp = np.asarray(people, dtype=np.float32).reshape(len(people), k, 3)
            rle = None
            if ignored:
                try:
                    rles = [segmentation_rle(a.get("segmentation"), a.get("bbox"), h, w) for a in ignored]
                except ValueError as e:
                    raise ValueError(f"{self.ann_file}: image {img['id']}: {e}") from None
                rle = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
            self._images.append((img["file_name"], int(img["id"]), h, w, kp, rle))
        LOG.info("%s: %d images, %d people with keypoints", self.ann_file, len(self._images),
                 sum(len(r[4]) for r in self._images))

    def __len__(self) -> int:
        return len(self._images)

    def num_people(self, index: int) -> int:
        """Number of labelled people in item ``index`` (no image read)."""
        return len(self._images[index][4])

    def image_ids(self) -> list[int]:
        return [r[1] for r in self._images]

    def __getitem__(self, index: int) -> dict:
        """One image and its labels.

        Returns:
            dict: ``image`` (H, W, 3) uint8 RGB; ``keypoints`` (N, K, 3) float32 x, y, v (v in {0, 1, 2});
            ``ignore`` (H, W) bool; ``image_id`` int; ``file`` str (the image path).

        Raises:
            FileNotFoundError: the image file is missing (the message names it).
            ValueError: the image's size differs from the json's.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        file_name, image_id, h, w, kp, rle = self._images[index]
        path = self.image_dir / file_name
        image = read_rgb(path)
        if image.shape[:2] != (h, w):
            raise ValueError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, {self.ann_file} says {w}x{h}")
        ignore = mask_utils.decode(rle).astype(bool) if rle is not None else np.zeros((h, w), dtype=bool)
        return {"image": image, "keypoints": kp.copy(), "ignore": ignore, "image_id": image_id, "file": str(path)}

    def __repr__(self) -> str:
        return f"CocoKeypoints({str(self.ann_file)!r}, {str(self.image_dir)!r}, {len(self)} images)"


class ConcatKeypoints:
    """Several keypoint sources (same skeleton) as one, items in order.

    Args:
        parts: sources with ``len()``, ``__getitem__`` and a ``skeleton`` attribute
            (:class:`CocoKeypoints`, ``MPIIKeypoints`` or another ``ConcatKeypoints``).

    Raises:
        ValueError: no parts, or parts with different skeletons.
    """

    def __init__(self, parts: Sequence) -> None:
        self.parts = list(parts)
        if not self.parts:
            raise ValueError("ConcatKeypoints needs at least one source")
        names = {p.skeleton.name for p in self.parts}
        if len(names) != 1:
            raise ValueError(f"sources have different skeletons: {sorted(names)}")
        self.skeleton = self.parts[0].skeleton
        self._ends = np.cumsum([len(p) for p in self.parts]).tolist()
        ids = [i for p in self.parts if hasattr(p, "image_ids") for i in p.image_ids()]
        if len(ids) != len(set(ids)):
            # harmless for training; evaluation by image id would mix images up
            LOG.warning("image ids repeat across the concatenated sources")

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str | Path, str | Path]], skeleton: Skeleton = COCO_17) -> ConcatKeypoints:
        """Concatenate COCO-format sets given as ``(ann_file, image_dir)`` pairs."""
        return cls([CocoKeypoints(a, d, skeleton) for a, d in pairs])

    def __len__(self) -> int:
        return self._ends[-1]

    def image_ids(self) -> list[int]:
        return [i for p in self.parts for i in p.image_ids()]

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        part = bisect.bisect_right(self._ends, index)
        start = self._ends[part - 1] if part else 0
        return self.parts[part][index - start]

    def __repr__(self) -> str:
        return f"ConcatKeypoints({self.parts!r})"


def training_mix_pairs(data_root: str | Path) -> list[tuple[Path, Path]]:
    """The real COCO-17 training mix under ``data_root`` (the shared data folder) as
    ``(ann_file, image_dir)`` pairs: ``pseudo/``, ``pseudo2/`` and ``coco-mini/train2017``
    (about 2400 images). Never includes ``coco-mini/val2017`` (held-out evaluation).
    """
    root = Path(data_root)
    return [
        (root / "pseudo" / "person_keypoints_pseudo.json", root / "pseudo" / "images"),
        (root / "pseudo2" / "person_keypoints_pseudo2.json", root / "pseudo2" / "images"),
        (root / "coco-mini" / "annotations" / "person_keypoints_train2017.json", root / "coco-mini" / "train2017"),
    ]
