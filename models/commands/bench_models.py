"""Benchmark every model's forward pass: PyTorch and ONNX Runtime side by side, one run.

Per model, at its standard square input, batch 1: median latency of PyTorch eager (CPU, float32)
and of ONNX Runtime (CPU provider) on the same input, interleaved so that machine noise hits both
alike; on a CUDA machine also PyTorch CUDA float32 and float16 and ONNX Runtime's CUDA provider
when ``onnxruntime-gpu`` is installed. Warm-up calls are excluded.

  posestream bench models
  posestream bench models --models lite cmu_pose_vgg19 --repeats 20 --json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=None, help="subset of models (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per backend (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: all cores)")
    p.add_argument("--json", action="store_true")


def _median_ms(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e3)


def bench_model(name: str, repeats: int, threads: int) -> dict:
    import torch

    from models.export import export_onnx, onnx_session
    from models.registry import build_model

    model = build_model(name).eval()
    s = model.input_size
    x = torch.randn(1, 3, s, s)
    row: dict = {"input": s}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"{name}.onnx")
        export_onnx(model, path, check=False)
        sess = onnx_session(path, threads=threads)
        feed = {"image": x.numpy()}
        with torch.no_grad():
            model(x)
            sess.run(None, feed)
            t_pt, t_ort = [], []
            for _ in range(repeats):
                t_pt.append(_median_ms(lambda: model(x), 1))
                t_ort.append(_median_ms(lambda: sess.run(None, feed), 1))
        row["torch_cpu_ms"] = float(np.median(t_pt))
        row["ort_cpu_ms"] = float(np.median(t_ort))
        row["speedup_ort"] = row["torch_cpu_ms"] / row["ort_cpu_ms"]
        if torch.cuda.is_available():
            m = model.cuda()
            xc = x.cuda()

            def cuda_run(mod, inp):
                mod(inp)
                torch.cuda.synchronize()

            with torch.no_grad():
                cuda_run(m, xc)
                row["torch_cuda_fp32_ms"] = _median_ms(lambda: cuda_run(m, xc), max(repeats, 20))
                mh, xh = m.half(), xc.half()
                cuda_run(mh, xh)
                row["torch_cuda_fp16_ms"] = _median_ms(lambda: cuda_run(mh, xh), max(repeats, 20))
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers():
                gs = onnx_session(path, providers=["CUDAExecutionProvider"])
                gs.run(None, feed)
                row["ort_cuda_ms"] = _median_ms(lambda: gs.run(None, feed), max(repeats, 20))
    return row


def run(args: argparse.Namespace) -> int:
    import torch

    from models.registry import list_models

    from . import fail

    names = args.models or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        return fail("bench models", f"unknown model {unknown[0]!r}; known: {', '.join(list_models())}")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    res = {"threads": threads, "cuda": torch.cuda.is_available(), "models": {}}
    for name in names:
        res["models"][name] = bench_model(name, args.repeats, threads)
        if not args.json:
            r = res["models"][name]
            extra = "".join(f"  {k} {v:.1f}" for k, v in r.items() if "cuda" in k)
            print(f"{name:<28} {r['input']:>5}  torch {r['torch_cpu_ms']:8.1f} ms  onnxruntime {r['ort_cpu_ms']:8.1f} ms"
                  f"  ({r['speedup_ort']:.1f}x){extra}", flush=True)
    if args.json:
        print(json.dumps(res, indent=2))
    return 0
