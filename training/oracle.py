"""Oracle accuracy of the decoder on real poses.

Renders heatmap and PAF targets from the real COCO labels of an annotation file (default:
``../shared/data/coco-mini/train2017``), decodes them with the pipeline's decoder and scores the
result with pycocotools against the same labels. With perfect fields the only losses are the
decoder's (and the field resolution's): crowded same-type keypoints whose Gaussians merge,
overlapping limbs whose PAFs average, tiny people. One line per (input size, stride) setting.

  posestream bench oracle                 # table
  posestream bench oracle --json          # machine-readable
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

DEFAULT_ANN = "../shared/data/coco-mini/annotations/person_keypoints_train2017.json"
DEFAULT_SETTINGS = ("256:4", "256:8", "320:4", "320:8")


def oracle_eval(ann_file: str, size: int, stride: int, config=None, sigma: float | None = None,
                paf_width: float = 1.0, impl: str = "numba") -> dict:
    """Encode the labels of every image at (size, stride), decode, and score with pycocotools.

    ``impl``: ``numba`` / ``numpy`` (the host decoder), or ``graph``: the fields go through the
    exported graph's decoding layers (``models/decode_head.py``, run in PyTorch) and the host's
    :func:`decode_graph`, as the pipeline decodes a graph-decoding export."""
    from pycocotools.coco import COCO
    import contextlib
    import io

    from posestream.models.fields import DecoderConfig, decode, encode
    from posestream.models.preprocess import letterbox_record

    from .evaluation import coco_keypoint_eval, poses_to_coco_results

    cfg = config or DecoderConfig()
    if sigma is None:
        sigma = 8.0 / stride  # 8 input pixels at any stride
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(ann_file)
    img_ids = sorted(coco.getImgIds())
    results = []
    for img_id in img_ids:
        info = coco.loadImgs(img_id)[0]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)) if not a.get("iscrowd", 0)
                and a.get("num_keypoints", 0) > 0]
        rec = letterbox_record((info["height"], info["width"]), size, multiple=32)
        if anns:
            kp = np.asarray([a["keypoints"] for a in anns], np.float64).reshape(len(anns), -1, 3)
            kp_in = rec.to_input(kp)
            kp_in[kp[..., 2] <= 0] = 0.0
        else:
            kp_in = np.zeros((0, 17, 3))
        t = encode(kp_in, rec.input_hw, stride, sigma=sigma, paf_width=paf_width)
        if impl == "graph":
            poses = _decode_in_graph(t.heatmaps, t.pafs, stride, cfg)
        else:
            poses = decode(t.heatmaps, t.pafs, stride, cfg, impl=impl)
        kps = rec.to_image(poses.keypoints)
        results.extend(poses_to_coco_results(img_id, kps, poses.scores))
    stats = coco_keypoint_eval(coco, results, img_ids)
    return {"size": size, "stride": stride, "sigma_cells": sigma, "images": len(img_ids),
            "people": sum(1 for a in coco.loadAnns(coco.getAnnIds(imgIds=img_ids, iscrowd=False))
                          if a.get("num_keypoints", 0) > 0), **stats}


def _decode_in_graph(heatmaps, pafs, stride: int, cfg):
    import torch

    from posestream.models.decode_head import DecodeHead, graph_factor
    from posestream.models.fields import decode_graph

    factor = graph_factor(stride, cfg.working_stride)
    if factor is None:
        raise ValueError(f"stride {stride} / working stride {cfg.working_stride:g} is not an integer")
    head = DecodeHead(17, factor)
    with torch.no_grad():
        up, scores, index = (t[0].numpy() for t in head(torch.from_numpy(np.ascontiguousarray(heatmaps[None]))))
    return decode_graph(up, scores, index, pafs, stride, cfg)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ann", default=DEFAULT_ANN, help="COCO keypoint json (default: %(default)s)")
    p.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), metavar="SIZE:STRIDE",
                   help="input long side and network stride pairs (default: %(default)s)")
    p.add_argument("--working-stride", type=float, default=None, help="decoder working stride in pixels")
    p.add_argument("--sigma", type=float, default=None, help="heatmap sigma in cells (default: 8 px)")
    p.add_argument("--impl", choices=("numba", "numpy", "graph"), default="numba",
                   help="numba / numpy: the host decoder; graph: the exported graph's decoding layers + the host's "
                        "grouping (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace) -> int:
    from posestream.models.fields import DecoderConfig

    if not Path(args.ann).is_file():
        print(f"posestream bench oracle: annotation file not found: {args.ann}", file=sys.stderr)
        return 2
    cfg = DecoderConfig() if args.working_stride is None else DecoderConfig(working_stride=args.working_stride)
    rows = []
    for s in args.settings:
        try:
            size, stride = (int(v) for v in s.split(":"))
        except ValueError:
            print(f"posestream bench oracle: bad setting {s!r}, expected SIZE:STRIDE like 320:4", file=sys.stderr)
            return 2
        rows.append(oracle_eval(args.ann, size, stride, cfg, sigma=args.sigma, impl=args.impl))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"decoder oracle on {rows[0]['images']} images, {rows[0]['people']} people ({args.ann})")
    print(f"working stride {cfg.working_stride:g} px; heatmap sigma 8 px unless --sigma")
    print(f"{'input':>6} {'stride':>6} {'AP':>6} {'AP50':>6} {'AP75':>6} {'APm':>6} {'APl':>6} {'AR':>6}")
    for r in rows:
        print(f"{r['size']:>6} {r['stride']:>6} {r['AP']:6.3f} {r['AP50']:6.3f} {r['AP75']:6.3f} "
              f"{r['APm']:6.3f} {r['APl']:6.3f} {r['AR']:6.3f}")
    return 0
