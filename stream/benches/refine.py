"""Benchmark the accurate mode's cost: refinement ms per frame against the number of people,
all crops in one batched call vs one crop at a time (what ``refine.batch`` chooses between: auto
is one at a time on a CPU, batched on CUDA), on each backend, beside the bottom-up
model's own time on the same frame (in one run, interleaved, so machine noise hits all alike).

The frame is a real one (``vtest.avi``, 768×576) with N people placed over it (keypoint sets of
100–300 px tall people at random places: the refinement's cost does not depend on who they are;
the crops are real pixels). Times are medians of ``--repeats`` calls of the refiner (crops,
normalisation, network, decoding, mapping back, fusion).

  posestream bench refine                       # table (ONNX Runtime and PyTorch)
  posestream bench refine --people 1 5 20 --json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--people", type=int, nargs="+", default=[1, 2, 5, 10, 20], help="people per frame")
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"], choices=("onnxruntime", "torch"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=7, help="timed calls per cell (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _frame() -> np.ndarray:
    from .tracking import _background, _shared

    if (_shared() / "videos" / "vtest.avi").is_file():
        return _background(31)[30]
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (576, 768, 3), dtype=np.uint8)


def _people(rng, n: int, h: int, w: int) -> np.ndarray:
    from posestream.models.fields.synthetic import random_scene

    kp = random_scene(rng, n, (h, w), height_range=(100.0, 300.0), allow_overlap=True, hide_prob=0.0,
                      border_fraction=0.0)
    out = np.zeros((n, 17, 3), np.float32)
    out[: len(kp), :, :2] = kp[:n, :, :2]
    out[: len(kp), :, 2] = 0.6
    return out


def bench(people, backends, device="cpu", repeats=7, seed=0) -> dict:
    from dataclasses import replace

    from posestream.models.fields import Poses
    from posestream.models.predictor import Predictor
    from posestream.models.refine import RefineConfig, Refiner

    from ..infer import InferConfig, load_network
    from ..refine import resolve_refine_model

    image = _frame()
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    scenes = {n: _people(rng, n, h, w) for n in people}
    out: dict = {"frame": [w, h], "device": device, "backends": {}}
    for backend in backends:
        cfg = InferConfig(backend=backend, device=device)
        run, meta, desc = load_network(cfg)
        detector = Predictor(run, meta)
        trun, tmeta, tdesc = load_network(replace(cfg, model=resolve_refine_model("default")), kind="topdown")
        batched = Refiner(trun, tmeta, RefineConfig(nms_oks=1.0, batch=64))
        single = Refiner(trun, tmeta, RefineConfig(nms_oks=1.0, batch=1))
        for r in (batched, single):  # warm up (first calls allocate, JIT, load kernels)
            r(image, Poses(scenes[max(people)], np.full(max(people), 0.5, np.float32)))
        detector(image)
        rows, det_ms = {}, []
        for n in people:
            poses = Poses(scenes[n], np.full(n, 0.5, np.float32))
            ms = {"batched": [], "single": []}
            for _ in range(repeats):
                for name, r in (("batched", batched), ("single", single)):
                    t0 = time.perf_counter()
                    r(image, poses)
                    ms[name].append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                detector(image)
                det_ms.append((time.perf_counter() - t0) * 1e3)
            b, s = float(np.median(ms["batched"])), float(np.median(ms["single"]))
            rows[str(n)] = {"batched_ms": b, "single_ms": s, "single_over_batched": s / b, "per_person_ms": b / n}
        d = float(np.median(det_ms))
        for row in rows.values():
            row["over_bottom_up"] = row["batched_ms"] / d
        out["backends"][backend] = {"model": desc, "refiner": tdesc, "bottom_up_ms": d, "people": rows}
    return out


def run(args: argparse.Namespace) -> int:
    from .soak import cpu_flags

    res = bench(args.people, args.backends, args.device, args.repeats, args.seed)
    res["cpu_flags"] = cpu_flags()
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"cpu flags: {res['cpu_flags']}")
    print(f"frame {res['frame'][0]}x{res['frame'][1]}; refinement ms per frame (median of {args.repeats})")
    for backend, r in res["backends"].items():
        print(f"{backend}: bottom-up model + decoding {r['bottom_up_ms']:.1f} ms per frame ({r['model']})")
        print(f"  {'people':>6} {'batched ms':>11} {'one by one':>11} {'ratio':>6} {'ms/person':>10} {'x bottom-up':>12}")
        for n, row in r["people"].items():
            print(f"  {n:>6} {row['batched_ms']:11.1f} {row['single_ms']:11.1f} {row['single_over_batched']:6.2f} "
                  f"{row['per_person_ms']:10.1f} {row['over_bottom_up']:12.2f}")
    return 0
