"""Benchmark many cameras on a worker pool: aggregate fps and capture-to-output latency for every
combination of sources, inference workers and batch size — each cell beside the single-source,
single-worker, one-frame-per-call figure of the same run (these machines are shared and noisy:
ratios, not absolute times alone).

Every cell is one ``posestream run`` pipeline (real processes, ZeroMQ, the shipped model by
default) on ``S`` copies of the same clip (the first ``--frames`` frames of ``--source``, re-encoded
once as MPEG-4 Part 2, cheap to decode), lossless (every frame through: the aggregate fps is the
throughput), no files written. ``latency_ms_p95``: capture to output, 95th percentile.

  posestream bench scale
  posestream bench scale --sources 1,4,8 --workers 1,2 --batch 1,4 --json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time


def _ints(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="../shared/data/videos/vtest.avi", help="the clip every source plays")
    p.add_argument("--model", default="default", help="model (default: the shipped movenet_paf)")
    p.add_argument("--input-size", type=int, default=320, help="network input (default: %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="frames per source (default: %(default)s)")
    p.add_argument("--sources", type=_ints, default=[1, 4, 8], help="source counts (default: 1,4,8)")
    p.add_argument("--workers", type=_ints, default=[1, 2], help="inference worker counts (default: 1,2)")
    p.add_argument("--batch", type=_ints, default=[1, 4], help="batch sizes (default: 1,4)")
    p.add_argument("--batch-timeout-ms", type=float, default=10.0, help="the pipeline's batch_timeout_ms")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime threads per worker (default: the runtime's own choice)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def cell(clip: str, sources: int, workers: int, batch: int, args) -> dict:
    """One pipeline run: S copies of ``clip`` through W workers at batch B."""
    from posestream.stream.pipeline import PipelineConfig, Supervisor, validate_config

    infer = {"model": args.model, "input_size": args.input_size}
    if args.threads:
        infer["threads"] = args.threads
    cfg = PipelineConfig(sources=[clip] * sources, policy="lossless", infer=infer, status_interval=0,
                         workers=workers, batch=batch, batch_timeout_ms=args.batch_timeout_ms)
    validate_config(cfg)
    t0 = time.perf_counter()
    s = Supervisor(cfg).run()
    wall = time.perf_counter() - t0
    if s["errors"] or s["failed_stage"]:
        raise RuntimeError(f"sources {sources} workers {workers} batch {batch}: the pipeline failed: "
                           f"{'; '.join(s['errors']) or s['failed_stage']}")
    lat = s["capture_to_output_ms"]
    return {"sources": sources, "workers": workers, "batch": batch, "frames": s["frames_out"],
            "fps": s["fps_out"], "latency_ms_p50": lat["p50"], "latency_ms_p95": lat["p95"],
            "mean_batch": s["batch"]["mean"] if batch > 1 else 1.0, "wall_s": round(wall, 2)}


def run(args: argparse.Namespace) -> int:
    from posestream.stream.backends import cpu_name, key_flags

    from .pipeline import make_clip

    if not os.path.isfile(args.source):
        print(f"posestream bench scale: error: {args.source}: no such file")
        return 2
    res: dict = {"source": args.source, "model": args.model, "input_size": args.input_size,
                 "frames_per_source": args.frames, "cpu": cpu_name(), "flags": key_flags(),
                 "cores": os.cpu_count(), "cells": []}
    combos = list(itertools.product(args.sources, args.workers, args.batch))
    if (1, 1, 1) not in combos:
        combos.insert(0, (1, 1, 1))   # the reference every cell is compared with
    with tempfile.TemporaryDirectory() as d:
        clip = make_clip(args.source, args.frames, os.path.join(d, "clip.mkv"))
        for i, (s, w, b) in enumerate(combos):
            if not args.json:
                print(f"[{i + 1}/{len(combos)}] sources {s}, workers {w}, batch {b} ...", flush=True)
            res["cells"].append(cell(clip, s, w, b, args))
    ref = next(c for c in res["cells"] if (c["sources"], c["workers"], c["batch"]) == (1, 1, 1))
    res["reference_fps"] = ref["fps"]
    for c in res["cells"]:
        c["fps_vs_reference"] = round(c["fps"] / ref["fps"], 3) if ref["fps"] else None
        same = next((x for x in res["cells"] if (x["sources"], x["workers"], x["batch"]) == (c["sources"], 1, 1)),
                    None)
        c["fps_vs_same_sources_1x1"] = round(c["fps"] / same["fps"], 3) if same and same["fps"] else None
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{args.model} at {args.input_size} px, {args.frames} frames per source of {args.source}; "
          f"CPU {res['cpu']}, {res['cores']} cores; {' '.join(res['flags'])}")
    print(f"{'sources':>7} {'workers':>7} {'batch':>5} {'fps':>7} {'x 1/1/1':>8} {'x batch1':>8} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'mean batch':>10}")
    for c in res["cells"]:
        same = c["fps_vs_same_sources_1x1"]
        print(f"{c['sources']:7d} {c['workers']:7d} {c['batch']:5d} {c['fps']:7.1f} {c['fps_vs_reference']:8.2f} "
              f"{f'{same:8.2f}' if same is not None else '       -'} {c['latency_ms_p50']:7.0f} {c['latency_ms_p95']:7.0f} "
              f"{c['mean_batch']:10.2f}")
    print("x 1/1/1: the cell's aggregate fps / the 1 source, 1 worker, batch 1 fps of this run; "
          "x batch1: / the same sources with 1 worker and batch 1")
    return 0
