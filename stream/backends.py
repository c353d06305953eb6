"""CPU inference backends, and the choice between them by measurement on this host (issue #15).

Candidates (each runs the same ONNX export):

* ``onnxruntime-fp32``: ONNX Runtime's CPU provider.
* ``openvino-fp32``: OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT = f32``.
* ``openvino-bf16``: the same in bfloat16; offered only on CPUs that have bf16 arithmetic
  (``avx512_bf16`` or ``amx_bf16`` in the CPU flags), where it is OpenVINO's own default.
* ``openvino-bf16-mixed``: the backbone in bf16 and the FPN, heads and decoding in fp32, as two
  compiled graphs (:func:`models.quantize.split_at_backbone`; OpenVINO's CPU plugin takes one
  inference precision per compiled model), the backbone's outputs handed over without a copy;
  offered where ``openvino-bf16`` is.
* ``onnxruntime-int8``, ``openvino-int8``: the mixed-precision INT8 graph of
  :mod:`models.quantize` (backbone in INT8, FPN, heads and decoding in float32, static ranges
  from training images); offered for models with ranges on x86 CPUs with AVX2: with 8-bit weights
  where the CPU has VNNI (``avx512_vnni``, ``avx_vnni`` or ``amx_int8``), else with 7-bit weights
  (without VNNI, 8-bit u8 x s8 products saturate in 16 bits).

``--backend auto`` on a CPU host: the first time a model runs at an input size on this host, a short
calibration (a few seconds) times every candidate on the same input, in rounds of short blocks (so
a noisy neighbour slows all alike), and compares its outputs with ONNX Runtime's. An fp32
candidate is eligible when its outputs agree within ``FP32_TOLERANCE`` (1e-3 on maps whose peaks
are ~1 and whose decoder thresholds are 0.05-0.1: different kernels reassociate sums and differ by
~1e-5; a wrong graph differs by ~1e-1). A reduced-precision candidate (bf16, int8) is never chosen on
its outputs alone: only when ``posestream bench backends --ap`` has measured its held-out AP
(coco-mini val2017) within ``MAX_AP_LOSS`` (0.005) of fp32 on this host and recorded it. The
fastest eligible candidate wins; the measurement and the choice are cached per host (CPU model,
flags, threads, library versions) and model (the ONNX file's hash) in
``<cache>/backends/<key>.json`` and printed at start. ``--backend`` / ``--precision`` force one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

LOG = logging.getLogger(__name__)

__all__ = ["CANDIDATES", "FP32_TOLERANCE", "MAX_AP_LOSS", "cpu_flags", "cpu_name", "available", "make_runner",
           "calibrate", "BackgroundCalibration", "choose", "record_ap", "candidate_name"]

CANDIDATES = ("onnxruntime-fp32", "openvino-fp32", "openvino-bf16", "openvino-bf16-mixed", "onnxruntime-int8",
              "openvino-int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # u8 x s8 dot products without 16-bit saturation
INT8_BASE = "avx2"  # without VNNI: INT8 with 7-bit weights
FP32_TOLERANCE = 1e-3
MAX_AP_LOSS = 0.005
# the flags that decide what a candidate can do (and so belong in the host's cache key)
_KEY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def key_flags(flags: set[str] | None = None) -> list[str]:
    """The flags among those that matter here that this CPU has (for printing beside numbers)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in _KEY_FLAGS if f in flags]


def _has_openvino() -> bool:
    """Whether OpenVINO is installed (found, not imported: importing it costs ~0.15 s of start-up
    on a host where ONNX Runtime was chosen)."""
    import importlib.util

    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


def available(flags: set[str] | None = None, onnx_path=None) -> list[str]:
    """The candidates this host can run (with ``onnx_path``: for that model; INT8 needs its ranges)."""
    flags = cpu_flags() if flags is None else flags
    int8 = _int8_cpu(flags) and (onnx_path is None or _int8_ranges(onnx_path) is not None)
    out = ["onnxruntime-fp32"] + (["onnxruntime-int8"] if int8 else [])
    if _has_openvino():
        out.append("openvino-fp32")
        if any(f in flags for f in BF16_FLAGS):
            out += ["openvino-bf16", "openvino-bf16-mixed"]
        if int8:
            out.append("openvino-int8")
    return out


def _int8_cpu(flags: set[str]) -> bool:
    return INT8_BASE in flags or any(f in flags for f in INT8_FLAGS)


def int8_reduce_range(flags: set[str] | None = None) -> bool:
    """7-bit INT8 weights: on x86 CPUs without VNNI."""
    flags = cpu_flags() if flags is None else flags
    return not any(f in flags for f in INT8_FLAGS)


def _int8_ranges(onnx_path):
    from posestream.models.quantize import ranges_for

    return ranges_for(onnx_path)


def why_not_available(name: str, flags: set[str] | None = None, onnx_path=None) -> str:
    """Why this host cannot run candidate ``name`` (one phrase)."""
    flags = cpu_flags() if flags is None else flags
    if name.startswith("openvino") and not _has_openvino():
        return "OpenVINO is not installed (pip install openvino)"
    if "-bf16" in name:
        return "this CPU has no bf16 arithmetic (no avx512_bf16 / amx_bf16 flag)"
    if name.endswith("-int8") and not _int8_cpu(flags):
        return "INT8 needs an x86 CPU with AVX2 or VNNI"
    if name.endswith("-int8"):
        return "this model has no INT8 calibration ranges (posestream quantize --model M --calib DIR)"
    return "not available"


def candidate_name(backend: str, precision: str) -> str:
    return f"{backend}-{precision}"


def make_runner(name: str, onnx_path: str | os.PathLike, threads: int | None = None,
                cache_dir: str | os.PathLike | None = None) -> Callable:
    """``run(x (B, 3, H, W) float32) -> tuple of outputs`` for candidate ``name``.

    ValueError (one line) for a candidate this host cannot run."""
    backend, _, precision = name.partition("-")
    if name not in CANDIDATES:
        raise ValueError(f"unknown backend/precision {name!r}; known: {', '.join(CANDIDATES)}")
    if name not in available(onnx_path=onnx_path if precision == "int8" else None):
        raise ValueError(f"{name} cannot run here: {why_not_available(name, onnx_path=onnx_path)}")
    if precision == "int8":
        from posestream.models.quantize import QuantizeError, build_int8

        try:
            onnx_path = build_int8(onnx_path, reduce_range=int8_reduce_range())
        except QuantizeError as e:
            raise ValueError(f"{name}: {e}") from None
    if backend == "onnxruntime":
        from posestream.models.export import onnx_session

        sess = onnx_session(onnx_path, threads=threads)

        def run(x: np.ndarray):
            return tuple(sess.run(None, {"image": x}))

        return run
    if precision == "bf16-mixed":
        from posestream.models.quantize import QuantizeError

        try:
            return split_runner(onnx_path, "bf16", threads, cache_dir)
        except QuantizeError as e:
            raise ValueError(f"{name}: {e}") from None
    core = _core()
    # int8: the graph's Q/DQ decide; the layers between them stay f32 (not OpenVINO's bf16 default)
    config = _ov_config("bf16" if precision == "bf16" else "f32", threads, cache_dir)
    requests: dict[tuple, object] = {}

    def run(x: np.ndarray):
        req = requests.get(x.shape)
        if req is None:  # one static-shape compilation per input shape (a letterbox has one)
            model = core.read_model(str(onnx_path))
            model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
            req = requests[x.shape] = core.compile_model(model, "CPU", config).create_infer_request()
        req.infer({0: np.ascontiguousarray(x, np.float32)})
        return tuple(np.array(req.get_output_tensor(i).data) for i in range(len(req.model_outputs)))

    return run


def _ov_config(precision: str, threads: int | None, cache_dir) -> dict:
    """OpenVINO CPU settings; with ``cache_dir``, compiled blobs (a second start skips compiling)."""
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if cache_dir is not None:
        Path(cache_dir, "openvino").mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(Path(cache_dir, "openvino"))
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def split_runner(onnx_path, backbone_precision: str, threads: int | None = None, cache_dir=None) -> Callable:
    """OpenVINO with the backbone compiled in ``backbone_precision`` ("bf16"; "f32" in tests) and
    the rest of the graph in f32; the rest's inputs are the backbone's output tensors themselves."""
    from posestream.models.quantize import split_at_backbone

    part_a, part_b = split_at_backbone(onnx_path)
    core = _core()
    pairs: dict[tuple, tuple] = {}

    def build(shape):
        ma = core.read_model(str(part_a))
        ma.reshape({ma.inputs[0].get_any_name(): list(shape)})
        ca = core.compile_model(ma, "CPU", _ov_config(backbone_precision, threads, cache_dir))
        mb = core.read_model(str(part_b))
        shapes = {o.get_any_name(): o.get_partial_shape() for o in ca.outputs}
        mb.reshape({i.get_any_name(): shapes[i.get_any_name()] for i in mb.inputs})
        cb = core.compile_model(mb, "CPU", _ov_config("f32", threads, cache_dir))
        ra, rb = ca.create_infer_request(), cb.create_infer_request()
        names = [i.get_any_name() for i in mb.inputs]
        return ra, rb, names

    def run(x: np.ndarray):
        pair = pairs.get(x.shape)
        if pair is None:
            pair = pairs[x.shape] = build(x.shape)
        ra, rb, names = pair
        ra.infer({0: np.ascontiguousarray(x, np.float32)})
        for n in names:
            rb.set_tensor(n, ra.get_tensor(n))
        rb.infer()
        return tuple(np.array(rb.get_output_tensor(i).data) for i in range(len(rb.model_outputs)))

    return run


_CORE = None


def _core():
    """One OpenVINO Core per process (each Core has its own thread pools)."""
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


def _file_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _versions() -> dict:
    import onnxruntime

    out = {"onnxruntime": onnxruntime.__version__}
    if _has_openvino():
        import openvino

        out["openvino"] = openvino.__version__
    return out


def cache_path(onnx_path, size: int, threads: int | None, cache_dir) -> Path:
    host = {"cpu": cpu_name(), "flags": key_flags(), "threads": threads or os.cpu_count(), **_versions()}
    model = [_file_hash(Path(onnx_path))]
    if _int8_cpu(set(host["flags"])):  # the INT8 candidates' graph follows its ranges
        ranges = _int8_ranges(onnx_path)
        model.append(None if ranges is None else _file_hash(Path(ranges)))
    key = hashlib.sha1(json.dumps([host, *model, int(size)], sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "backends" / f"{key}.json"


def _time_candidates(runners: dict[str, Callable], x: np.ndarray, rounds: int, block: int = 4) -> dict[str, float]:
    """Median ms per candidate, timed in rounds of blocks: in each round every candidate runs one
    untimed call then ``block`` timed ones, so that noise hits all alike while no candidate is
    timed just after another's calls (ONNX Runtime's worker threads spin for a while after a
    run and would slow the next runtime down)."""
    times = {n: [] for n in runners}
    for _ in range(rounds):
        for n, run in runners.items():
            run(x)
            for _ in range(block):
                t0 = time.perf_counter()
                run(x)
                times[n].append((time.perf_counter() - t0) * 1e3)
    return {n: float(np.median(v)) for n, v in times.items()}


def _cached(path: Path, candidates) -> dict | None:
    """The cached record at ``path`` if it holds every candidate (None: absent, unreadable or partial)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not set(candidates) <= set(rec.get("results", {})):
        return None
    rec["cached"], rec["path"] = True, str(path)
    return rec


def calibrate(onnx_path, size: int, threads: int | None = None, cache_dir=None, rounds: int = 4,
              candidates: list[str] | None = None, force: bool = False) -> dict:
    """Time every candidate at ``size`` and compare its outputs with ONNX Runtime fp32's; cached.

    Returns the record: ``{"host", "model", "size", "results": {name: {"ms", "max_abs_diff"}},
    "chosen", "cached": bool, "path"}``."""
    path = cache_path(onnx_path, size, threads, cache_dir) if cache_dir is not None else None
    rec = None if path is None or force else _cached(path, candidates or available(onnx_path=onnx_path))
    if rec is not None:
        rec["chosen"] = choose(rec)
        return rec
    names = list(candidates or available(onnx_path=onnx_path))
    if "onnxruntime-fp32" not in names:
        names.insert(0, "onnxruntime-fp32")  # the reference
    from posestream.models.export import maps

    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    runners, outs, failed = {}, {}, {}
    for n in names:  # one candidate that cannot be built or run is left out, not the whole measurement
        try:
            run = make_runner(n, onnx_path, threads, cache_dir)
            outs[n] = run(x)  # warm-up (compiles) and the outputs compared
            runners[n] = run
        except Exception as e:  # noqa: BLE001
            if n == "onnxruntime-fp32":
                raise
            failed[n] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
            LOG.warning("backend calibration: %s failed (%s); left out", n, failed[n])
    for run in runners.values():
        run(x)
    ms = _time_candidates(runners, x, rounds)
    ref = outs["onnxruntime-fp32"]
    results = {}
    for n in runners:
        diff = max(float(np.abs(a - b).max()) for a, b in zip(maps(outs[n]), maps(ref)))
        results[n] = {"ms": round(ms[n], 3), "max_abs_diff": diff}
    for n, why in failed.items():  # recorded (so a cached record is complete), never eligible
        results[n] = {"ms": 1e9, "max_abs_diff": 1e9, "error": why}
    old = {}
    if path is not None and path.is_file():
        try:
            old = json.loads(path.read_text()).get("results", {})
        except (OSError, ValueError):
            old = {}
    for n, r in results.items():  # keep AP records measured before
        for k in ("ap", "ap_fp32"):
            if k in old.get(n, {}):
                r[k] = old[n][k]
    rec = {"host": {"cpu": cpu_name(), "flags": key_flags(), "threads": threads or os.cpu_count(), **_versions()},
           "model": str(onnx_path), "size": int(size), "results": results}
    rec["chosen"] = choose(rec)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        tmp.replace(path)
    rec["cached"], rec["path"] = False, None if path is None else str(path)
    return rec


def calibrate_isolated(onnx_path, size: int, threads: int | None, cache_dir, candidates: list[str]) -> dict:
    """:func:`calibrate` in a child process (the cached record is read here when there is one).

    The measurement loads every candidate runtime; doing it in a child keeps the runtimes that
    are not chosen out of the caller's process (OpenVINO's thread pools in a process that later
    forks DataLoader workers and subprocesses crashed a test run), and a candidate that crashes
    cannot take the caller down. If the child fails, ONNX Runtime fp32 is used and the reason
    logged."""
    import subprocess

    path = cache_path(onnx_path, size, threads, cache_dir)
    rec = _cached(path, candidates)
    if rec is not None:
        return rec
    try:
        r = subprocess.run(_calibration_command(onnx_path, size, threads, cache_dir, candidates), capture_output=True,
                           text=True, timeout=300)
        ok = r.returncode == 0 and path.is_file()
        why = f"exit status {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1][:200]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        ok, why = False, str(e)
    if not ok:
        LOG.warning("backend calibration failed (%s): using onnxruntime-fp32", why)
        return {"size": int(size), "results": {"onnxruntime-fp32": {"ms": 0.0, "max_abs_diff": 0.0}},
                "chosen": "onnxruntime-fp32", "cached": False, "path": None, "error": why}
    rec = json.loads(path.read_text())
    rec["cached"], rec["path"] = False, str(path)
    return rec


def _calibration_command(onnx_path, size: int, threads: int | None, cache_dir, candidates) -> list[str]:
    import sys

    return [sys.executable, "-m", "posestream.stream.backends",
            json.dumps({"onnx": str(onnx_path), "size": int(size), "threads": threads, "cache_dir": str(cache_dir),
                        "candidates": list(candidates)})]


class _MovingRunner:
    """A runner that serves ONNX Runtime fp32 at once while a child process prepares something
    (``cmd``), then moves to another candidate between two calls: the new runtime is built and run
    once on the last input's shape in a thread while the current one keeps serving, then it
    replaces it. Subclasses decide, in :meth:`_finished`, where to move. ``name``: the candidate
    serving now; ``done``: the child has finished and any move is complete."""

    def __init__(self, onnx_path, threads: int | None, cache_dir, cmd: list[str]) -> None:
        import subprocess
        import tempfile
        import threading

        self.onnx_path, self.threads, self.cache_dir = onnx_path, threads, cache_dir
        self.name = "onnxruntime-fp32"
        self._run = make_runner(self.name, onnx_path, threads, cache_dir)
        self._lock = threading.Lock()
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err)
        self._thread = None
        self._shape = None
        self.done = False

    def __call__(self, x: np.ndarray):
        self._shape = x.shape
        if not self.done and self._thread is None and self._proc.poll() is not None:
            self._finished()
        with self._lock:
            run = self._run
        return run(x)

    def wait(self, timeout: float = 300.0) -> None:
        """Block until the child and any move are done (tests, benchmarks)."""
        self._proc.wait(timeout)
        if self._thread is None and not self.done:
            self._finished()
        if self._thread is not None:
            self._thread.join(timeout)

    def _finished(self) -> None:
        raise NotImplementedError

    def _child_error(self) -> str:
        self._err.seek(0)
        return (self._err.read().decode(errors="replace").strip().splitlines() or [""])[-1][:200]

    def _move(self, name: str) -> None:
        import threading

        self._thread = threading.Thread(target=self.adopt, args=(name,), name="posestream-backend-switch", daemon=True)
        self._thread.start()

    def adopt(self, name: str) -> None:
        """Build ``name``'s runner, run it once on the current shape, then serve with it."""
        try:
            run = make_runner(name, self.onnx_path, self.threads, self.cache_dir)
            if self._shape is not None:
                run(np.zeros(self._shape, np.float32))
        except Exception as e:  # noqa: BLE001 - a candidate that fails to build leaves the working one in place
            LOG.warning("backend: could not move to %s (%s): staying on %s", name, e, self.name)
        else:
            with self._lock:
                self._run, self.name = run, name
            LOG.info("backend: now %s", name)
        self.done = True

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)


class BackgroundCalibration(_MovingRunner):
    """A runner that starts at once on ONNX Runtime fp32 while :func:`calibrate` runs in a child
    process, and moves to the candidate the calibration chose when it is done (issue #15: a cold
    start does not wait the seconds the measurement takes).

    The move happens between two calls: the new runtime is built and run once on the last input's
    shape (OpenVINO compiles per shape) in a thread while the current one keeps serving, then it
    replaces it. The calibration measures while the caller works, so both see the same load; its
    ratios are what decide, as in a quiet calibration. If the child fails, ONNX Runtime fp32 stays
    and the reason is logged. ``name``: the candidate serving now; ``done``: the calibration has
    finished and any move is complete."""

    def __init__(self, onnx_path, size: int, threads: int | None, cache_dir, candidates: list[str]) -> None:
        self.size, self.candidates = int(size), list(candidates)
        self.record: dict | None = None
        super().__init__(onnx_path, threads, cache_dir,
                         _calibration_command(onnx_path, size, threads, cache_dir, candidates))

    def _finished(self) -> None:
        path = cache_path(self.onnx_path, self.size, self.threads, self.cache_dir)
        rc = self._proc.returncode
        try:
            if rc != 0:
                raise OSError(f"exit status {rc}")
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            last = self._child_error()
            LOG.warning("backend calibration failed (%s%s): staying on onnxruntime-fp32", e, f": {last}" if last else "")
            self.done = True
            return
        rec["cached"] = False
        results = {n: r for n, r in rec["results"].items() if n in self.candidates}
        name = choose({"results": results})
        self.record = {**rec, "results": results, "chosen": name}
        LOG.info("backend: calibration done: %s", summary(self.record))
        if name == self.name:
            self.done = True
            return
        self._move(name)


def int8_built(onnx_path) -> bool:
    """Whether this host's INT8 graph of ``onnx_path`` is already built (a start can use it at once)."""
    from posestream.models.quantize import int8_path

    ranges = _int8_ranges(onnx_path)
    return ranges is not None and int8_path(onnx_path, ranges, int8_reduce_range()).is_file()


class DeferredInt8(_MovingRunner):
    """A forced INT8 candidate whose graph is not built yet (a cold start): serve ONNX Runtime
    fp32 at once while a child process quantizes (~3 s), then move to the INT8 runner between two
    calls. If the build fails, fp32 stays and the reason is logged."""

    def __init__(self, target: str, onnx_path, threads: int | None, cache_dir) -> None:
        import sys

        self.target = target
        cmd = [sys.executable, "-m", "posestream.models.quantize", str(onnx_path)]
        super().__init__(onnx_path, threads, cache_dir, cmd + (["--reduce-range"] if int8_reduce_range() else []))

    def _finished(self) -> None:
        if self._proc.returncode != 0:
            LOG.warning("INT8 graph build failed (exit status %s: %s): staying on onnxruntime-fp32",
                        self._proc.returncode, self._child_error())
            self.done = True
            return
        self._move(self.target)


def eligible(name: str, r: dict) -> tuple[bool, str]:
    """(may ``--backend auto`` choose it, why not)."""
    if "error" in r:
        return False, f"failed: {r['error']}"
    if name.endswith("-fp32"):
        if r["max_abs_diff"] <= FP32_TOLERANCE:
            return True, ""
        return False, f"outputs differ by {r['max_abs_diff']:.2g} > {FP32_TOLERANCE:g}"
    if "ap" in r and "ap_fp32" in r:
        loss = r["ap_fp32"] - r["ap"]
        if loss <= MAX_AP_LOSS:
            return True, ""
        return False, f"costs {loss:.3f} AP (> {MAX_AP_LOSS})"
    return False, "reduced precision, AP not measured (posestream bench backends --ap)"


def choose(rec: dict) -> str:
    """The fastest eligible candidate of a calibration record."""
    ok = [(r["ms"], n) for n, r in rec["results"].items() if eligible(n, r)[0]]
    return min(ok)[1] if ok else "onnxruntime-fp32"


def summary(rec: dict) -> str:
    """One line: what was chosen and why (printed at start)."""
    parts = []
    for n, r in sorted(rec["results"].items(), key=lambda kv: kv[1]["ms"]):
        ok, why = eligible(n, r)
        parts.append(f"{n} {'-' if 'error' in r else format(r['ms'], '.1f')} ms" + ("" if ok else f" (not used: {why})"))
    how = "cached" if rec.get("cached") else "measured now"
    return f"{rec['chosen']} at {rec['size']} px, fastest eligible ({how}: {'; '.join(parts)})"


def record_ap(onnx_path, size: int, threads: int | None, cache_dir, aps: dict[str, float]) -> Path:
    """Store held-out AP per candidate (and fp32's as the reference) in the host's record."""
    path = cache_path(onnx_path, size, threads, cache_dir)
    rec = json.loads(path.read_text())
    ref = aps.get("onnxruntime-fp32")
    for n, ap in aps.items():
        if n in rec["results"]:
            rec["results"][n]["ap"] = float(ap)
            if ref is not None:
                rec["results"][n]["ap_fp32"] = float(ref)
    rec["chosen"] = choose(rec)
    path.write_text(json.dumps(rec, indent=1))
    return path


if __name__ == "__main__":  # the child of calibrate_isolated
    import sys

    a = json.loads(sys.argv[1])
    calibrate(a["onnx"], a["size"], a["threads"], a["cache_dir"], candidates=a["candidates"])
