"""Synthetic multi-person COCO-17 scenes for round-trip tests and decoder benchmarks.

A scene is a list of plausible standing/walking poses (random scale, lean, arm and leg angles,
facing the camera or turned away), placed so that their boxes do not overlap (or freely, for
benchmarks), with some keypoints hidden (leaf joints, or cut by the image border) and some pairs
whose same-type forearms cross. Hidden keypoints never disconnect a person in the skeleton's limb
graph: the visible part of every person is one connected piece, so a correct decoder must return
it as one person.
"""
from __future__ import annotations

import numpy as np

from ..skeleton import COCO_17, Skeleton

__all__ = ["random_pose", "random_scene", "crossing_pair"]

# Standing person, facing the camera, height 1, origin at the hip centre, y down. The person's
# left side is on the image's right (+x).
_TEMPLATE = np.array([
    (0.00, -0.80), (0.03, -0.83), (-0.03, -0.83), (0.07, -0.81), (-0.07, -0.81),
    (0.12, -0.66), (-0.12, -0.66), (0.15, -0.47), (-0.15, -0.47), (0.17, -0.29), (-0.17, -0.29),
    (0.08, -0.36), (-0.08, -0.36), (0.09, -0.10), (-0.09, -0.10), (0.10, 0.16), (-0.10, 0.16),
])
_TEMPLATE[:, 1] += 0.36  # origin at the hips -> origin at mid body
_LEAVES = (3, 4, 9, 10, 15, 16)  # ears, wrists, ankles: hiding one never disconnects the rest


def _rot(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def random_pose(rng: np.random.Generator, height: float, centre: tuple[float, float],
                facing_away: bool | None = None) -> np.ndarray:
    """One pose: (17, 2) float64 pixel coordinates (all keypoints, visibility decided later)."""
    p = _TEMPLATE.copy()
    # arms: rotate elbow about the shoulder and wrist about the elbow
    for sh, el, wr in ((5, 7, 9), (6, 8, 10)):
        a1 = rng.uniform(-1.2, 1.2)
        a2 = a1 + rng.uniform(-1.0, 1.0)
        upper, lower = p[el] - p[sh], p[wr] - p[el]
        p[el] = p[sh] + _rot(upper, a1)
        p[wr] = p[el] + _rot(lower, a2)
    for hip, kn, an in ((11, 13, 15), (12, 14, 16)):
        a1 = rng.uniform(-0.35, 0.35)
        a2 = a1 + rng.uniform(-0.3, 0.3)
        upper, lower = p[kn] - p[hip], p[an] - p[kn]
        p[kn] = p[hip] + _rot(upper, a1)
        p[an] = p[kn] + _rot(lower, a2)
    if facing_away is None:
        facing_away = rng.random() < 0.3
    if facing_away:  # seen from behind: the person's left is on the image's left
        p[:, 0] = -p[:, 0]
    lean = rng.uniform(-0.2, 0.2)
    p = np.stack([_rot(v, lean) for v in p])
    p *= height * rng.uniform(0.95, 1.05, size=(1, 2))
    return p + np.asarray(centre, dtype=np.float64)


def _visible_component(vis: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """Keep only the largest connected piece of the visible keypoints in the limb graph."""
    k = skeleton.num_keypoints
    comp = -np.ones(k, dtype=np.int64)
    best, best_size = -1, 0
    for start in range(k):
        if not vis[start] or comp[start] >= 0:
            continue
        stack, size = [start], 0
        comp[start] = start
        while stack:
            u = stack.pop()
            size += 1
            for a, b in skeleton.limbs:
                for x, y in ((a, b), (b, a)):
                    if x == u and vis[y] and comp[y] < 0:
                        comp[y] = start
                        stack.append(y)
        if size > best_size:
            best, best_size = start, size
    return comp == best


def _finalise(pts: np.ndarray, rng: np.random.Generator, image_hw, hide_prob: float, border_margin: float,
              skeleton: Skeleton) -> np.ndarray | None:
    h, w = image_hw
    m = border_margin
    vis = (pts[:, 0] >= m) & (pts[:, 0] <= w - 1 - m) & (pts[:, 1] >= m) & (pts[:, 1] <= h - 1 - m)
    for leaf in _LEAVES:
        if rng.random() < hide_prob:
            vis[leaf] = False
    vis &= _visible_component(vis, skeleton)
    if vis.sum() < 5:
        return None
    kp = np.zeros((skeleton.num_keypoints, 3))
    kp[vis, :2] = pts[vis]
    kp[vis, 2] = 2
    return kp


def crossing_pair(rng: np.random.Generator, height: float, centre: tuple[float, float]) -> np.ndarray:
    """Two people side by side whose left forearms (the same PAF channel) cross in an X.

    Returns (2, 17, 2) pixel coordinates.
    """
    cx, cy = centre
    gap = 0.6 * height
    for _ in range(100):  # same-type keypoints of the two stay >= 0.25 h apart (distinct peaks)
        a = random_pose(rng, height, (cx - gap / 2, cy), facing_away=False)
        b = random_pose(rng, height, (cx + gap / 2, cy), facing_away=True)
        if np.hypot(*(a - b).T).min() >= 0.25 * height:
            break
    # both left forearms span the gap between the two and cross near its middle; elbows and
    # wrists of the two stay > 0.4 h apart so that their heatmap peaks remain distinct
    sh = (a[5, 1] + b[5, 1]) / 2
    a[7] = (cx - 0.20 * height, sh + 0.15 * height)
    a[9] = (cx + 0.22 * height, sh + 0.32 * height)
    b[7] = (cx + 0.20 * height, sh + 0.10 * height)
    b[9] = (cx - 0.22 * height, sh + 0.35 * height)
    return np.stack([a, b])


def _box(pts: np.ndarray, margin: float) -> np.ndarray:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return np.concatenate([lo - margin, hi + margin])


def random_scene(rng: np.random.Generator, n_people: int, image_hw=(512, 512), height_range=(60.0, 160.0),
                 n_crossing_pairs: int = 0, hide_prob: float = 0.15, allow_overlap: bool = False,
                 border_fraction: float = 0.1, border_margin: float = 0.0, skeleton: Skeleton = COCO_17, max_tries: int = 2000) -> np.ndarray:
    """A scene of up to ``n_people`` people (fewer when they do not fit without overlap).

    Args:
        n_crossing_pairs: how many of the people come as :func:`crossing_pair` pairs.
        border_fraction: share of people placed across the image border (partly visible).
        border_margin: keypoints closer than this to the border (pixels) count as hidden.
        allow_overlap: place freely (benchmarks); otherwise boxes keep a gap so that every person
            is "separated" from the others.

    Returns:
        (N, 17, 3) float64 x, y, v (v = 2 visible, 0 hidden).
    """
    h, w = image_hw
    boxes: list[np.ndarray] = []
    people: list[np.ndarray] = []

    def fits(pts):
        bx = _box(pts, margin=8.0)
        if allow_overlap:
            return True
        return all(bx[2] < o[0] or o[2] < bx[0] or bx[3] < o[1] or o[3] < bx[1] for o in boxes)

    tries = 0
    pairs_left = n_crossing_pairs
    while len(people) < n_people and tries < max_tries:
        tries += 1
        height = rng.uniform(*height_range)
        at_border = rng.random() < border_fraction
        lo_x, hi_x = (-0.1 * height, w + 0.1 * height) if at_border else (0.35 * height, w - 0.35 * height)
        lo_y, hi_y = (-0.2 * height, h + 0.2 * height) if at_border else (0.55 * height, h - 0.55 * height)
        if hi_x <= lo_x or hi_y <= lo_y:
            continue
        centre = (rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y))
        if pairs_left > 0 and len(people) + 2 <= n_people:
            group = list(crossing_pair(rng, height, centre))
        else:
            group = [random_pose(rng, height, centre)]
        kps = [_finalise(g, rng, image_hw, hide_prob, border_margin, skeleton) for g in group]
        if any(k is None for k in kps):
            continue
        vis_pts = [k[k[:, 2] > 0, :2] for k in kps]
        whole = np.concatenate(vis_pts)
        if not fits(whole):
            continue
        if len(group) == 2:
            pairs_left -= 1
            boxes.append(_box(whole, margin=8.0))
        else:
            boxes.append(_box(vis_pts[0], margin=8.0))
        people.extend(kps)
    return np.asarray(people, dtype=np.float64).reshape(-1, skeleton.num_keypoints, 3)
