"""Benchmark the training data loader alone: images/s delivered, side by side with the decode limit.

Loads the training mix of a config (default ``configs/train/lite.yaml``), with its augmentation and
target rendering at the model's strides, through a DataLoader with N worker processes. Beside it,
the same images only read and decoded (no augmentation, no targets) in one process: the floor cost
of touching the data.

  posestream bench loader
  posestream bench loader --config configs/train/cmu_pose_vgg19.yaml --workers 8 --json
"""
from __future__ import annotations

import argparse
import json
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/train/lite.yaml")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from posestream.models.registry import build_model

    from .config import ConfigError, load_config
    from .data.dataset import loader_throughput
    from .trainer import build_train_dataset

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"posestream bench loader: error: {e}", file=sys.stderr)
        return 2
    import torch

    with torch.device("meta"):
        model = build_model(cfg.model.name, **cfg.model.kwargs)
    meta = {**model.meta(), "input_size": cfg.data.input_size}
    ds = build_train_dataset(cfg, meta)
    rate = loader_throughput(ds, args.batch_size, args.workers, args.batches)
    src = ds.source
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(src), size=args.batch_size * 4)
    t0 = time.perf_counter()
    for i in idx:
        src[int(i)]
    decode = len(idx) / (time.perf_counter() - t0)
    res = {"config": args.config, "workers": args.workers, "batch_size": args.batch_size, "images": len(ds),
           "input_size": cfg.data.input_size, "strides": sorted(set(meta["stage_strides"])),
           "loader_images_per_s": rate, "read_decode_images_per_s_one_process": decode}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{len(ds)} training images, input {cfg.data.input_size}, targets at strides {res['strides']}")
        print(f"loader ({args.workers} workers, augment + targets): {rate:7.1f} images/s")
        print(f"read + decode only (1 process):           {decode:7.1f} images/s")
    return 0
