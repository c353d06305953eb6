"""Benchmark the tracker + smoother on clips whose truth is known: ids, id switches, jitter, lag.

Clips (made here from shared data, real pixels):

* ``still``: one real person (COCO annotation 441444, cut out by its segmentation polygon) standing
  over a real moving background (``vtest.avi``'s pedestrians), 90 frames at 30 fps: every frame
  holds the same person, the pose does not move, so any motion of the skeleton is jitter.
* ``small``: the same, 100 px tall instead of 300 (smoothing in body heights treats both alike).
* ``fast``: the same person moved sideways by 30 % of their height per frame, back and forth,
  90 frames: the association's hard case, and the lag of the smoothing at speed.
* ``vtest``: the first 300 frames of ``vtest.avi`` itself: ids used for a scene with a known
  number of people (pass ``--vtest-people`` as counted on a contact sheet).

Per clip: people (truth), ids used (on the single-person clips: the ids the largest person got,
the background's pedestrians aside), id switches (the clip's person — nearest its known place, or the largest
on vtest — changing id after its first confirmed id), frames where that person has no id yet (-1), jitter (mean |second difference| of
the keypoints found in three successive frames, px/frame², in % of body height) of the raw
detections and of the smoothed output, and the lag (mean distance smoothed–raw, % of body height,
on ``fast``). This is the measurement issue #14 asks for; the numbers of the current tracker are
its baseline.

  posestream bench tracking [--json]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

FPS = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=90, help="frames of the still and fast clips")
    p.add_argument("--vtest-frames", type=int, default=300, help="frames of vtest.avi (0: skip)")
    p.add_argument("--vtest-people", type=int, default=None, help="people in those frames, if counted")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _shared():
    from posestream.models.shipped import SHIPPED_CHECKPOINT

    return SHIPPED_CHECKPOINT.parents[2].parent / "shared" / "data"


def _cutout(ann_id: int = 441444):
    """(RGBA crop of the person, height in px) from coco-mini train2017 by its polygon."""
    import cv2

    d = json.loads((_shared() / "coco-mini/annotations/person_keypoints_train2017.json").read_text())
    a = next(a for a in d["annotations"] if a["id"] == ann_id)
    info = next(i for i in d["images"] if i["id"] == a["image_id"])
    img = cv2.cvtColor(cv2.imread(str(_shared() / "coco-mini/train2017" / info["file_name"])), cv2.COLOR_BGR2RGB)
    mask = np.zeros(img.shape[:2], np.uint8)
    for poly in a["segmentation"]:
        cv2.fillPoly(mask, [np.asarray(poly, np.float32).reshape(-1, 2).astype(np.int32)], 255)
    x, y, w, h = (int(round(v)) for v in a["bbox"])
    return np.dstack([img, mask])[y:y + h, x:x + w], h


def _background(n: int):
    import av

    frames = []
    with av.open(str(_shared() / "videos/vtest.avi")) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    return frames


def make_clip(kind: str, n: int, height: int = 300):
    """-> (frames (list of RGB arrays), person height in px, the person's box centre per frame)."""
    import cv2

    rgba, h0 = _cutout()
    s = height / h0
    rgba = cv2.resize(rgba, (int(rgba.shape[1] * s), height), interpolation=cv2.INTER_AREA)
    ph, pw = rgba.shape[:2]
    out, centres = [], []
    bg = _background(n)
    for i, frame in enumerate(bg):
        frame = frame.copy()
        fh, fw = frame.shape[:2]
        if kind == "fast":
            span = fw - pw
            step = 0.3 * height
            pos = (i * step) % (2 * span)
            x = int(pos if pos <= span else 2 * span - pos)
        else:
            x = (fw - pw) // 2
        y = (fh - ph) // 2
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        region = frame[y:y + ph, x:x + pw].astype(np.float32)
        frame[y:y + ph, x:x + pw] = (alpha * rgba[..., :3] + (1 - alpha) * region).astype(np.uint8)
        out.append(frame)
        centres.append((x + pw / 2, y + ph / 2))
    return out, height, centres


def _main(people, centre=None):
    """The clip's person: nearest its known centre when given, else the largest."""
    if not people:
        return None
    if centre is not None:
        d = []
        for p in people:
            f = p.keypoints[:, 2] > 0
            d.append(np.hypot(*(p.keypoints[f, :2].mean(0) - centre)) if f.any() else np.inf)
        return people[int(np.argmin(d))]
    sizes = [np.ptp(p.keypoints[p.keypoints[:, 2] > 0, 1]) if (p.keypoints[:, 2] > 0).sum() > 1 else 0
             for p in people]
    return people[int(np.argmax(sizes))]


def _jitter(seq: list, height: float) -> float:
    """Mean |x[t+1] - 2 x[t] + x[t-1]| over keypoints found in all three, % of body height."""
    vals = []
    for a, b, c in zip(seq, seq[1:], seq[2:]):
        if a is None or b is None or c is None:
            continue
        ok = (a[:, 2] > 0) & (b[:, 2] > 0) & (c[:, 2] > 0)
        if ok.any():
            vals.append(np.linalg.norm(c[ok, :2] - 2 * b[ok, :2] + a[ok, :2], axis=1).mean())
    return float(np.mean(vals) / height * 100) if vals else float("nan")


def measure(frames, height: float | None, people: int | None, centres=None) -> dict:
    from ..api import Estimator

    raw_est, tr_est = Estimator(), Estimator(track=True)
    raw_seq, sm_seq, ids, main_ids, unconfirmed = [], [], set(), [], 0
    t0 = 1_000_000_000
    try:
        for i, f in enumerate(frames):
            t = t0 + int(i * 1e9 / FPS)
            c = None if centres is None else np.asarray(centres[i])
            raw = _main(raw_est(f, t), c)
            tracked = tr_est(f, t)
            ids.update(p.track_id for p in tracked if p.track_id >= 0)
            main = _main(tracked, c)
            raw_seq.append(None if raw is None else raw.keypoints)
            sm_seq.append(None if main is None else main.keypoints)
            if main is not None:
                if main.track_id < 0:
                    unconfirmed += 1
                else:
                    main_ids.append(main.track_id)
    finally:
        raw_est.close()
        tr_est.close()
    switches = sum(1 for a, b in zip(main_ids, main_ids[1:]) if a != b)
    # a single-person clip (height given) counts the ids its person got (the background's
    # pedestrians get their own); a scene counts every id
    row = {"frames": len(frames), "people": people, "ids": len(set(main_ids)) if height else len(ids),
           "id_switches": switches, "unconfirmed_frames": unconfirmed}
    if height:
        row["jitter_raw_pct"] = _jitter(raw_seq, height)
        row["jitter_smoothed_pct"] = _jitter(sm_seq, height)
        row["jitter_ratio"] = row["jitter_smoothed_pct"] / row["jitter_raw_pct"] if row["jitter_raw_pct"] else None
        lags = [np.linalg.norm(s[(s[:, 2] > 0) & (r[:, 2] > 0), :2] - r[(s[:, 2] > 0) & (r[:, 2] > 0), :2], axis=1).mean()
                for r, s in zip(raw_seq, sm_seq) if r is not None and s is not None
                and ((s[:, 2] > 0) & (r[:, 2] > 0)).any()]
        row["lag_pct"] = float(np.mean(lags) / height * 100) if lags else None
    return row


def run(args: argparse.Namespace) -> int:
    res = {}
    for name, kind, height in (("still", "still", 300), ("small", "still", 100), ("fast", "fast", 300)):
        frames, h, centres = make_clip(kind, args.frames, height)
        res[name] = measure(frames, h, 1, centres)
    if args.vtest_frames:
        res["vtest"] = measure(_background(args.vtest_frames), None, args.vtest_people)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    cols = ("frames", "people", "ids", "id_switches", "unconfirmed_frames", "jitter_raw_pct", "jitter_smoothed_pct",
            "jitter_ratio", "lag_pct")
    print(f"{'clip':<7}" + "".join(f"{c:>20}" for c in cols))
    for kind, row in res.items():
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append(f"{'-' if v is None else (f'{v:.3f}' if isinstance(v, float) else v):>20}")
        print(f"{kind:<7}" + "".join(cells))
    return 0
