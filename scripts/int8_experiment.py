"""The README's INT8 experiment: ONNX Runtime static quantization of the shipped model, and what it
does to the outputs, the held-out AP and the forward time (README, "The shipped model", Speed).

  .venv/bin/python scripts/int8_experiment.py [--calib 16] [--out runs/int8]

Variants (QDQ format, per-channel weights, MinMax calibration on ``pseudo/`` images, never on
``coco-mini/val2017``): u8 activations x s8 weights (ONNX Runtime's fast kernels), the same with
7-bit weights (``reduce_range``), u8 x u8, u8 x u8 with the heads left in float32, and u8 x u8 on the
stem and blocks 0-5 only. Prints, per variant: correlation of heatmap / PAF outputs with float32
on one held-out image, AP at 320 on ``coco-mini/val2017``, and the median forward time at 320²
interleaved with the float32 graph (ONNX Runtime, 2 threads).
"""
from __future__ import annotations

import argparse
import glob
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / ".." / "shared" / "data"

VARIANTS = {  # name: (weight type, reduce_range, which nodes to quantize)
    "u8 x s8": ("s8", False, "all"),
    "u8 x s8, 7-bit weights": ("s8", True, "all"),
    "u8 x u8": ("u8", False, "all"),
    "u8 x u8, heads float32": ("u8", False, "backbone"),
    "u8 x u8, stem..block 5": ("u8", False, "early"),
}


def _input(path: str) -> np.ndarray:
    from posestream.models.preprocess import letterbox

    img, _ = letterbox(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), 320, multiple=32)
    return ((img.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None].copy()


def _keep(name: str, which: str) -> bool:
    if which == "all":
        return True
    if which == "backbone":
        return name.startswith("/backbone")
    m = re.match(r"/backbone/blocks\.(\d+)/", name)
    return name.startswith("/backbone/stem") or bool(m and int(m.group(1)) <= 5)


def quantize(src: Path, dst: Path, calib: list[str], weights: str, reduce_range: bool, which: str) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            p = next(self.it, None)
            return None if p is None else {"image": _input(p)}

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    exclude = [n.name for n in onnx.load(str(pre)).graph.node if not _keep(n.name, which)]
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8, nodes_to_exclude=exclude)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calib", type=int, default=16, help="calibration images from pseudo/ (default: %(default)s)")
    p.add_argument("--out", default="runs/int8", help="where the quantized graphs go (default: %(default)s)")
    args = p.parse_args()

    from posestream.models.checkpoint import load_checkpoint
    from posestream.models.export import export_onnx, onnx_session
    from posestream.models.predictor import Predictor
    from posestream.models.shipped import shipped_checkpoint
    from posestream.training.evaluation.evaluate import evaluate_coco

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, meta = load_checkpoint(shipped_checkpoint())
    fp32 = out / "fp32.onnx"
    export_onnx(model, fp32, meta=meta, check=False)
    calib = sorted(glob.glob(str(DATA / "pseudo" / "images" / "*.jpg")))[:args.calib]
    val_ann = DATA / "coco-mini" / "annotations" / "person_keypoints_val2017.json"
    val_dir = DATA / "coco-mini" / "val2017"
    probe = _input(sorted(glob.glob(str(val_dir / "*.jpg")))[3])
    ref_sess = onnx_session(fp32, threads=2)
    ref = ref_sess.run(None, {"image": probe})
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)

    def median_ms(sess, n=10):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            sess.run(None, {"image": x})
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts) * 1e3)

    print(f"{'variant':<26} {'corr heat':>9} {'corr paf':>9} {'AP@320':>7} {'ms':>6} {'fp32 ms':>8}")
    for name, (weights, rr, which) in VARIANTS.items():
        path = out / (re.sub(r"\W+", "_", name) + ".onnx")
        quantize(fp32, path, calib, weights, rr, which)
        sess = onnx_session(path, threads=2)
        got = sess.run(None, {"image": probe})
        corr = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(ref, got)]
        pred = Predictor(lambda t, s=sess: tuple(s.run(None, {"image": t})), meta, input_size=320)
        ap = evaluate_coco(pred, val_ann, val_dir, results_out=out / "results.json")["AP"]
        median_ms(sess, 3), median_ms(ref_sess, 3)
        q, f = [], []
        for _ in range(5):  # interleaved blocks: the machine's drift hits both
            q.append(median_ms(sess))
            f.append(median_ms(ref_sess))
        print(f"{name:<26} {corr[0]:9.3f} {corr[1]:9.3f} {ap:7.3f} {np.median(q):6.1f} {np.median(f):8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
