"""Fill this host's caches so that the first ``posestream run`` starts fast: compile the package's
Python files to bytecode (an editable install has none, and with PYTHONDONTWRITEBYTECODE set every
process would compile them again at each start), compile the decoder's Numba kernels into their
on-disk cache, export the shipped model to ONNX and time the CPU backends
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


def warm_decoder() -> float:
    """Run the Numba decoder once on synthetic maps (compiles it into its cache): seconds taken."""
    import numpy as np

    from posestream.models.fields import decode, decode_graph, upsample
    from posestream.models.skeleton import COCO_17

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    heat = (rng.random((COCO_17.num_keypoints, 40, 40)) * 0.5).astype(np.float32)
    heat[:, 20, 20] = 1.0
    pafs = (rng.random((2 * len(COCO_17.limbs), 40, 40)) - 0.5).astype(np.float32)
    decode(heat, pafs, 8)
    up = upsample(heat, 4.0)  # and the grouping of a graph-decoding export (its candidate lists)
    index = np.argsort(-up.reshape(len(up), -1), axis=1, kind="stable")[:, :64]
    decode_graph(up, np.take_along_axis(up.reshape(len(up), -1), index, 1), index, pafs, 8)
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> int:
    from .infer import InferConfig, load_network

    print(f"posestream warmup: bytecode compiled ({compile_bytecode():.1f} s)", flush=True)
    print(f"posestream warmup: decoder kernels ready ({warm_decoder():.1f} s)", flush=True)
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        t0 = time.perf_counter()
        _, _, desc = load_network(InferConfig(model=args.model, input_size=size))
        print(f"posestream warmup: {size} px: {desc.split(', ', 1)[-1]} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0
