"""Benchmark the tracker + smoother on clips whose truth is known: ids, id switches, jitter, lag.

Clips (made here from shared data, real pixels; a cut-out person is COCO annotation 441444, cut
out by its segmentation polygon and pasted over ``vtest.avi``'s moving pedestrians):

* ``still``: the cut-out person, 300 px tall, standing still, 90 frames at 30 fps: any motion of
  the skeleton is jitter.
* ``small``: the same, 100 px tall (smoothing in body heights treats both alike).
* ``walk``: the same person carried sideways at walking speed (0.8 body heights / s, about
  1.4 m/s for a 1.75 m person), back and forth: the smoothing's lag at walking speed.
* ``fast``: moved by 30 % of their height per frame, back and forth: the association's hard case.
* ``turn``: a turn on the spot, one turn in 3 s, approximated by squeezing the cut-out
  horizontally by |cos θ| (at most to 0.4 of its width: a body seen from the side) and
  mirroring it past 90° (a flat figure turning: left and right swap sides as in a real turn; the
  depth cues of a real body are missing).
* ``pedestrian``: ``vtest.avi`` itself cropped (528 × 320, 10 fps) to one pedestrian's crossing
  (frames 168–284: he walks from the lamp post down to the right and back up to the
  left, passing two others); his place per frame comes from the pseudo-labelled frames
  (``shared/data/pseudo``, every 4th vtest frame), linked by nearest box and interpolated.
* ``vtest``: the first 300 frames of ``vtest.avi`` (10 fps): the ids used for a scene whose people
  were counted by hand (``VTEST_PEOPLE``, see the README).

Per clip: people (truth), ids used (on the single-person clips: the ids the clip's person got,
the background's pedestrians aside; the clip's person is the drawn detection nearest its known place),
id switches (that person's id leaving them for another after their first id), frames where that person has no id
(-1 or -2), jitter (mean |second difference| of the keypoints drawn (score > 0.1) in three successive frames, in %
of body height per frame²) of the raw detections and of the smoothed output, and the lag on the
moving clips: the smoothed keypoints' mean offset behind the raw ones along the direction of
motion, % of body height (the raw detections' noise averages out of a signed mean; the lag does
not); and the lag of every keypoint that moves faster than 0.5 body heights / s (a swinging arm,
a turning body) along its own motion (``keypoint_lag_pct``).

The network runs once per clip; the tracker then runs on the cached detections, so
``--ablate`` compares tracker settings (association and smoothing choices, issue #14) on the
same detections in one run.

  posestream bench tracking [--json] [--ablate]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

FPS = 30.0          # the made clips
VTEST_FPS = 10.0    # vtest.avi's own rate (and so the pedestrian crop's)
WALK_SPEED = 0.8    # body heights per second
SIDE_WIDTH = 0.4    # a body seen from the side is about 0.4 times as wide as from the front
VISIBLE = 0.1       # keypoints drawn (the renderer's default min_score) are the ones measured
# distinct people in vtest.avi's first 300 frames, counted by hand on a contact sheet (README)
VTEST_PEOPLE = 11
# his crossing: frames, his box centre in the first (pseudo-label px, 512 wide), the crop window (x0, y0, x1, y1)
PEDESTRIAN = {"start": 168, "end": 284, "box": (310.0, 173.0), "window": (208, 136, 736, 456)}

# tracker settings compared by --ablate: name -> TrackerConfig overrides (the shipped settings first)
ABLATIONS = {
    "shipped": {},
    "plain One Euro (the former smoother)": {"smoother": "one_euro", "min_cutoff": 1.0, "beta": 15.0, "d_cutoff": 1.0},
    "one OKS stage (no score split)": {"high_score": 0.0},
    "every birth waits min_hits": {"confirm_score": 1.01},
    "box-area OKS, any shared keypoint": {"oks_area": "box", "min_shared": 1},
    "every keypoint seen (no score floor)": {"min_keypoint_score": 0.0},
    "no duplicate check": {"duplicate_oks": 1.0},
    "any score starts a track": {"birth_score": 0.0},
    "tracks die after 1 s (was)": {"max_age_s": 1.0},
    "no re-id of lost tracks": {"reid_speed": 0.0},
    "no centre-distance stage": {"rescue_distance": 0.0},
    "no prediction": {"predict": False},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=90, help="frames of the made clips (still, small, walk, fast, turn)")
    p.add_argument("--vtest-frames", type=int, default=300, help="frames of vtest.avi (0: skip it and the pedestrian crop)")
    p.add_argument("--ablate", action="store_true", help="also run the tracker variants of ABLATIONS on the same detections")
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


def _background(n: int, start: int = 0):
    """Frames ``start`` .. ``start + n - 1`` of vtest.avi, RGB."""
    import av

    frames = []
    with av.open(str(_shared() / "videos/vtest.avi")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= start:
                frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    return frames


def _paste(frame: np.ndarray, rgba: np.ndarray, x: int, y: int) -> None:
    ph, pw = rgba.shape[:2]
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    region = frame[y:y + ph, x:x + pw].astype(np.float32)
    frame[y:y + ph, x:x + pw] = (alpha * rgba[..., :3] + (1 - alpha) * region).astype(np.uint8)


def _bounce(pos: float, span: float) -> float:
    pos %= 2 * span
    return pos if pos <= span else 2 * span - pos


def make_clip(kind: str, n: int, height: int = 300):
    """-> (frames (list of RGB arrays), person height in px, the person's box centre per frame).

    ``kind``: still, walk (WALK_SPEED body heights / s), fast (30 % of the height per frame), turn
    (one turn on the spot in 3 s)."""
    import cv2

    if kind not in ("still", "walk", "fast", "turn"):
        raise ValueError(f"unknown clip kind {kind!r}")
    rgba, h0 = _cutout()
    s = height / h0
    rgba = cv2.resize(rgba, (int(rgba.shape[1] * s), height), interpolation=cv2.INTER_AREA)
    ph, pw = rgba.shape[:2]
    out, centres = [], []
    for i, frame in enumerate(_background(n)):
        frame = frame.copy()
        fh, fw = frame.shape[:2]
        person = rgba
        if kind in ("fast", "walk"):
            step = 0.3 * height if kind == "fast" else WALK_SPEED * height / FPS
            x = int(round(_bounce(i * step, fw - pw)))
        elif kind == "turn":
            c = np.cos(2 * np.pi * i / (3 * FPS))
            w = max(int(round(pw * max(abs(c), SIDE_WIDTH))), 2)
            person = cv2.resize(rgba, (w, ph), interpolation=cv2.INTER_AREA)
            if c < 0:
                person = person[:, ::-1]
            x = (fw - w) // 2
        else:
            x = (fw - pw) // 2
        y = (fh - ph) // 2
        _paste(frame, person, x, y)
        out.append(frame)
        centres.append((x + person.shape[1] / 2, y + ph / 2))
    return out, height, centres


def pedestrian_track(start: int = PEDESTRIAN["start"], end: int = PEDESTRIAN["end"], box=PEDESTRIAN["box"]):
    """The pedestrian's box centre and height at every frame start..end of vtest.avi (768 × 576 px):
    from the pseudo-labelled frames (512 px wide), each labelled frame's box nearest the predicted
    place of the previous one, linearly interpolated in between."""
    d = json.loads((_shared() / "pseudo/person_keypoints_pseudo.json").read_text())
    frame_of = {i["id"]: (int(i["orig_file"].rsplit("_", 1)[1].split(".")[0]), 768.0 / i["width"])
                for i in d["images"] if i.get("source") == "vtest"}
    boxes: dict[int, list] = {}
    for a in d["annotations"]:
        if a["image_id"] in frame_of and not a["iscrowd"]:
            f, s = frame_of[a["image_id"]]
            x, y, w, h = a["bbox"]
            boxes.setdefault(f, []).append(((x + w / 2) * s, (y + h / 2) * s, h * s))
    s0 = 768.0 / 512.0
    known = {}
    last, vel, t_last = np.array(box) * s0, np.zeros(2), None
    for f in range(start, end + 1):
        if f not in boxes:
            continue
        pred = last if t_last is None else last + vel * (f - t_last)
        c = min(boxes[f], key=lambda b: np.hypot(b[0] - pred[0], b[1] - pred[1]))
        if np.hypot(c[0] - pred[0], c[1] - pred[1]) > 0.6 * c[2]:
            continue  # this labelled frame lost him (not labelled there): interpolate over it
        if t_last is not None:
            vel = (np.array(c[:2]) - last) / (f - t_last)
        known[f] = c
        last, t_last = np.array(c[:2]), f
    fs = sorted(known)
    if not fs or fs[0] != start or fs[-1] != end:
        raise RuntimeError(f"pedestrian track must be labelled at frames {start} and {end}, has {fs[:1]}..{fs[-1:]}")
    arr = np.array([known[f] for f in fs])
    frames = np.arange(start, end + 1)
    return np.stack([np.interp(frames, fs, arr[:, j]) for j in range(3)], 1)


def pedestrian_clip():
    """-> (frames: vtest.avi cropped to the window of the pedestrian's crossing, his height in px,
    his centre per frame in the crop). The window is fixed (a camera's view), so his motion in it
    is his own: a window that followed him would add its own steps to his trajectory."""
    track = pedestrian_track()
    x0, y0, x1, y1 = PEDESTRIAN["window"]
    frames = [np.ascontiguousarray(img[y0:y1, x0:x1]) for img in _background(len(track), PEDESTRIAN["start"])]
    centres = [(cx - x0, cy - y0) for cx, cy, _h in track]
    return frames, float(np.median(track[:, 2])), centres


def detect(frames) -> list[tuple[np.ndarray, np.ndarray]]:
    """The shipped model's raw people per frame: (keypoints (N, K, 3), scores (N,))."""
    from ..api import Estimator

    out = []
    with Estimator() as est:
        for f in frames:
            people = est(f)
            k = np.stack([p.keypoints for p in people]) if people else np.zeros((0, 17, 3), np.float32)
            out.append((k.astype(np.float32), np.array([p.score for p in people], np.float32)))
    return out


def _nearest(kps: np.ndarray, centre, ids=None, height: float | None = None, keep: int | None = None) -> int | None:
    """The clip's person among the detections: the one nearest ``centre``; with ``ids``, a drawn
    one (id >= 0) within half a body height wins over a nearer hidden one (a duplicate or
    tentative pose), and among those the one with id ``keep`` (the person's id so far: when the
    grouping splits a body in two, the second pose is not a switch). None when no detection lies
    within half a body height (the person was not detected)."""
    if not len(kps):
        return None
    d = []
    for p in kps:
        f = p[:, 2] > VISIBLE
        d.append(np.hypot(*(p[f, :2].mean(0) - centre)) if f.any() else np.inf)
    d = np.asarray(d)
    if ids is not None and height:
        ids = np.asarray(ids)
        drawn = (ids >= 0) & (d <= 0.5 * height)
        if keep is not None and (drawn & (ids == keep)).any():
            return int(np.flatnonzero(drawn & (ids == keep))[0])
        if drawn.any():
            return int(np.flatnonzero(drawn)[np.argmin(d[drawn])])
    i = int(np.argmin(d))
    if height and d[i] > 0.5 * height:
        return None
    return i if np.isfinite(d[i]) else None


def _jitter(seq: list, height: float) -> float:
    """Mean |x[t+1] - 2 x[t] + x[t-1]| over keypoints found in all three, % of body height."""
    vals = []
    for a, b, c in zip(seq, seq[1:], seq[2:]):
        if a is None or b is None or c is None:
            continue
        ok = (a[:, 2] > VISIBLE) & (b[:, 2] > VISIBLE) & (c[:, 2] > VISIBLE)
        if ok.any():
            vals.append(np.linalg.norm(c[ok, :2] - 2 * b[ok, :2] + a[ok, :2], axis=1).mean())
    return float(np.mean(vals) / height * 100) if vals else float("nan")


def _lag(raw: list, smooth: list, centres, height: float) -> float | None:
    """Mean offset of smoothed behind raw along the motion (the centres' direction), % of height."""
    c = np.asarray(centres, np.float64)
    vals = []
    for i in range(1, len(c) - 1):
        r, s = raw[i], smooth[i]
        v = c[i + 1] - c[i - 1]
        if r is None or s is None or np.hypot(*v) < 1e-6:
            continue
        ok = (r[:, 2] > VISIBLE) & (s[:, 2] > VISIBLE)
        if ok.any():
            vals.append(-float(((s[ok, :2] - r[ok, :2]).mean(0) @ (v / np.hypot(*v)))))
    return float(np.mean(vals) / height * 100) if vals else None


def _keypoint_lag(raw: list, smooth: list, fps: float, height: float, min_speed: float = 0.5) -> float | None:
    """Lag of the keypoints that move (limbs as well as the body), % of body height: for each
    keypoint moving faster than ``min_speed`` body heights / s (its raw motion over the two frames
    on either side, which do not share the frame's own noise), the smoothed output's offset
    behind the raw detection along that motion."""
    vals = []
    for i in range(2, len(raw) - 2):
        a, r, b, s = raw[i - 2], raw[i], raw[i + 2], smooth[i]
        if a is None or r is None or b is None or s is None:
            continue
        ok = (a[:, 2] > VISIBLE) & (r[:, 2] > VISIBLE) & (b[:, 2] > VISIBLE) & (s[:, 2] > VISIBLE)
        v = (b[:, :2] - a[:, :2]) / 4.0
        speed = np.hypot(v[:, 0], v[:, 1])
        ok &= speed * fps > min_speed * height
        if ok.any():
            u = v[ok] / speed[ok, None]
            vals.extend(-((s[ok, :2] - r[ok, :2]) * u).sum(1))
    return float(np.mean(vals) / height * 100) if vals else None


def evaluate(dets, fps: float, height: float | None, people: int | None, centres=None, moving: bool = False,
             config: dict | None = None) -> dict:
    """Run a Tracker with ``config`` (TrackerConfig overrides) over cached detections -> one row."""
    from ..track import Tracker, TrackerConfig

    tracker = Tracker(TrackerConfig.from_dict(config or {}))
    t0 = 1_000_000_000
    raw_seq, sm_seq, ids, main_ids, unconfirmed = [], [], set(), [], 0
    for i, (kps, scores) in enumerate(dets):
        tids, smoothed = tracker.update(kps, scores, t0 + int(round(i * 1e9 / fps)))
        ids.update(int(t) for t in tids if t >= 0)
        j = None if centres is None else _nearest(kps, np.asarray(centres[i]), tids, height,
                                                  main_ids[-1] if main_ids else None)
        raw_seq.append(None if j is None else kps[j])
        sm_seq.append(None if j is None else smoothed[j])
        if j is not None:
            if tids[j] < 0:
                unconfirmed += 1
            else:
                main_ids.append(int(tids[j]))
    switches = sum(1 for a, b in zip(main_ids, main_ids[1:]) if a != b)
    row = {"frames": len(dets), "fps": fps, "people": people,
           "ids": len(set(main_ids)) if centres is not None else len(ids),
           "id_switches": switches if centres is not None else None, "unconfirmed_frames": unconfirmed}
    if height:
        row["jitter_raw_pct"] = _jitter(raw_seq, height)
        row["jitter_smoothed_pct"] = _jitter(sm_seq, height)
        row["jitter_ratio"] = row["jitter_smoothed_pct"] / row["jitter_raw_pct"] if row["jitter_raw_pct"] else None
        row["lag_pct"] = _lag(raw_seq, sm_seq, centres, height) if moving else None
        row["keypoint_lag_pct"] = _keypoint_lag(raw_seq, sm_seq, fps, height)
    return row


def clips(n: int, vtest_frames: int):
    """name -> (frames, fps, height, people, centres, moving)."""
    out = {}
    for name, kind, height in (("still", "still", 300), ("small", "still", 100), ("walk", "walk", 300),
                               ("fast", "fast", 300), ("turn", "turn", 300)):
        frames, h, centres = make_clip(kind, n, height)
        out[name] = (frames, FPS, h, 1, centres, kind in ("walk", "fast"))
    if vtest_frames:
        frames, h, centres = pedestrian_clip()
        out["pedestrian"] = (frames, VTEST_FPS, h, 1, centres, True)
        out["vtest"] = (_background(vtest_frames), VTEST_FPS, None,
                        VTEST_PEOPLE if vtest_frames == 300 else None, None, False)
    return out


COLS = ("frames", "people", "ids", "id_switches", "unconfirmed_frames", "jitter_raw_pct", "jitter_smoothed_pct",
        "jitter_ratio", "lag_pct", "keypoint_lag_pct")


def _table(res: dict) -> str:
    lines = [f"{'clip':<11}" + "".join(f"{c:>20}" for c in COLS)]
    for kind, row in res.items():
        cells = []
        for c in COLS:
            v = row.get(c)
            cells.append(f"{'-' if v is None else (f'{v:.3f}' if isinstance(v, float) else v):>20}")
        lines.append(f"{kind:<11}" + "".join(cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    data = clips(args.frames, args.vtest_frames)
    cached = {name: (detect(c[0]),) + c[1:] for name, c in tqdm(data.items(), desc="detecting", unit="clip",
                                                                   disable=args.json)}
    variants = ABLATIONS if args.ablate else {"shipped": {}}
    res = {v: {name: evaluate(d, fps, h, people, centres, moving, cfg)
               for name, (d, fps, h, people, centres, moving) in cached.items()}
           for v, cfg in variants.items()}
    if args.json:
        print(json.dumps(res if args.ablate else res["shipped"], indent=2))
        return 0
    for v, r in res.items():
        if args.ablate:
            print(f"\n== {v}: {variants[v] or 'the shipped settings'}")
        print(_table(r))
    return 0
