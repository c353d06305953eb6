"""Ablation: train several configs with the same data and budget, print their evaluations side by side.

Every config is trained from scratch into its own folder under ``--out`` with the same seed,
step budget and data (the first config's ``data`` section is used for all), then evaluated on the
validation set with the same decoder. Use it to check a seed claim (e.g. OKHM on/off).

  posestream ablate configs/train/lite.yaml configs/train/lite_okhm.yaml --steps 300 --out runs/ablate
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", help="two or more training configs")
    p.add_argument("--steps", type=int, default=None, help="same step budget for all (default: the first config's)")
    p.add_argument("--out", default="runs/ablate", help="output folder (default: %(default)s)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides applied to every config")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .trainer import Trainer

    try:
        cfgs = [load_config(c, args.set) for c in args.configs]
    except ConfigError as e:
        print(f"posestream ablate: error: {e}", file=sys.stderr)
        return 2
    steps = args.steps or cfgs[0].train.max_steps
    rows = []
    for path, cfg in zip(args.configs, cfgs):
        cfg.data = cfgs[0].data
        cfg.train.max_steps = steps
        cfg.train.eval_every = steps
        cfg.train.seed = cfgs[0].train.seed
        cfg.train.out_dir = str(Path(args.out) / Path(path).stem)
        t0 = time.time()
        trainer = Trainer(cfg)
        try:
            stats = trainer.fit() or {}
        finally:
            trainer.close()
        rows.append({"config": path, "steps": steps, "minutes": (time.time() - t0) / 60,
                     **{k: stats.get(k) for k in ("AP", "AP50", "AP75", "APm", "APl", "AR")},
                     "per_joint_recall": stats.get("per_joint_recall", {})})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"same data, seed {cfgs[0].train.seed}, {steps} steps each")
    print(f"{'config':<40} {'AP':>6} {'AP50':>6} {'AP75':>6} {'APm':>6} {'APl':>6} {'AR':>6} {'wrists':>7} {'ankles':>7} {'min':>5}")
    for r in rows:
        pj = r["per_joint_recall"]
        wr = (pj.get("left_wrist", 0) + pj.get("right_wrist", 0)) / 2 if pj else float("nan")
        an = (pj.get("left_ankle", 0) + pj.get("right_ankle", 0)) / 2 if pj else float("nan")
        vals = " ".join(f"{(r[k] if r[k] is not None else float('nan')):6.3f}" for k in ("AP", "AP50", "AP75", "APm", "APl", "AR"))
        print(f"{r['config']:<40} {vals} {wr:7.3f} {an:7.3f} {r['minutes']:5.1f}")
    return 0
