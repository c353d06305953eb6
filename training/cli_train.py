"""Train a model from a YAML config (``configs/train/*.yaml``), with optional KEY=VALUE overrides.

Resumes automatically from ``train.out_dir/state.pt`` when it exists (exact: model, optimiser,
scheduler, AMP scaler, RNG states, data position). Multi-GPU / multi-node: launch with
``torchrun --nproc_per_node N -m posestream train ...`` (DistributedDataParallel; gloo on CPU).
TensorBoard: ``tensorboard --logdir OUT/tb``.

  posestream train --config configs/train/lite.yaml
  posestream train --config configs/train/lite.yaml optim.lr=3e-4 train.max_steps=200 train.out_dir=runs/x
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training config YAML")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=3e-4")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final evaluation as JSON")


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"posestream train: error: {e}", file=sys.stderr)
        return 2
    from .trainer import Trainer

    try:
        trainer = Trainer(cfg, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if e.args else str(e)
        print(f"posestream train: error: {msg}", file=sys.stderr)
        return 2
    try:
        stats = trainer.fit()
    finally:
        trainer.close()
    if trainer.main:
        if args.json:
            print(json.dumps(stats or {}, indent=2))
        elif stats:
            print("  ".join(f"{k} {stats[k]:.3f}" for k in ("AP", "AP50", "AP75", "APm", "APl", "AR")))
        print(f"checkpoints: {cfg.train.out_dir}/best.pt, {cfg.train.out_dir}/last.pt; curves: "
              f"{cfg.train.out_dir}/curves.png")
    return 0
