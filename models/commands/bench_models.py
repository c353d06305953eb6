"""Benchmark every model's forward pass: PyTorch and ONNX Runtime side by side, one run.

Per model, batch 1, float32: median latency of PyTorch eager (CPU) and of ONNX Runtime (CPU
provider) on the same input. Each backend runs in **its own worker process**, and the workers take
turns in blocks of calls, so that machine noise hits all alike while none sees another's thread
pool: in one process, ONNX Runtime calls interleaved with PyTorch calls measured 1.3–2x slower
than ONNX Runtime alone. On a CUDA machine the PyTorch worker also times CUDA float32 and
float16, and the ONNX Runtime worker the CUDA provider when ``onnxruntime-gpu`` is installed.
Warm-up calls are excluded; random weights (speed does not depend on them).

A third worker times the **reference**, MoveNet MultiPose Lightning as published (backbone + FPN
+ its six heads, ONNX Runtime), at the same input size and in the same rotation: shared machines
differ and drift in speed (this one by 1.3x within minutes), so a latency budget set on another
machine is checked as a ratio to it (../shared/NOTES.md: 13.0 ms at 320², 2 threads).

  posestream bench models
  posestream bench models --models movenet_paf --sizes 320 288 320x256 --blocks 8 --repeats 10
  posestream bench models --models lite --json
  posestream bench models --models movenet_paf --sizes 320 --blocks 12 --plot docs/bench_movenet_paf.png
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WARMUP = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=None, help="subset of models (default: all)")
    p.add_argument("--sizes", nargs="+", default=None, metavar="S|HxW",
                   help="input sizes, square (320) or height x width (256x320) (default: each model's standard size)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per block and backend (default: %(default)s)")
    p.add_argument("--blocks", type=int, default=3,
                   help="blocks per backend, taken in turns (default: %(default)s); latency = median of all calls")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for each backend (default: all cores)")
    p.add_argument("--no-reference", action="store_true", help="skip the MoveNet reference column")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write a picture: per-block medians in run order and the latency histogram, per model")
    p.add_argument("--json", action="store_true")


def parse_size(text: str) -> tuple[int, int]:
    """'320' -> (320, 320); '256x320' -> (256, 320) (height x width)."""
    parts = text.lower().split("x")
    try:
        hw = tuple(int(v) for v in parts)
    except ValueError:
        raise ValueError(f"bad size {text!r}: use S or HxW, e.g. 320 or 256x320") from None
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2 or min(hw) < 32:
        raise ValueError(f"bad size {text!r}: use S or HxW with sides of at least 32, e.g. 320 or 256x320")
    return hw


def _send(conn, obj) -> None:
    """Messages between the bench and its workers are JSON (numbers, lists, strings), not pickles."""
    conn.send_bytes(json.dumps(obj).encode())


def _recv(conn):
    return json.loads(conn.recv_bytes())


def _timed(fn, n: int) -> list[float]:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return ts


def _serve(conn, fn) -> None:
    """Warm up, say ready, then answer each block request (a call count) with its timings until 'stop'."""
    _timed(fn, WARMUP)
    _send(conn, "ready")
    while (msg := _recv(conn)) != "stop":
        _send(conn, _timed(fn, msg))


def _torch_worker(conn, name: str, hw: tuple[int, int], threads: int) -> None:
    import torch

    from posestream.models.registry import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, *hw), dtype=np.float32))
    with torch.no_grad():
        _serve(conn, lambda: model(x))
        extra = {}
        if torch.cuda.is_available():
            m, xc = model.cuda(), x.cuda()

            def cuda_run(mod, inp):
                mod(inp)
                torch.cuda.synchronize()

            cuda_run(m, xc)
            extra["torch_cuda_fp32_ms"] = float(np.median(_timed(lambda: cuda_run(m, xc), 20)))
            mh, xh = m.half(), xc.half()
            cuda_run(mh, xh)
            extra["torch_cuda_fp16_ms"] = float(np.median(_timed(lambda: cuda_run(mh, xh), 20)))
    _send(conn, extra)


def _ort_worker(conn, path: str, hw: tuple[int, int], threads: int) -> None:
    import onnxruntime as ort

    from posestream.models.export import onnx_session

    sess = onnx_session(path, threads=threads)
    feed = {"image": np.random.default_rng(0).standard_normal((1, 3, *hw), dtype=np.float32)}
    _serve(conn, lambda: sess.run(None, feed))
    extra = {}
    if "CUDAExecutionProvider" in ort.get_available_providers():
        gs = onnx_session(path, providers=["CUDAExecutionProvider"])
        gs.run(None, feed)
        extra["ort_cuda_ms"] = float(np.median(_timed(lambda: gs.run(None, feed), 20)))
    _send(conn, extra)


def _reply(worker, key: str, name: str):
    """The worker's next message; a worker that died (its traceback is on stderr) raises."""
    proc, conn = worker
    while not conn.poll(0.5):
        if not proc.is_alive():
            raise RuntimeError(f"{name}: the {key.removesuffix('_ms')} worker failed (exit code {proc.exitcode})")
    try:
        return _recv(conn)
    except EOFError:
        raise RuntimeError(f"{name}: the {key.removesuffix('_ms')} worker failed") from None


def bench_model(name: str, hw: tuple[int, int], repeats: int, blocks: int, threads: int,
                reference: bool = True, model=None) -> dict:
    """Median forward latency of one model at one input size, PyTorch and ONNX Runtime in turns
    (and the MoveNet reference with ONNX Runtime)."""
    from posestream.models.export import export_onnx
    from posestream.models.nets.movenet import MoveNetOriginal
    from posestream.models.registry import build_model

    ctx = mp.get_context("spawn")
    row: dict = {"input": list(hw)}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"{name}.onnx")
        export_onnx((model if model is not None else build_model(name)).eval(), path, check=False)
        jobs = [("torch_cpu_ms", _torch_worker, name), ("ort_cpu_ms", _ort_worker, path)]
        if reference:  # MoveNet's sides must be multiples of 32: the next ones up
            ref_hw = tuple(-(-v // 32) * 32 for v in hw)
            row["reference_input"] = list(ref_hw)
            ref_path = os.path.join(d, "movenet_reference.onnx")
            export_onnx(MoveNetOriginal().eval(), ref_path, check=False)
            jobs.append(("reference_ort_cpu_ms", _ort_worker, ref_path, ref_hw))
        workers = {}
        try:
            for key, target, arg, *size in jobs:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=target, args=(child, arg, size[0] if size else hw, threads), daemon=True)
                proc.start()
                child.close()
                workers[key] = (proc, parent)
                _reply(workers[key], key, name)
            times: dict[str, list[float]] = {k: [] for k in workers}
            for _ in range(blocks):
                for key, w in workers.items():  # one backend at a time; the others wait
                    _send(w[1], repeats)
                    times[key] += _reply(w, key, name)
            for key, w in workers.items():
                row.setdefault("_calls_ms", {})[key] = times[key]  # for --plot; not in the JSON
                row[key] = float(np.median(times[key]))
                row[key.replace("_ms", "_blocks_ms")] = [float(np.median(times[key][i:i + repeats]))
                                                         for i in range(0, len(times[key]), repeats)]
                _send(w[1], "stop")
                prefix = "reference_" if key.startswith("reference_") else ""  # its CUDA time, too
                row.update({prefix + k: v for k, v in _reply(w, key, name).items()})
                w[0].join(timeout=30)
        finally:
            for proc, _ in workers.values():
                if proc.is_alive():
                    proc.kill()
    row["speedup_ort"] = row["torch_cpu_ms"] / row["ort_cpu_ms"]
    if reference:
        row["ort_vs_reference"] = row["ort_cpu_ms"] / row["reference_ort_cpu_ms"]
    return row


def run(args: argparse.Namespace) -> int:
    import torch

    from posestream.models.registry import build_model, list_models

    from . import fail

    names = args.models or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        return fail("bench models", f"unknown model {unknown[0]!r}; known: {', '.join(list_models())}")
    if args.repeats < 1 or args.blocks < 1:
        return fail("bench models", "--repeats and --blocks must be at least 1")
    try:
        sizes = [parse_size(s) for s in args.sizes] if args.sizes else None
    except ValueError as e:
        return fail("bench models", str(e))
    threads = args.threads or os.cpu_count() or 1
    res = {"threads": threads, "cuda": torch.cuda.is_available(), "repeats": args.repeats, "blocks": args.blocks,
           "reference": None if args.no_reference else "MoveNet MultiPose Lightning, ONNX Runtime (NOTES.md: 13.0 ms "
                                                       "at 320x320, 2 threads)",
           "models": {}}
    for name in names:
        model = build_model(name)
        if sizes is None:
            todo = [(model.input_size, model.input_size)]
        else:
            todo = sizes
            m = int(getattr(model, "input_multiple", 1))
            bad = [hw for hw in todo if hw[0] % m or hw[1] % m]
            if bad:
                return fail("bench models", f"{name}: input {bad[0][0]}x{bad[0][1]} is not a multiple of {m}")
        for hw in todo:
            key = name if sizes is None else f"{name}@{hw[0]}x{hw[1]}"
            try:
                r = res["models"][key] = bench_model(name, hw, args.repeats, args.blocks, threads,
                                                     not args.no_reference, model)
            except RuntimeError as e:
                return fail("bench models", str(e))
            if not args.json:
                extra = "".join(f"  {k} {v:.1f}" for k, v in r.items() if "cuda" in k)
                blocks = " ".join(f"{v:.1f}" for v in r["ort_cpu_blocks_ms"])
                ref = (f"  | MoveNet {r['reference_ort_cpu_ms']:6.1f} ms ({r['ort_vs_reference']:.2f}x)"
                       if "reference_ort_cpu_ms" in r else "")
                print(f"{name:<26} {hw[0]:>4}x{hw[1]:<4} torch {r['torch_cpu_ms']:8.1f} ms  onnxruntime "
                      f"{r['ort_cpu_ms']:7.1f} ms  ({r['speedup_ort']:.1f}x){ref}  ort blocks [{blocks}]{extra}",
                      flush=True)
    calls = {key: r.pop("_calls_ms") for key, r in res["models"].items()}
    if args.plot:
        print(f"plot: {plot_results(res, calls, args.plot)}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(res, indent=2))
    return 0


LABELS = {"torch_cpu_ms": "PyTorch", "ort_cpu_ms": "ONNX Runtime", "reference_ort_cpu_ms": "MoveNet (reference), ORT"}
COLORS = {"torch_cpu_ms": "C0", "ort_cpu_ms": "C1", "reference_ort_cpu_ms": "C2"}


def plot_results(res: dict, calls: dict, path: str) -> str:
    """One row per model: block medians in the order they ran (drift shows as a slope shared by
    all backends) and the histogram of single-call latencies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(res["models"])
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.2 * len(rows)), squeeze=False)
    for (ax_t, ax_h), key in zip(axes, rows):
        r = res["models"][key]
        for backend, times in calls[key].items():
            blocks = r[backend.replace("_ms", "_blocks_ms")]
            ax_t.plot(range(1, len(blocks) + 1), blocks, "o-", color=COLORS[backend],
                      label=f"{LABELS[backend]} (median {r[backend]:.1f})")
            if backend != "torch_cpu_ms":  # the ONNX Runtime pair; PyTorch is far off to the right
                ax_h.hist(times, bins=30, alpha=0.6, color=COLORS[backend], label=LABELS[backend])
        name = key if "@" in key else f"{key}@{r['input'][0]}x{r['input'][1]}"
        ax_t.set(title=f"{name}: block medians in run order", xlabel="block", ylabel="ms")
        ax_h.set(title=f"{name}: single ONNX Runtime calls", xlabel="ms", ylabel="calls")
        ax_t.legend(fontsize=8)
        ax_h.legend(fontsize=8)
    fig.suptitle(f"posestream bench models: batch 1, {res['threads']} threads, {res['repeats']} calls per block")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
