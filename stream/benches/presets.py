"""The ``--preset`` choices side by side, measured the same way in one run: held-out AP
(coco-mini val2017, pycocotools, the whole in-process pipeline of each preset: its input size,
the backend ``auto`` picks for that size on this host, refinement for ``accurate``) and the median
ms per frame on vtest.avi (768 × 576, 3–6 people), with the CPU flags.

  posestream bench presets [--frames 40] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=40, help="vtest frames timed per preset")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _ap(est) -> float:
    import cv2
    from pycocotools.coco import COCO

    from posestream.training.evaluation.coco import coco_keypoint_eval, poses_to_coco_results

    from .tracking import _shared

    d = _shared() / "coco-mini"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(d / "annotations/person_keypoints_val2017.json"))
    ids = sorted(coco.getImgIds())
    results = []
    for i in ids:
        img = cv2.cvtColor(cv2.imread(str(d / "val2017" / coco.loadImgs(i)[0]["file_name"])), cv2.COLOR_BGR2RGB)
        people = est(img)
        if people:
            results += poses_to_coco_results(i, np.stack([p.keypoints for p in people]), [p.score for p in people])
    return float(coco_keypoint_eval(coco, results, ids)["AP"])


def run(args: argparse.Namespace) -> int:
    from posestream.stream.backends import cpu_name, key_flags

    from ..api import Estimator
    from ..cli_run import PRESETS, preset_settings
    from .tracking import _background

    frames = _background(args.frames)
    out = {"cpu": cpu_name(), "flags": key_flags(), "presets": {}}
    for name in PRESETS:
        p = preset_settings(name)
        size, precision = p["infer"]["input_size"], p["infer"].get("precision")
        refine = bool((p.get("refine") or {}).get("enabled"))
        with Estimator(input_size=size, refine=refine, precision=precision) as est:
            run = getattr(est._stage.predictor, "run", None)
            if hasattr(run, "wait"):  # a cold cache: measure what the preset settles on, not the stand-in
                run.wait()
            for f in frames[:3]:
                est(f)
            ms = []
            for f in frames:
                t0 = time.perf_counter()
                est(f)
                ms.append((time.perf_counter() - t0) * 1e3)
            ap = _ap(est)
            desc = est._stage.description
        out["presets"][name] = {"input_size": size, "precision": precision or "auto", "refine": refine, "ap": ap, "ms_per_frame": float(np.median(ms)),
                                "backend": desc.split(", ", 1)[-1].split(" [")[0],
                                "serving": getattr(run, "name", None) or desc.split(", ", 1)[-1].split(" [")[0]}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"CPU: {out['cpu']}; flags: {' '.join(out['flags'])}")
    print(f"{'preset':<10} {'input':>5} {'precision':>9} {'refine':>7} {'AP':>7} {'ms/frame':>9}  backend")
    for name, r in out["presets"].items():
        print(f"{name:<10} {r['input_size']:>5} {r['precision']:>9} {str(r['refine']):>7} {r['ap']:7.3f} "
              f"{r['ms_per_frame']:9.1f}  {r['backend']}")
    return 0
