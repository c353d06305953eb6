"""The README's INT8 table: which part of the shipped model can run in INT8 (issue #15).

  .venv/bin/python scripts/int8_experiment.py [--ranges models/weights/movenet_paf.int8-ranges.json]

Every variant is ONNX Runtime's static QDQ quantization (u8 activations, s8 per-channel weights)
of the shipped export with the same ranges (``posestream quantize``: MinMax, moving average, 64
``pseudo/`` training images, never the validation set); the variants differ in which nodes are
quantized. Per variant:

* ``AP sim``: held-out AP at 320 (coco-mini val2017, pycocotools) with the Q/DQ nodes applied as
  written (ONNX Runtime with its graph optimizations off: the INT8 rounding, in float, on any CPU
  — what a CPU with VNNI computes, up to its requantization rounding);
* ``corr``: correlation of this CPU's real INT8 kernels' heatmaps with the simulated ones on a
  held-out image (~1 where the kernels are exact; on x86 without VNNI the u8 x s8 products
  saturate in 16 bits and it drops);
* ``ms``: this CPU's INT8 forward at 320 against fp32's, interleaved blocks, ONNX Runtime.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {  # name: which nodes run in INT8
    "all but the decoding head": lambda n: n.startswith("/model/"),
    "backbone + FPN": lambda n: n.startswith("/model/backbone/"),
    "backbone + FPN laterals": lambda n: n.startswith("/model/backbone/") and (
        "/fpn/" not in n or "/fpn/lateral" in n),
    "backbone (shipped)": lambda n: n.startswith("/model/backbone/") and "/fpn/" not in n,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranges", default=str(REPO / "models/weights/movenet_paf.int8-ranges.json"))
    args = p.parse_args()

    import glob

    import onnx

    from posestream.models.commands.quantize import simulated_session
    from posestream.models.quantize import image_input, quantize
    from posestream.models.export import onnx_session
    from posestream.stream import backends as B
    from posestream.stream.benches.backends import _ap
    from posestream.stream.benches.tracking import _shared
    from posestream.stream.infer import InferConfig, load_network, onnx_export_path

    cfg = InferConfig(backend="onnxruntime")
    _, meta, _ = load_network(cfg)
    src = onnx_export_path(cfg, meta)
    names = [n.name for n in onnx.load(str(src)).graph.node if n.op_type != "Constant"]
    x = image_input(sorted(glob.glob(str(_shared() / "coco-mini/val2017/*.jpg")))[3], 320)
    fp32 = onnx_session(src, threads=2)
    print(f"CPU: {B.cpu_name()}; flags: {' '.join(B.key_flags()) or '-'}")
    print(f"fp32: AP {_ap(lambda t: tuple(fp32.run(None, {'image': t})), meta, 320):.3f}")
    print(f"{'INT8 part':<28} {'nodes':>5} {'AP sim':>7} {'corr':>6} {'ms':>6} {'fp32 ms':>8}")

    def block_ms(sess, n=8):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            sess.run(None, {"image": x})
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts) * 1e3)

    with tempfile.TemporaryDirectory() as tmp:
        for name, keep in VARIANTS.items():
            nodes = [n for n in names if keep(n)]
            q = Path(tmp, "q.onnx")
            quantize(src, q, nodes, args.ranges)
            sim = simulated_session(q)
            ap = _ap(lambda t, s=sim: tuple(s.run(None, {"image": t})), meta, 320)
            real = onnx_session(q, threads=2)
            corr = float(np.corrcoef(real.run(None, {"image": x})[0].ravel(),
                                     sim.run(None, {"image": x})[0].ravel())[0, 1])
            block_ms(real, 3), block_ms(fp32, 3)
            qm, fm = [], []
            for _ in range(5):  # interleaved blocks: the machine's drift hits both
                qm.append(block_ms(real))
                fm.append(block_ms(fp32))
            print(f"{name:<28} {len(nodes):>5} {ap:7.3f} {corr:6.3f} {np.median(qm):6.1f} {np.median(fm):8.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
