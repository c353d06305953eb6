"""The README's smoothing picture: one wrist's raw and smoothed trajectory over time.

Runs the shipped model on two of ``posestream bench tracking``'s clips (the vtest pedestrian crop,
real walking at 10 fps, and the still 100-px cut-out at 30 fps), tracks them with the shipped
tracker settings, and plots the right wrist's x and y (px, raw detections vs smoothed output)
against time. Writes ``docs/tracking_wrist.png``.

  .venv/bin/python scripts/plot_tracking.py [--out docs/tracking_wrist.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def series(name: str):
    from posestream.models.skeleton import COCO_17
    from posestream.stream.benches import tracking as T
    from posestream.stream.track import Tracker

    if name == "pedestrian":
        frames, h, centres = T.pedestrian_clip()
        fps = T.VTEST_FPS
    else:
        frames, h, centres = T.make_clip("still", 90, 100)
        fps = T.FPS
    wrist = COCO_17.keypoints.index("right_wrist")
    tracker = Tracker()
    t, raw, smooth, prev = [], [], [], None
    for i, (kps, scores) in enumerate(T.detect(frames)):
        ids, out = tracker.update(kps, scores, 10**9 + int(round(i * 1e9 / fps)))
        j = T._nearest(kps, np.asarray(centres[i]), ids, h, prev)
        if j is None or kps[j, wrist, 2] <= T.VISIBLE:
            continue
        prev = int(ids[j])
        t.append(i / fps)
        raw.append(kps[j, wrist, :2])
        smooth.append(out[j, wrist, :2])
    return np.array(t), np.array(raw), np.array(smooth), h, fps


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "tracking_wrist.png"))
    args = ap.parse_args()
    fig, axes = plt.subplots(2, 2, figsize=(11, 6), sharex="col")
    for col, (name, title) in enumerate((("pedestrian", "vtest pedestrian (walking, ~99 px tall, 10 fps)"),
                                         ("small", "cut-out standing still (100 px tall, 30 fps)"))):
        t, raw, smooth, h, fps = series(name)
        for row, (k, label) in enumerate(((0, "x"), (1, "y"))):
            ax = axes[row, col]
            ax.plot(t, raw[:, k], ".-", color="0.6", lw=0.8, ms=3, label="raw detections")
            ax.plot(t, smooth[:, k], "-", color="tab:red", lw=1.6, label="smoothed (shipped tracker)")
            ax.set_ylabel(f"right wrist {label} (px)")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(title, fontsize=10)
            if row == 1:
                ax.set_xlabel("time (s)")
        axes[0, col].legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
