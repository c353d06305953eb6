"""MPII Human Pose in its common JSON form (the stacked-hourglass / mmpose ports).

The json is a list of person records::

    {"image": "015601864.jpg", "joints": [[x, y] * 16], "joints_vis": [0/1 * 16],
     "center": [x, y], "scale": s, "headboxes": [[x1, y1], [x2, y2]]}   # headboxes optional

``scale`` is the person's box height / 200 px. Joints follow ``MPII_16`` (models/skeleton.py),
which is MPII's own order. Items are grouped per image (all records with the same ``image``, in
order of first appearance), the bottom-up form, with the per-person ``center``, ``scale`` and
``head_size`` alongside so single-person PCKh evaluation can still use them.

Head boxes (the PCKh normaliser ``head_size = 0.6 * |(x2 - x1, y2 - y1)|``, as in MPII's evaluation
code) are accepted in either of two forms:

* a ``headboxes`` field per record: ``[[x1, y1], [x2, y2]]`` or flat ``[x1, y1, x2, y2]``;
* the ``headboxes=`` argument: an array with one box per json record, in record order, shaped
  (R, 2, 2) (``[record][corner][xy]``), (R, 4), or MPII's ``headboxes_src`` layout (2, 2, R); or a
  path to a ``.npy`` file holding one of those, or to ``mpii_gt_val.mat`` (key ``headboxes_src``).

Records without a head box get ``head_size = nan``.

Coordinates in these files are MATLAB 1-based; with ``one_based=True`` (default) joints, centres and
head boxes are shifted by -1 to the 0-based pixel-centre convention of the rest of the package
(mmpose does the same).

MPII only labels some of the people in an image and gives no region for the others, so ``ignore``
is all false: train with that in mind (the unlabelled people become "background").
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from posestream.models.skeleton import MPII_16, Skeleton

from .coco import read_rgb

__all__ = ["MPIIKeypoints", "head_sizes"]

LOG = logging.getLogger(__name__)

_HEAD_SIZE_FACTOR = 0.6  # MPII evaluation's SC_BIAS


def head_sizes(headboxes: np.ndarray) -> np.ndarray:
    """PCKh normalisers of (R, 2, 2) head boxes ``[record][corner][xy]`` -> (R,) float32."""
    boxes = np.asarray(headboxes, dtype=np.float64).reshape(-1, 2, 2)
    return (_HEAD_SIZE_FACTOR * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1)).astype(np.float32)


def _load_headboxes(headboxes, n_records: int) -> np.ndarray:
    """Separate head boxes -> (R, 2, 2) float64."""
    if isinstance(headboxes, (str, Path)):
        path = Path(headboxes)
        if not path.is_file():
            raise FileNotFoundError(f"head box file not found: {path}")
        if path.suffix == ".mat":
            from scipy.io import loadmat

            headboxes = loadmat(str(path))["headboxes_src"]
        else:
            headboxes = np.load(path)
    arr = np.asarray(headboxes, dtype=np.float64)
    if arr.shape == (2, 2, n_records) and n_records != 2:
        arr = np.transpose(arr, (2, 0, 1))  # MPII's headboxes_src: [corner][xy][record]
    if arr.shape in ((n_records, 4), (n_records, 2, 2)):
        return arr.reshape(n_records, 2, 2)
    raise ValueError(f"head boxes must be (R, 2, 2), (R, 4) or (2, 2, R) with R = {n_records} records, got {arr.shape}")


class MPIIKeypoints:
    """MPII json records plus their image folder, one item per image.

    Args:
        ann_file: MPII json (list of person records, see the module docstring).
        image_dir: the folder holding MPII's ``images/``'s files.
        headboxes: optional separate head boxes (see the module docstring); per-record
            ``headboxes`` fields win where both are given.
        one_based: the file's coordinates are 1-based (MATLAB), as in the common ports.
        skeleton: must have 16 keypoints in MPII order (``MPII_16``).

    Raises:
        FileNotFoundError: ``ann_file``, ``image_dir`` or a head box file does not exist.
        ValueError: a record is malformed.
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, headboxes=None, one_based: bool = True,
                 skeleton: Skeleton = MPII_16) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.skeleton = skeleton
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"annotation file not found: {self.ann_file}")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        with open(self.ann_file, encoding="utf-8") as f:
            records = json.load(f)
        if not isinstance(records, list):
            raise ValueError(f"{self.ann_file}: expected a list of person records, got {type(records).__name__}")
        k = skeleton.num_keypoints
        offset = 1.0 if one_based else 0.0
        extra = _load_headboxes(headboxes, len(records)) if headboxes is not None else None

        groups: dict[str, list[tuple]] = {}
        for r, rec in enumerate(records):
            try:
                joints = np.asarray(rec["joints"], dtype=np.float64).reshape(k, 2)
                vis = np.asarray(rec.get("joints_vis", np.ones(k)), dtype=np.float64).reshape(k)
                center = np.asarray(rec.get("center", (np.nan, np.nan)), dtype=np.float64).reshape(2)
                scale = float(rec.get("scale", np.nan))
                box = rec.get("headboxes")
                box = np.asarray(box, dtype=np.float64).reshape(2, 2) if box is not None else (
                    extra[r] if extra is not None else np.full((2, 2), np.nan))
                name = rec["image"]
            except (KeyError, ValueError) as e:
                raise ValueError(f"{self.ann_file}: record {r} is malformed: {e}") from None
            kp = np.zeros((k, 3), dtype=np.float32)
            labelled = vis > 0
            kp[labelled, :2] = joints[labelled] - offset
            kp[labelled, 2] = 2.0  # the json's flag means "annotated"; COCO calls that v=2
            groups.setdefault(name, []).append((kp, center - offset, scale, head_sizes(box - offset)[0]))

        names = list(groups)
        stems_are_ids = all(Path(n).stem.isdigit() for n in names)
        # per image: (file name, image_id, keypoints (N, K, 3), center (N, 2), scale (N,), head_size (N,))
        self._images = []
        for i, name in enumerate(names):
            people = groups[name]
            self._images.append((
                name, int(Path(name).stem) if stems_are_ids else i,
                np.stack([p[0] for p in people]).astype(np.float32),
                np.stack([p[1] for p in people]).astype(np.float32),
                np.asarray([p[2] for p in people], dtype=np.float32),
                np.asarray([p[3] for p in people], dtype=np.float32),
            ))
        LOG.info("%s: %d images, %d people", self.ann_file, len(self._images), len(records))

    def __len__(self) -> int:
        return len(self._images)

    def num_people(self, index: int) -> int:
        return len(self._images[index][2])

    def image_ids(self) -> list[int]:
        return [r[1] for r in self._images]

    def __getitem__(self, index: int) -> dict:
        """One image and its people.

        Returns:
            dict: ``image`` (H, W, 3) uint8 RGB; ``keypoints`` (N, 16, 3) float32 x, y, v (v in {0, 2});
            ``ignore`` (H, W) bool, all false; ``image_id`` int (the file name's number where all
            names are numbers, else the item index); ``file`` str; ``center`` (N, 2) float32;
            ``scale`` (N,) float32 (box height / 200 px); ``head_size`` (N,) float32 (nan without a head box).

        Raises:
            FileNotFoundError: the image file is missing (the message names it).
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        name, image_id, kp, center, scale, head = self._images[index]
        path = self.image_dir / name
        image = read_rgb(path)
        return {"image": image, "keypoints": kp.copy(), "ignore": np.zeros(image.shape[:2], dtype=bool),
                "image_id": image_id, "file": str(path), "center": center.copy(), "scale": scale.copy(),
                "head_size": head.copy()}

    def __repr__(self) -> str:
        return f"MPIIKeypoints({str(self.ann_file)!r}, {str(self.image_dir)!r}, {len(self)} images)"
