"""Fill this host's caches so that the first ``posestream run`` starts fast: compile the package's
Python files to bytecode (an editable install has none, and with PYTHONDONTWRITEBYTECODE set every
process would compile them again at each start), compile the decoder's Numba kernels into their
on-disk cache and ahead of time into an extension module that loads without Numba
(``models/fields/_aot.py``; where no C compiler is found it says so in one line and the JIT
kernels serve as before), export the shipped model to ONNX and time the CPU backends
on it (``stream/backends.py``), at the input sizes of the presets (256 and 320). ``make install``
runs it; running it again is quick (everything is cached) and safe.

  posestream warmup [--model default] [--sizes 256,320]
"""
from __future__ import annotations

import argparse
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="checkpoint or ONNX file (default: the shipped model)")
    p.add_argument("--sizes", default="256,320", help="input sizes to calibrate the backends at")


def compile_bytecode() -> float:
    """Write the ``__pycache__`` of every folder of the package (compileall, quiet; folders that
    cannot be written are skipped): seconds taken."""
    import compileall

    import posestream
    from posestream import models, stream, training

    t0 = time.perf_counter()
    for pkg in (posestream, models, stream, training):
        for folder in pkg.__path__:
            compileall.compile_dir(folder, quiet=2, workers=1)
    return time.perf_counter() - t0


def _synthetic_decodes() -> list:
    """Both decoder entry points (``decode``: ``group``; ``decode_graph``: ``group_candidates``) on
    synthetic maps, through whichever kernels ``_aot.kernels()`` gives: their outputs."""
    import numpy as np

    from posestream.models.fields import decode, decode_graph, upsample
    from posestream.models.skeleton import COCO_17

    rng = np.random.default_rng(0)
    heat = (rng.random((COCO_17.num_keypoints, 40, 40)) * 0.5).astype(np.float32)
    heat[:, 20, 20] = 1.0
    pafs = (rng.random((2 * len(COCO_17.limbs), 40, 40)) - 0.5).astype(np.float32)
    out = [decode(heat, pafs, 8)]
    up = upsample(heat, 4.0)  # and the grouping of a graph-decoding export (its candidate lists)
    index = np.argsort(-up.reshape(len(up), -1), axis=1, kind="stable")[:, :64]
    out.append(decode_graph(up, np.take_along_axis(up.reshape(len(up), -1), index, 1), index, pafs, 8))
    return out


def warm_decoder() -> float:
    """Run the Numba decoder's JIT kernels once on synthetic maps (compiles them into their cache;
    they serve wherever the ahead-of-time build does not): seconds taken."""
    from posestream.models.fields import _aot

    t0 = time.perf_counter()
    with _aot.use("jit"):
        _synthetic_decodes()
    return time.perf_counter() - t0


def build_decoder_aot() -> str:
    """Build the decoder kernels ahead of time (``models/fields/_aot.py``) unless this host has a
    matching build, and check it returns the JIT kernels' poses: one line saying what happened.
    A failed build (no C compiler, ...) or a mismatch leaves no build behind; the JIT kernels serve."""
    import numpy as np

    from posestream.models.fields import _aot

    t0 = time.perf_counter()
    existed = _aot.module_path().is_file()
    try:
        path = _aot.build()
    except Exception as e:  # noqa: BLE001 - any failure of the C toolchain means: JIT, as before
        why = (str(e).strip().splitlines() or [""])[0][:160]
        return f"decoder kernels not built ahead of time ({type(e).__name__}: {why}); the JIT kernels serve"
    took = time.perf_counter() - t0
    try:
        with _aot.use("aot"):
            got = _synthetic_decodes()
    except Exception as e:  # noqa: BLE001
        path.unlink(missing_ok=True)
        return f"decoder kernels: the ahead-of-time build does not run ({type(e).__name__}: {e}); removed, the JIT kernels serve"
    with _aot.use("jit"):
        want = _synthetic_decodes()
    if not all(np.array_equal(a, b) for g, w in zip(got, want) for a, b in zip(g, w)):
        path.unlink(missing_ok=True)
        return "decoder kernels: the ahead-of-time build returns other poses than the JIT kernels; removed, the JIT kernels serve"
    how = "already built" if existed else f"built ahead of time ({took:.1f} s)"
    return f"decoder kernels {how}, same poses as the JIT kernels: {path}"


def run(args: argparse.Namespace) -> int:
    from .infer import InferConfig, load_network

    print(f"posestream warmup: bytecode compiled ({compile_bytecode():.1f} s)", flush=True)
    print(f"posestream warmup: decoder kernels ready ({warm_decoder():.1f} s)", flush=True)
    print(f"posestream warmup: {build_decoder_aot()}", flush=True)
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        t0 = time.perf_counter()
        _, _, desc = load_network(InferConfig(model=args.model, input_size=size))
        print(f"posestream warmup: {size} px: {desc.split(', ', 1)[-1]} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0
