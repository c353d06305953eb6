"""Evaluate a checkpoint: COCO OKS AP/AR via pycocotools (or MPII PCKh@0.5), per-joint recall.

Decodes with exactly the decoder the pipeline uses. Writes the COCO-format results json.

  posestream eval --checkpoint runs/lite/best.pt \\
      --data ../shared/data/coco-mini/annotations/person_keypoints_val2017.json \\
      --images ../shared/data/coco-mini/val2017 [--flip] [--json]

``--refine`` evaluates the accurate mode: every detected person refined top-down by MoveNet
Thunder (``models/weights/movenet_thunder.pt``, or ``--refine-model``), exactly as
``posestream run --refine`` does; ``--refine-gt-boxes`` crops the true person boxes instead (the
upper bound of refinement). ``--checkpoint default`` is the shipped model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a posestream checkpoint (.pt)")
    p.add_argument("--data", required=True, help="annotation file (COCO keypoint json, or MPII json with --dataset mpii)")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--dataset", choices=("coco", "mpii"), default="coco")
    p.add_argument("--size", type=int, default=None, help="input long side (default: the checkpoint's)")
    p.add_argument("--flip", action="store_true", help="flip test: average with the mirrored image's outputs")
    p.add_argument("--decoder", default=None, metavar="YAML", help="decoder settings (see configs/decoder.yaml)")
    p.add_argument("--results", default=None, help="where to write the results json (default: next to the checkpoint)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--refine", action="store_true", help="accurate mode: refine every detected person with MoveNet "
                   "Thunder (top-down), as posestream run --refine")
    p.add_argument("--refine-model", default="default", metavar="MODEL",
                   help="the refinement model: default (models/weights/movenet_thunder.pt), a checkpoint or ONNX file")
    p.add_argument("--refine-gt-boxes", action="store_true",
                   help="refine crops of the ground-truth person boxes instead of the detections (upper bound)")
    p.add_argument("--refine-backend", choices=("auto", "onnxruntime", "torch"), default="auto",
                   help="backend of the refinement model (as posestream run --backend)")
    p.add_argument("--refine-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a refinement option (configs: the refine section), e.g. box_scale=1.3; repeatable")


def _fail(msg: str) -> int:
    print(f"posestream eval: error: {msg}", file=sys.stderr)
    return 2


def _refined(predictor, args, device: str):
    """The predictor followed by the refinement stage's algorithm and network."""
    import yaml

    from posestream.models.refine import RefineConfig, RefinedPredictor, Refiner
    from posestream.stream.infer import InferConfig, load_network, network_device
    from posestream.stream.refine import resolve_refine_model

    opts = {}
    for item in args.refine_set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--refine-set {item!r}: expected KEY=VALUE")
        opts[key.strip()] = yaml.safe_load(value)
    cfg = RefineConfig.from_dict(opts)
    if predictor.skeleton.name != "coco17":
        raise ValueError(f"--refine: the refinement model predicts COCO-17 keypoints; the checkpoint's skeleton "
                         f"is {predictor.skeleton.name}")
    run, meta, desc = load_network(InferConfig(model=resolve_refine_model(args.refine_model),
                                               backend=args.refine_backend, device=device), kind="topdown")
    return RefinedPredictor(predictor, Refiner(run, meta, cfg, network_device(desc)), gt_boxes=args.refine_gt_boxes)


def run(args: argparse.Namespace) -> int:
    import torch
    import yaml

    from posestream.models.checkpoint import CheckpointError, load_checkpoint
    from posestream.models.fields import DecoderConfig
    from posestream.models.predictor import Predictor

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if args.checkpoint == "default":
            from posestream.models.shipped import shipped_checkpoint

            args.checkpoint = str(shipped_checkpoint())
        model, meta = load_checkpoint(args.checkpoint)
        dec = DecoderConfig()
        if args.decoder:
            path = Path(args.decoder)
            if not path.is_file():
                return _fail(f"{path}: decoder config not found")
            dec = DecoderConfig.from_dict(yaml.safe_load(path.read_text()) or {})
    except (CheckpointError, ValueError) as e:
        return _fail(str(e))
    if args.dataset == "mpii":
        from .evaluation.mpii import evaluate_mpii

        try:
            stats = evaluate_mpii(model, meta, args.data, args.images, flip=args.flip, device=device)
        except FileNotFoundError as e:
            return _fail(str(e).strip("'\""))
        if args.json:
            print(json.dumps(stats, indent=2))
        else:
            print(f"PCKh@0.5 mean {stats['PCKh']:.3f} over {stats['people']} people")
            for j, v in stats["per_joint"].items():
                print(f"  {j:<16} {v:.3f}")
        return 0
    from .evaluation.evaluate import evaluate_coco

    predictor = Predictor.from_model(model, meta, device, decoder=dec, input_size=args.size, flip=args.flip)
    if args.refine or args.refine_gt_boxes:
        try:
            predictor = _refined(predictor, args, device)
        except (CheckpointError, ValueError, FileNotFoundError) as e:
            return _fail(" ".join(str(e).split()))
    results = args.results or str(Path(args.checkpoint).with_suffix("")) + "_results.json"
    try:
        stats = evaluate_coco(predictor, args.data, args.images, results_out=results)
    except FileNotFoundError as e:
        return _fail(str(e).strip("'\""))
    stats["results_json"] = results
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    refined = (", refined on the true boxes" if args.refine_gt_boxes else ", refined") if hasattr(predictor, "refiner") else ""
    print(f"{stats['images']} images, {stats['people']} people, {stats['detections']} detections "
          f"(input {predictor.input_size}{', flip test' if args.flip else ''}{refined})")
    print("  ".join(f"{k} {stats[k]:.3f}" for k in ("AP", "AP50", "AP75", "APm", "APl", "AR")))
    print("per-joint recall: " + ", ".join(f"{k} {v:.2f}" for k, v in stats["per_joint_recall"].items()))
    print(f"results: {results}")
    return 0
