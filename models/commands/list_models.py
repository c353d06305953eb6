"""List the registered models: parameters, GFLOPs at the standard input, stride, stages.

GFLOPs are 2 x multiply-adds (PyTorch's flop counter, batch 1) at each model's standard square
input (368 for the CMU family, 256 for hourglasses and lite).

  posestream models
  posestream models --json
"""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON object keyed by model name")


def run(args: argparse.Namespace) -> int:
    from posestream.models.registry import build_model, list_models, model_entrypoint

    from . import model_stats

    import torch

    rows = {}
    for name in list_models():
        with torch.device("meta"):  # shapes only: counting needs no weights
            model = build_model(name)
        doc = (model_entrypoint(name).__doc__ or "").strip()
        rows[name] = {**model_stats(model), "skeleton": model.skeleton.name, "pafs": model.with_pafs,
                      "kind": model_entrypoint(name).kind,
                      "doc": doc.splitlines()[0] if doc else ""}
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<28} {'params M':>9} {'GFLOPs':>8} {'input':>6} {'stride':>6} {'stages':>6}  description")
    for name, r in rows.items():
        print(f"{name:<28} {r['params_m']:9.2f} {r['gflops']:8.1f} {r['input_size']:>6} {r['stride']:>6} "
              f"{r['stages']:>6}  {r['doc']}")
    return 0
