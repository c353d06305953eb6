"""Benchmark the PAF grouping: Numba kernels against the NumPy reference, in one run.

Scenes of 1, 5, 10, 30 and 50 synthetic people in a 368x368 input (OpenPose's default size) are
encoded as a stride-8 network would output them (46x46 maps), upsampled once to the decoder's
default working resolution (stride 2: 184x184, 17 heatmaps + 40 PAF channels), and grouped by both
implementations, alternating, on one pinned core. The upsampling (shared by both) and the first
call (JIT compile or cache load) are timed separately.

  posestream bench grouping            # table
  posestream bench grouping --json     # {"counts": {"30": {"numba_ms": .., "numpy_ms": .., "ratio": ..}}, ..}
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--counts", type=int, nargs="+", default=[1, 5, 10, 30, 50], help="people per scene")
    p.add_argument("--size", type=int, default=368, help="input side in pixels (default: %(default)s)")
    p.add_argument("--stride", type=int, default=8, help="network output stride (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per implementation and count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e3)


def bench(counts, size=368, stride=8, repeats=30, seed=0) -> dict:
    from posestream.models.fields import DecoderConfig, encode, group, upsample
    from posestream.models.fields.synthetic import random_scene

    cfg = DecoderConfig()
    factor = stride / cfg.working_stride
    rng = np.random.default_rng(seed)
    out: dict = {"size": size, "stride": stride, "working_stride": cfg.working_stride, "counts": {}}
    first = {}
    for n in counts:
        kp = random_scene(rng, n, (size, size), height_range=(40.0, 0.6 * size), allow_overlap=True,
                          hide_prob=0.1, border_fraction=0.1)
        t = encode(kp, (size, size), stride, sigma=8.0 / stride)
        heat, paf = upsample(t.heatmaps[:17], factor), upsample(t.pafs, factor)
        out["working_hw"] = list(heat.shape[1:])
        row = {"people": int(len(kp))}
        for impl in ("numba", "numpy"):
            if impl not in first:
                t0 = time.perf_counter()
                group(heat, paf, cfg.working_stride, cfg, impl=impl)
                first[impl] = (time.perf_counter() - t0) * 1e3
        ms = {"numba": [], "numpy": []}
        for _ in range(repeats):  # alternate so that machine noise hits both alike
            for impl in ("numba", "numpy"):
                t0 = time.perf_counter()
                poses = group(heat, paf, cfg.working_stride, cfg, impl=impl)
                ms[impl].append((time.perf_counter() - t0) * 1e3)
            row["detected"] = int(len(poses.scores))
        row["numba_ms"] = float(np.median(ms["numba"]))
        row["numpy_ms"] = float(np.median(ms["numpy"]))
        row["ratio"] = row["numpy_ms"] / row["numba_ms"]
        row["upsample_ms"] = _time(lambda: (upsample(t.heatmaps[:17], factor), upsample(t.pafs, factor)),
                                   max(3, repeats // 3))
        out["counts"][str(n)] = row
    out["first_call_ms"] = first
    return out


def run(args: argparse.Namespace) -> int:
    pinned = False
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        pinned = True
    res = bench(args.counts, args.size, args.stride, args.repeats, args.seed)
    res["pinned_one_core"] = pinned
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    h, w = res["working_hw"]
    print(f"grouping, {res['size']}x{res['size']} input, stride-{res['stride']} maps upsampled to {h}x{w} "
          f"(working stride {res['working_stride']:g}); {'one core' if pinned else 'all cores'}; "
          f"median of {args.repeats}")
    print(f"{'people':>6} {'found':>6} {'numba ms':>9} {'numpy ms':>9} {'ratio':>6} {'upsample ms':>12}")
    for n, r in res["counts"].items():
        print(f"{n:>6} {r['detected']:>6} {r['numba_ms']:9.2f} {r['numpy_ms']:9.2f} {r['ratio']:6.1f} "
              f"{r['upsample_ms']:12.2f}")
    f = res["first_call_ms"]
    print(f"first call (JIT compile or cache load, excluded above): numba {f['numba']:.0f} ms, numpy {f['numpy']:.0f} ms")
    return 0
