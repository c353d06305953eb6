"""Export a checkpoint (or a registered model, randomly initialised) to ONNX.

The graph has dynamic batch, height and width; the model's metadata (architecture, input size,
mean/std, stride, skeleton, recipe, metrics) is embedded. A parity check against PyTorch on
another input size runs as part of the export and fails it above the tolerance. A bottom-up model
is exported with the decoder's upsampling and peak NMS in the graph (``models/decode_head.py``)
unless ``--no-graph-decode``.

  posestream export runs/lite/best.pt --out lite.onnx
  posestream export lite --out lite-random.onnx
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import fail


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="CHECKPOINT_OR_MODEL", help="a .pt checkpoint or a registered model name")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--size", type=int, default=None, help="tracing input side (default: the model's)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the PyTorch/ONNX Runtime parity check")
    p.add_argument("--no-graph-decode", action="store_true",
                   help="export the network's outputs only (heatmaps, pafs), without the decoding layers")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")


def run(args: argparse.Namespace) -> int:
    from posestream.models.checkpoint import CheckpointError, load_checkpoint
    from posestream.models.export import ExportError, export_onnx
    from posestream.models.registry import build_model, list_models

    src = args.source
    try:
        if Path(src).suffix in (".pt", ".pth", ".ckpt") or Path(src).exists():
            model, meta = load_checkpoint(src)
        elif src in list_models():
            model, meta = build_model(src).eval(), None
        else:
            return fail("export", f"{src}: neither a checkpoint file nor a registered model "
                                  f"(known models: {', '.join(list_models())})")
        size = (args.size, args.size) if args.size else None
        report = export_onnx(model, args.out, input_hw=size, opset=args.opset, meta=meta, check=not args.no_check,
                             graph_decode=not args.no_graph_decode)
    except (CheckpointError, ExportError) as e:
        return fail("export", str(e))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        msg = f"wrote {report['path']} ({report['size_mb']:.1f} MB, opset {report['opset']}, outputs {report['outputs']})"
        if "max_abs_err" in report:
            msg += f"; parity vs PyTorch at {report['check_input']}: max abs err {report['max_abs_err']:.2e} " \
                   f"(tolerance {report['tolerance']:.1e})"
        print(msg)
    return 0
