"""Contact sheets of vtest.avi's first 300 frames (every 10th, 1 s apart at 10 fps) with the
shipped tracker's boxes and ids drawn: how the README's count of people was made (and a way to
see what the tracker does on a crowd). Writes ``out/vtest_sheet_N.png``, four frames per sheet.

  .venv/bin/python scripts/vtest_sheet.py [--frames 300] [--out out]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import cv2

    from posestream.stream.benches import tracking as T
    from posestream.stream.track import Tracker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--out", default="out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = T._background(args.frames)
    tracker = Tracker()
    tiles = []
    for i, (kps, scores) in enumerate(T.detect(frames)):
        ids, _ = tracker.update(kps, scores, 10**9 + int(round(i * 1e9 / T.VTEST_FPS)))
        if i % 10:
            continue
        img = cv2.cvtColor(frames[i], cv2.COLOR_RGB2BGR)
        for p, tid in zip(kps, ids):
            seen = p[:, 2] > T.VISIBLE
            if tid < 0 or not seen.any():
                continue
            (x0, y0), (x1, y1) = p[seen, :2].min(0).astype(int), p[seen, :2].max(0).astype(int)
            cv2.rectangle(img, (x0, y0), (x1, y1), (0, 255, 255), 1)
            cv2.putText(img, str(int(tid)), (x0, y0 - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2)
        cv2.putText(img, f"frame {i}", (5, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 0, 0), 2)
        tiles.append(img)
    for n in range(0, len(tiles), 4):
        t = tiles[n:n + 4] + [np.zeros_like(tiles[0])] * (4 - len(tiles[n:n + 4]))
        path = out / f"vtest_sheet_{n // 4}.png"
        cv2.imwrite(str(path), np.vstack([np.hstack(t[:2]), np.hstack(t[2:])]))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
