"""A strip of annotated frames from a recorded demo video, for the README.

  python scripts/demo_strip.py out/demo.mp4 docs/demo_strip.png [--frames 4] [--width 1600]
      [--crop X0,Y0,X1,Y1]   (a region of every frame, as fractions of its width and height)
"""
from __future__ import annotations

import argparse
import sys

import av
import cv2
import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video")
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=4, help="frames in the strip, evenly spaced")
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--width", type=int, default=1600, help="width of the strip in pixels")
    p.add_argument("--crop", default=None, help="X0,Y0,X1,Y1 as fractions of the frame (default: whole frame)")
    args = p.parse_args(argv)
    try:
        with av.open(args.video) as c:
            frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    except (OSError, av.error.FFmpegError) as e:
        print(f"demo_strip: error: {args.video}: {e}", file=sys.stderr)
        return 2
    if not frames:
        print(f"demo_strip: error: {args.video}: no frames", file=sys.stderr)
        return 2
    n = args.frames
    picks = [frames[int(i)] for i in np.linspace(len(frames) * 0.1, len(frames) * 0.9, n)]
    if args.crop:
        try:
            x0, y0, x1, y1 = (float(v) for v in args.crop.split(","))
        except ValueError:
            print(f"demo_strip: error: --crop {args.crop!r}: expected X0,Y0,X1,Y1 fractions", file=sys.stderr)
            return 2
        fh, fw = picks[0].shape[:2]
        picks = [f[int(y0 * fh):int(y1 * fh), int(x0 * fw):int(x1 * fw)] for f in picks]
    cols = -(-n // args.rows)
    h, w = picks[0].shape[:2]
    while len(picks) < cols * args.rows:
        picks.append(np.zeros_like(picks[0]))
    grid = np.vstack([np.hstack(picks[r * cols:(r + 1) * cols]) for r in range(args.rows)])
    scale = args.width / grid.shape[1]
    grid = cv2.resize(grid, (args.width, int(grid.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    cv2.imwrite(args.out, grid)
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]}, {n} frames of {len(frames)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
