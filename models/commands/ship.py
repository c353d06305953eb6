"""Store a trained checkpoint for shipping: float16 weights (half the size, cast back to float32
on load), with its metadata, recipe and training metrics, plus a held-out evaluation.

  posestream ship runs/movenet_paf/last.pt --eval runs/movenet_paf/heldout.json \\
      --out models/weights/movenet_paf.pt

``--eval`` takes the JSON that ``posestream eval --json`` prints; it is kept as
``meta["heldout"]`` (shown by ``posestream run`` and the README). The written file is checked:
it must load and give the same outputs as the source within float16 rounding.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import fail


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a trained posestream checkpoint (.pt)")
    p.add_argument("--out", required=True, help="where to write the shipped checkpoint")
    p.add_argument("--eval", default=None, metavar="JSON", help="held-out metrics from `posestream eval --json`")
    p.add_argument("--note", default=None, help="a line of provenance kept in the metadata")


def run(args: argparse.Namespace) -> int:
    import torch

    from posestream.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    try:
        model, meta = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        return fail("ship", str(e))
    update = {k: v for k, v in meta.items() if k not in ("recipe", "metrics")}
    if args.eval:
        path = Path(args.eval)
        if not path.is_file():
            return fail("ship", f"{path}: evaluation json not found")
        try:
            heldout = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            return fail("ship", f"{path}: not JSON ({e.msg} at line {e.lineno})")
        update["heldout"] = {k: v for k, v in heldout.items() if k != "results_json"}
    if args.note:
        update["note"] = args.note
    out = save_checkpoint(args.out, model, recipe=meta.get("recipe"), metrics=meta.get("metrics"), half=True,
                          meta_update=update)
    back, _ = load_checkpoint(out)
    size = meta.get("input_size", 256)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = model.eval()(x), back.eval()(x)
    err = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-6)) for a, b in zip(ref, got))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB, float16); outputs vs the source: "
          f"max relative error {err:.1e}")
    if err > 2e-2:
        return fail("ship", f"{out}: float16 storage changed the outputs by {err:.1e} (relative) — not shipped")
    return 0
