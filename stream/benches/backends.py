"""Every CPU backend candidate side by side, in one run: ms per forward pass at each input size
(rounds of short blocks on the same input), the largest output difference from ONNX Runtime fp32,
and with ``--ap`` the held-out AP (coco-mini val2017, pycocotools) of the whole pipeline (same
decoder) on each — recorded in this host's calibration cache, so that ``--backend auto`` may
choose a reduced precision only when its AP loss is measured within 0.005.

  posestream bench backends [--model default] [--sizes 256,320] [--ap] [--json]
"""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="checkpoint, ONNX file or registered model")
    p.add_argument("--sizes", default="256,320", help="input sizes, comma-separated")
    p.add_argument("--rounds", type=int, default=10, help="rounds per size (each candidate: one untimed + 4 timed calls per round)")
    p.add_argument("--threads", type=int, default=None, help="threads per backend (default: the runtime's)")
    p.add_argument("--ap", action="store_true", help="also measure held-out AP per candidate and record it")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _ap(run, meta, size: int) -> float:
    from posestream.models.fields import DecoderConfig
    from posestream.models.predictor import Predictor
    from posestream.training.evaluation.evaluate import evaluate_coco

    from .tracking import _shared

    d = _shared() / "coco-mini"
    pred = Predictor(run, meta, DecoderConfig(), size)
    return float(evaluate_coco(pred, d / "annotations/person_keypoints_val2017.json", d / "val2017",
                               progress=False)["AP"])


def run(args: argparse.Namespace) -> int:
    from posestream.stream import backends as B

    from ..infer import InferConfig, _cache_dir, load_network

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    # the ONNX export (and the metadata) through the pipeline's own loader
    cfg = InferConfig(model=args.model, backend="onnxruntime", threads=args.threads)
    _, meta, _ = load_network(cfg)
    onnx = _onnx_path(cfg, meta)
    out = {"cpu": B.cpu_name(), "flags": B.key_flags(), "threads": args.threads, "sizes": {}}
    for size in sizes:
        rec = B.calibrate(onnx, size, args.threads, _cache_dir(cfg), rounds=args.rounds, force=True)
        if args.ap:
            aps = {n: _ap(B.make_runner(n, onnx, args.threads, _cache_dir(cfg)), meta, size)
                   for n, r in rec["results"].items() if "error" not in r}
            B.record_ap(onnx, size, args.threads, _cache_dir(cfg), aps)
            for n, ap in aps.items():
                rec["results"][n]["ap"] = ap
                rec["results"][n]["ap_fp32"] = aps["onnxruntime-fp32"]
            rec["chosen"] = B.choose(rec)
        ref = rec["results"]["onnxruntime-fp32"]["ms"]
        for n, r in rec["results"].items():
            r["ratio_vs_onnxruntime"] = round(r["ms"] / ref, 3)
            r["auto_eligible"], r["why_not"] = B.eligible(n, r)
        out["sizes"][size] = {"results": rec["results"], "chosen": rec["chosen"]}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"CPU: {out['cpu']}; flags: {' '.join(out['flags']) or '-'}; threads: {args.threads or 'default'}")
    print(f"{'size':>5} {'candidate':<18} {'ms':>8} {'vs ORT':>7} {'max |diff|':>11} {'AP':>7}  auto")
    for size, s in out["sizes"].items():
        for n, r in s["results"].items():
            ap = f"{r['ap']:.3f}" if "ap" in r else "-"
            auto = "CHOSEN" if n == s["chosen"] else ("yes" if r["auto_eligible"] else f"no: {r['why_not']}")
            print(f"{size:>5} {n:<18} {r['ms']:>8.2f} {r['ratio_vs_onnxruntime']:>7.2f} {r['max_abs_diff']:>11.2g} "
                  f"{ap:>7}  {auto}")
    return 0


def _onnx_path(cfg, meta):
    """The cached ONNX export the pipeline runs (or the ONNX file given)."""
    from pathlib import Path

    from posestream.models.shipped import DEFAULT_MODEL, shipped_checkpoint

    from ..infer import onnx_export_path

    spec = cfg.model
    path = shipped_checkpoint() if spec == DEFAULT_MODEL else Path(spec)
    return path if path.suffix == ".onnx" else onnx_export_path(cfg, meta)
