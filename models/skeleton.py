"""Skeleton definitions: the one place that says what a keypoint and a limb are.

Everything that needs keypoint names, limb pairs (the PAF channels), OKS sigmas, the left/right
flip map or drawing colours imports it from here: target encoding, grouping, evaluation,
augmentation and rendering.

Limb order matters twice: it is the PAF channel order (limb ``i`` owns channels ``2i`` (x) and
``2i + 1`` (y)) and the order in which the grouping step assembles people. The COCO limb list
therefore starts with a spanning tree grown from the torso outwards, followed by redundant limbs
(hips, nose to the far shoulder, ears to shoulders) that let the grouping join partial skeletons
when a tree limb is missing (a person seen from behind has no nose; an occluded shoulder cuts the
tree).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Skeleton", "COCO_17", "MPII_16", "get_skeleton", "SKELETONS"]


@dataclass(frozen=True)
class Skeleton:
    """A keypoint layout.

    Attributes:
        name: registry name (``"coco17"``, ``"mpii16"``); stored in checkpoints.
        keypoints: keypoint names, in channel order.
        limbs: ``(a, b)`` keypoint index pairs; one PAF (2 channels) per limb, pointing a -> b.
        flip_pairs: ``(left, right)`` index pairs swapped by a horizontal flip.
        sigmas: per-keypoint OKS sigmas (COCO's), used by evaluation and tracking.
        limb_colors: BGR colour per limb for drawing.
        keypoint_colors: BGR colour per keypoint for drawing.
    """

    name: str
    keypoints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    limb_colors: tuple[tuple[int, int, int], ...]
    keypoint_colors: tuple[tuple[int, int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        if len(self.sigmas) != k:
            raise ValueError(f"skeleton {self.name}: {len(self.sigmas)} sigmas for {k} keypoints")
        if len(self.limb_colors) != len(self.limbs):
            raise ValueError(f"skeleton {self.name}: {len(self.limb_colors)} colours for {len(self.limbs)} limbs")
        for a, b in self.limbs:
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise ValueError(f"skeleton {self.name}: bad limb ({a}, {b})")
        if not self.keypoint_colors:
            object.__setattr__(self, "keypoint_colors", _keypoint_colors(k, self.flip_pairs))

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def num_limbs(self) -> int:
        return len(self.limbs)

    @property
    def flip_map(self) -> np.ndarray:
        """(K,) int64: index of the mirrored keypoint (itself for centre keypoints)."""
        m = np.arange(self.num_keypoints)
        for left, right in self.flip_pairs:
            m[left], m[right] = right, left
        return m

    @property
    def paf_flip_map(self) -> tuple[np.ndarray, np.ndarray]:
        """What each limb becomes under a horizontal flip.

        Returns:
            index (L,) int64: the mirrored limb; reverse (L,) bool: true where the mirrored limb
            is stored in the opposite direction (its PAF vector must be negated, on top of the
            x-component negation every PAF gets from a horizontal flip).
        """
        fm = self.flip_map
        index = {tuple(limb): i for i, limb in enumerate(self.limbs)}
        out = np.empty(self.num_limbs, dtype=np.int64)
        rev = np.zeros(self.num_limbs, dtype=bool)
        for i, (a, b) in enumerate(self.limbs):
            fa, fb = int(fm[a]), int(fm[b])
            if (fa, fb) in index:
                out[i] = index[(fa, fb)]
            elif (fb, fa) in index:
                out[i], rev[i] = index[(fb, fa)], True
            else:
                raise ValueError(f"skeleton {self.name}: limb {i} has no mirrored limb")
        return out, rev

    @property
    def limb_array(self) -> np.ndarray:
        """(L, 2) int64 limb endpoints, the form the decoders take."""
        return np.asarray(self.limbs, dtype=np.int64).reshape(-1, 2)

    @property
    def sigma_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    def index(self, name: str) -> int:
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"skeleton {self.name} has no keypoint {name!r}; known: {', '.join(self.keypoints)}") from None


def _keypoint_colors(k: int, flip_pairs) -> tuple[tuple[int, int, int], ...]:
    left = {a for a, _ in flip_pairs}
    right = {b for _, b in flip_pairs}
    # Left side warm, right side cool, centre white: the usual convention of pose overlays.
    return tuple((0, 165, 255) if i in left else (255, 128, 0) if i in right else (255, 255, 255) for i in range(k))


_LEFT, _RIGHT, _CENTRE = (0, 165, 255), (255, 128, 0), (0, 220, 0)

COCO_17 = Skeleton(
    name="coco17",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    limbs=(
        # spanning tree, torso first
        (5, 6),    # 0  left_shoulder  -> right_shoulder
        (5, 11),   # 1  left_shoulder  -> left_hip
        (6, 12),   # 2  right_shoulder -> right_hip
        (5, 7),    # 3  left_shoulder  -> left_elbow
        (7, 9),    # 4  left_elbow     -> left_wrist
        (6, 8),    # 5  right_shoulder -> right_elbow
        (8, 10),   # 6  right_elbow    -> right_wrist
        (11, 13),  # 7  left_hip       -> left_knee
        (13, 15),  # 8  left_knee      -> left_ankle
        (12, 14),  # 9  right_hip      -> right_knee
        (14, 16),  # 10 right_knee     -> right_ankle
        (5, 0),    # 11 left_shoulder  -> nose
        (0, 1),    # 12 nose           -> left_eye
        (0, 2),    # 13 nose           -> right_eye
        (1, 3),    # 14 left_eye       -> left_ear
        (2, 4),    # 15 right_eye      -> right_ear
        # redundant limbs (close cycles; join fragments)
        (11, 12),  # 16 left_hip       -> right_hip
        (6, 0),    # 17 right_shoulder -> nose
        (5, 3),    # 18 left_shoulder  -> left_ear
        (6, 4),    # 19 right_shoulder -> right_ear
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # COCO keypoint OKS sigmas (cocoapi, pycocotools/cocoeval.py)
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    limb_colors=(
        _CENTRE, _LEFT, _RIGHT, _LEFT, _LEFT, _RIGHT, _RIGHT, _LEFT, _LEFT, _RIGHT, _RIGHT,
        _CENTRE, _LEFT, _RIGHT, _LEFT, _RIGHT, _CENTRE, _CENTRE, _LEFT, _RIGHT,
    ),
)

MPII_16 = Skeleton(
    name="mpii16",
    keypoints=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "pelvis", "thorax", "upper_neck", "head_top",
        "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    ),
    limbs=(
        (6, 7),    # pelvis -> thorax
        (7, 8),    # thorax -> upper_neck
        (8, 9),    # upper_neck -> head_top
        (6, 2), (2, 1), (1, 0),        # right leg
        (6, 3), (3, 4), (4, 5),        # left leg
        (7, 12), (12, 11), (11, 10),   # right arm
        (7, 13), (13, 14), (14, 15),   # left arm
        (2, 3),    # hips (redundant)
    ),
    flip_pairs=((5, 0), (4, 1), (3, 2), (15, 10), (14, 11), (13, 12)),
    # MPII has no OKS; these follow the COCO values of the matching joints (pelvis/thorax/neck ~ hips/shoulders).
    sigmas=(0.089, 0.087, 0.107, 0.107, 0.087, 0.089, 0.107, 0.079, 0.079, 0.035,
            0.062, 0.072, 0.079, 0.079, 0.072, 0.062),
    limb_colors=(
        _CENTRE, _CENTRE, _CENTRE, _RIGHT, _RIGHT, _RIGHT, _LEFT, _LEFT, _LEFT,
        _RIGHT, _RIGHT, _RIGHT, _LEFT, _LEFT, _LEFT, _CENTRE,
    ),
)

SKELETONS = {s.name: s for s in (COCO_17, MPII_16)}


# typical limb length / standing body height (anthropometric averages), by keypoint names
_LIMB_SHARE = {("left_shoulder", "left_elbow"): 0.19, ("right_shoulder", "right_elbow"): 0.19,
               ("left_elbow", "left_wrist"): 0.15, ("right_elbow", "right_wrist"): 0.15,
               ("left_hip", "left_knee"): 0.25, ("right_hip", "right_knee"): 0.25,
               ("left_knee", "left_ankle"): 0.25, ("right_knee", "right_ankle"): 0.25,
               ("left_shoulder", "left_hip"): 0.30, ("right_shoulder", "right_hip"): 0.30,
               ("left_shoulder", "right_shoulder"): 0.22, ("left_hip", "right_hip"): 0.15}


def body_height(keypoints: np.ndarray, skeleton: "Skeleton | None" = None) -> np.ndarray:
    """(N, K, 3) people (score 0: not found) -> (N,) body-height estimates in the same units:
    each found limb's length over its typical share of a standing person's height, the median
    over the limbs found (robust to a foreshortened limb; 0 where no limb is found). The scale
    that the refinement's crops and the tracker's smoothing use, so that a small far person and a
    large near one are treated alike."""
    sk = skeleton or COCO_17
    kps = np.asarray(keypoints, np.float64).reshape(len(keypoints), sk.num_keypoints, -1)
    idx = {n: i for i, n in enumerate(sk.keypoints)}
    pairs = [(idx[a], idx[b], f) for (a, b), f in _LIMB_SHARE.items() if a in idx and b in idx]
    est = np.full((len(kps), max(len(pairs), 1)), np.nan)
    for j, (ia, ib, f) in enumerate(pairs):
        ok = (kps[:, ia, 2] > 0) & (kps[:, ib, 2] > 0)
        d = np.hypot(kps[:, ia, 0] - kps[:, ib, 0], kps[:, ia, 1] - kps[:, ib, 1]) / f
        est[ok, j] = d[ok]
    out = np.zeros(len(kps))
    has = ~np.isnan(est).all(1)
    if has.any():
        out[has] = np.nanmedian(est[has], axis=1)
    return out.astype(np.float32)


def get_skeleton(name: str) -> Skeleton:
    """Look a skeleton up by name; an unknown name lists the known ones."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; known: {', '.join(sorted(SKELETONS))}") from None
