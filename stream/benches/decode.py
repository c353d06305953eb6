"""Decoding on the host against decoding on the runtime, side by side in one run.

Two exports of the same model: the network's outputs only (the host upsamples 57 maps bicubically
and scans them for peaks) and the graph-decoding export (``models/decode_head.py``: the runtime
upsamples the heatmaps and finds the 3x3 maxima; the host groups them, reading the PAFs at the
network's stride). On vtest.avi frames, alternating in blocks, it times per frame the forward call,
the host's decoding, the whole, and the process's CPU time (all threads: the runtime's included);
with ``--ap`` also the held-out AP of both (coco-mini val2017, pycocotools) and the decoder's oracle
AP both ways (encoded labels of coco-mini train2017 at 320, stride 4).

  posestream bench decode [--model default] [--size 320] [--frames 60] [--candidate onnxruntime-fp32] [--ap] [--json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="checkpoint (.pt) or registered model (default: the shipped one)")
    p.add_argument("--size", type=int, default=320, help="network input's long side (default: %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="vtest frames timed per path (default: %(default)s)")
    p.add_argument("--candidate", default="onnxruntime-fp32",
                   help="backend-precision that runs both exports (default: %(default)s; see bench backends)")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's)")
    p.add_argument("--ap", action="store_true", help="also held-out AP and oracle AP of both paths")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _load(spec: str):
    from posestream.models.checkpoint import load_checkpoint
    from posestream.models.registry import build_model, list_models
    from posestream.models.shipped import DEFAULT_MODEL, shipped_checkpoint

    if spec in list_models() and not Path(spec).exists():
        import torch

        torch.manual_seed(0)
        model = build_model(spec).eval()
        return model, model.meta()
    return load_checkpoint(shipped_checkpoint() if spec == DEFAULT_MODEL else spec)


def bench(model_spec: str = "default", size: int = 320, frames: int = 60, candidate: str = "onnxruntime-fp32",
          threads: int | None = None, ap: bool = False, block: int = 5) -> dict:
    from posestream.models.export import export_onnx, read_onnx_meta
    from posestream.models.fields import DecoderConfig
    from posestream.models.predictor import Predictor
    from posestream.models.preprocess import letterbox

    from .. import backends as B
    from .tracking import _background

    model, meta = _load(model_spec)
    tmp = Path(tempfile.mkdtemp(prefix="posestream-bench-decode-"))
    preds = {}
    for name, graph in (("host", False), ("graph", True)):
        path = tmp / f"{name}.onnx"
        export_onnx(model, path, meta=meta, check=False, graph_decode=graph)
        m = read_onnx_meta(path)
        preds[name] = Predictor(B.make_runner(candidate, path, threads), m, DecoderConfig(), size)
    if not preds["graph"].graph_decode:
        raise ValueError(f"{model_spec}: this model cannot decode in the graph (no PAFs, or a stride that is not "
                         f"a multiple of the working stride)")
    imgs = _background(frames)
    p0 = preds["host"]
    xs = []
    for img in imgs:
        lb, _ = letterbox(img, size, multiple=int(meta.get("input_multiple", 32)))
        xs.append(np.ascontiguousarray(((lb.astype(np.float32) - p0.mean) * p0.inv_std).transpose(2, 0, 1)[None]))
    for p in preds.values():  # warm-up: compile, allocate, load the Numba cache
        for img in imgs[:3]:
            p(img)
    t = {n: {"forward_ms": [], "decode_ms": [], "total_ms": [], "cpu_ms": []} for n in preds}
    people = {n: 0 for n in preds}
    for start in range(0, len(imgs), block):  # alternate blocks: machine noise hits both alike
        for name, p in preds.items():
            for i in range(start, min(start + block, len(imgs))):
                c0, w0 = time.process_time(), time.perf_counter()
                out = p.run(xs[i])
                w1 = time.perf_counter()
                poses = _decode(p, out, xs[i])
                w2, c1 = time.perf_counter(), time.process_time()
                people[name] += len(poses.scores)
                t[name]["forward_ms"].append((w1 - w0) * 1e3)
                t[name]["decode_ms"].append((w2 - w1) * 1e3)
                t[name]["total_ms"].append((w2 - w0) * 1e3)
                t[name]["cpu_ms"].append((c1 - c0) * 1e3)
    res = {"cpu": B.cpu_name(), "flags": B.key_flags(), "candidate": candidate, "size": size, "frames": len(imgs),
           "paths": {}}
    for name in preds:
        res["paths"][name] = {k: float(np.median(v)) for k, v in t[name].items()}
        res["paths"][name]["people"] = people[name]
    h, g = res["paths"]["host"], res["paths"]["graph"]
    res["saved"] = {k: h[k] - g[k] for k in ("forward_ms", "decode_ms", "total_ms", "cpu_ms")}
    if ap:
        from posestream.training.evaluation.evaluate import evaluate_coco
        from posestream.training.oracle import DEFAULT_ANN, oracle_eval

        from .tracking import _shared

        d = _shared() / "coco-mini"
        for name, p in preds.items():
            res["paths"][name]["ap"] = float(evaluate_coco(p, d / "annotations/person_keypoints_val2017.json",
                                                           d / "val2017", progress=False)["AP"])
        ann = str(_shared() / DEFAULT_ANN.split("shared/data/", 1)[1])
        res["paths"]["host"]["oracle_ap"] = float(oracle_eval(ann, 320, 4, impl="numba")["AP"])
        res["paths"]["graph"]["oracle_ap"] = float(oracle_eval(ann, 320, 4, impl="graph")["AP"])
    return res


def _decode(p, out, x):
    """The host's part of ``Predictor.__call__`` on outputs already computed (letterbox excluded)."""
    from posestream.models.fields import decode, decode_graph

    if p.graph_decode:
        return decode_graph(out[2][0], out[3][0], out[4][0], out[1][0], int(p.meta["stride"]), p.decoder, p.skeleton)
    heat, paf = p.forward(x, out)
    return decode(heat[0], paf[0], int(p.meta["stride"]), p.decoder, p.skeleton)


def run(args: argparse.Namespace) -> int:
    res = bench(args.model, args.size, args.frames, args.candidate, args.threads, args.ap)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"CPU: {res['cpu']}; flags: {' '.join(res['flags']) or '-'}; {res['candidate']} at {res['size']} px, "
          f"{res['frames']} vtest frames, medians")
    cols = ("forward_ms", "decode_ms", "total_ms", "cpu_ms")
    print(f"{'path':<7}" + "".join(f"{c:>12}" for c in cols) + f"{'people':>8}"
          + (f"{'AP':>8}{'oracle':>8}" if args.ap else ""))
    for name, r in res["paths"].items():
        print(f"{name:<7}" + "".join(f"{r[c]:12.2f}" for c in cols) + f"{r['people']:>8}"
              + (f"{r['ap']:8.3f}{r['oracle_ap']:8.3f}" if args.ap else ""))
    print(f"{'saved':<7}" + "".join(f"{res['saved'][c]:12.2f}" for c in cols))
    return 0
