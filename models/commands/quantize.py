"""Calibrate INT8 ranges for a model on training images (the backbone in INT8, the rest in fp32).

MinMax ranges of the backbone's tensors over the images, letterboxed as the pipeline feeds them,
are written beside the model's cached ONNX export (or to --out), where ``--backend auto`` and
``--precision int8`` find them; the INT8 graph is then built and checked against fp32 on the first
image. The INT8 candidates use 8-bit weights on CPUs with VNNI (avx512_vnni, avx_vnni, amx_int8),
7-bit ones on other x86 CPUs with AVX2 (8-bit products would saturate there); the
check here applies the graph's quantization exactly as written (ONNX Runtime with its
optimizations off), so it holds on any CPU. Calibrate on training images, never on the images
you evaluate on. The shipped model's ranges are models/weights/movenet_paf.int8-ranges.json.

  posestream quantize --calib ../shared/data/pseudo/images --images 64
  posestream quantize --model runs/x/best.pt --calib my_train_images/ [--ap]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path

from . import fail

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="checkpoint, ONNX export or 'default' (the shipped model)")
    p.add_argument("--calib", required=True, metavar="DIR", help="a folder of training images")
    p.add_argument("--images", type=int, default=64, help="how many (sorted by name; default: %(default)s)")
    p.add_argument("--size", type=int, default=320, help="input size the images are letterboxed to")
    p.add_argument("--out", default=None,
                   help="ranges file (default: beside the model's cached ONNX export, the one place `run` looks)")
    p.add_argument("--ap", action="store_true", help="also the held-out AP of fp32 and INT8 (coco-mini val2017)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def simulated_session(path):
    """ONNX Runtime with every graph optimization off: Q/DQ run as written, in float (the INT8
    rounding exactly, on any CPU; no fused integer kernels)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    o.log_severity_level = 3
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from posestream.models.quantize import QuantizeError, build_int8, calibrate_ranges, image_input
    from posestream.stream.benches.backends import _onnx_path
    from posestream.stream.infer import InferConfig, load_network

    d = Path(args.calib)
    if not d.is_dir():
        return fail("quantize", f"{d}: no such folder")
    images = sorted(p for p in glob.glob(str(d / "*")) if p.lower().endswith(IMAGE_EXT))[:max(1, args.images)]
    if not images:
        return fail("quantize", f"{d}: no images ({', '.join(IMAGE_EXT)})")
    from posestream.models.checkpoint import CheckpointError

    try:
        cfg = InferConfig(model=args.model, backend="onnxruntime")
        _, meta, _ = load_network(cfg)
    except (ValueError, OSError, CheckpointError) as e:
        return fail("quantize", str(e))
    onnx = Path(_onnx_path(cfg, meta))
    out = Path(args.out) if args.out else Path(str(onnx)[:-len(".onnx")] + ".int8-ranges.json")
    try:
        calibrate_ranges(onnx, images, out, size=args.size)
        q = build_int8(onnx, out)
    except QuantizeError as e:
        return fail("quantize", str(e))
    except OSError as e:
        return fail("quantize", f"cannot write {e.filename or out}: {e.strerror or e}")
    from posestream.models.export import maps

    x = next((t for t in (image_input(p, args.size, meta) for p in images) if t is not None), None)
    if x is None:
        return fail("quantize", f"{d}: none of the {len(images)} images could be read")
    ref, got = simulated_session(onnx).run(None, {"image": x}), simulated_session(q).run(None, {"image": x})
    corr = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(maps(ref), maps(got))]
    report = {"model": str(onnx), "ranges": str(out), "int8": str(q), "images": len(images), "size": args.size,
              "corr_heatmaps": round(corr[0], 4), "corr_pafs": round(corr[1], 4) if len(corr) > 1 else None}
    if args.ap:
        from posestream.stream.benches.backends import _ap

        for name, path in (("fp32", onnx), ("int8", q)):
            sess = simulated_session(path)
            report[f"ap_{name}"] = round(_ap(lambda t, s=sess: tuple(s.run(None, {"image": t})), meta, args.size), 4)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"ranges from {len(images)} images of {d} -> {out}")
        print(f"INT8 graph -> {q}; correlation with fp32 on {os.path.basename(images[0])}: heatmaps "
              f"{report['corr_heatmaps']:.3f}, pafs {report['corr_pafs']}"
              + (f"; held-out AP fp32 {report['ap_fp32']:.3f}, int8 {report['ap_int8']:.3f}" if args.ap else ""))
    return 0

