"""INT8 with mixed precision: the backbone in INT8, the FPN, the heads and the decoding in float32
(issue #15).

The graph is ONNX Runtime's static QDQ quantization of the float32 export: u8 activations, s8
per-channel weights, MinMax ranges calibrated on training images. Only the backbone's blocks
(``/model/backbone/`` outside ``fpn/``: ~80 % of the FLOPs) are quantized. Measured on the shipped
model (held-out AP on coco-mini val2017, the quantized graph run with ONNX Runtime's optimizations
off so that Q/DQ are applied as written, i.e. exactly the INT8 rounding without any CPU's kernels):
everything but the decoding in INT8 0.146; the backbone with its FPN 0.146; the backbone without
the FPN **0.296** against fp32's 0.304 (7-bit weights: 0.288); adding any one FPN layer back costs 0.005–0.14 (the
2 × upsampled sums of the laterals are where 8 bits are too few).

The ranges come from :func:`calibrate_ranges` (MinMax over letterboxed training images) and are
stored as ONNX Runtime's calibration cache (JSON, tens of kB). The shipped model's ranges are in
``models/weights/<arch>.int8-ranges.json`` (made by ``posestream quantize`` on 64 ``pseudo/``
training images, never on the validation set), so a host builds its INT8 graph from them in
~3 s without images; ``posestream quantize --calib DIR`` makes them for any other checkpoint.
A graph is built once per (export, ranges) and cached beside the export.

The u8 x s8 kernels saturate on x86 CPUs without VNNI (``VPMADDUBSW`` adds two products in 16
bits: measured on an AVX2 EPYC, the real kernels' heatmaps correlate 0.36 with the exact INT8
result). So where ``avx512_vnni``, ``avx_vnni`` or ``amx_int8`` is missing, :mod:`stream.backends`
builds the graph with 7-bit weights (``reduce_range``: 255 x 64 x 2 fits in 16 bits; correlation
0.996 with its exact result), which costs more AP (0.288 against 0.296 with 8 bits, fp32 0.304).
Like bf16, an INT8 candidate is chosen automatically only after its held-out AP was measured on
the host within 0.005 of fp32.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

__all__ = ["quantized_nodes", "calibrate_ranges", "build_int8", "int8_path", "shipped_ranges", "ranges_for",
           "QuantizeError"]

LOG = logging.getLogger(__name__)
WEIGHTS = Path(__file__).resolve().parent / "weights"


class QuantizeError(Exception):
    """The INT8 graph cannot be built (one line: what and why)."""


def quantized_nodes(model) -> list[str]:
    """The names of the nodes that run in INT8: the backbone's, not its FPN's (see the module doc)."""
    return [n.name for n in model.graph.node
            if n.name.startswith("/model/backbone/") and not n.name.startswith("/model/backbone/fpn/")
            and n.op_type != "Constant"]


def _load(onnx_path):
    import onnx

    return onnx.load(str(onnx_path))


def image_input(path, size: int, meta: dict | None = None):
    """(1, 3, H, W) float32 of an image file, letterboxed and normalised as the pipeline feeds the
    network (``meta``: the model's mean/std; None: the shipped model's 0.5/0.5); None if unreadable."""
    import cv2

    from .preprocess import letterbox

    raw = cv2.imread(str(path))
    if raw is None:
        return None
    img, _ = letterbox(cv2.cvtColor(raw, cv2.COLOR_BGR2RGB), size, multiple=32)
    mean = np.asarray((meta or {}).get("mean", [0.5] * 3), np.float32) * 255.0
    inv = 1.0 / (np.asarray((meta or {}).get("std", [0.5] * 3), np.float32) * 255.0)
    return ((img.astype(np.float32) - mean) * inv).transpose(2, 0, 1)[None].copy()


def quantize(onnx_path, dst, nodes: list[str], cache, reader=None, reduce_range: bool = False) -> None:
    """ONNX Runtime's static QDQ quantization of ``nodes`` (u8 activations, s8 per-channel weights,
    MinMax): with ``reader``, calibrating first into the cache file ``cache``; without, from it."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    extra = {"CalibMovingAverage": True} if reader is not None else {}
    _quiet(lambda: quantize_static(str(onnx_path), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                                   reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                                   weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                                   calibrate_method=CalibrationMethod.MinMax, extra_options=extra,
                                   calibration_cache_path=str(cache)))


def calibrate_ranges(onnx_path, images: list[str], out: str | os.PathLike, size: int = 320) -> Path:
    """MinMax ranges of every tensor the INT8 nodes read or write, over ``images`` letterboxed to
    ``size`` as the pipeline feeds them (each image's min and max averaged over the images, which
    keeps one outlier from widening a range); written to ``out`` (ONNX Runtime's calibration
    cache, with what it was made from under ``posestream``)."""
    from onnxruntime.quantization import CalibrationDataReader

    if not images:
        raise QuantizeError("no calibration images")
    from .export import read_onnx_meta

    meta = read_onnx_meta(onnx_path)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(images)

        def get_next(self):
            for p in self.it:
                x = image_input(p, size, meta)
                if x is None:
                    LOG.warning("calibration: %s is not an image; skipped", p)
                    continue
                return {"image": x}
            return None

    model = _load(onnx_path)
    nodes = quantized_nodes(model)
    if not nodes:
        raise QuantizeError(f"{onnx_path}: no backbone nodes to quantize (INT8 needs a /model/backbone/ network)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="posestream-int8-") as tmp:
        cache = Path(tmp, "ranges.json")
        try:
            quantize(onnx_path, Path(tmp, "q.onnx"), nodes, cache, reader=Reader())
            rec = json.loads(cache.read_text())
        except (ValueError, RuntimeError, OSError, IndexError) as e:  # e.g. no readable image at all
            raise QuantizeError(f"calibration failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    # what the ranges were made for and from (ONNX Runtime's reader ignores the extra key)
    rec["posestream"] = {"weights": weights_digest(onnx_path), "images": len(images), "size": int(size),
                         "method": "MinMax, moving average", "int8": "backbone without its FPN"}
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp_out.write_text(json.dumps(rec))
    tmp_out.chmod(0o644)
    tmp_out.replace(out)  # a failed calibration leaves the old ranges; a reader never sees half a file
    return out


_DIGESTS: dict = {}


def weights_digest(onnx_path) -> str:
    """A digest of a graph's weights (the initializers' bytes, in name-independent order): the
    shipped ranges are used only for an export of the weights they were calibrated on. Computing
    it reads the whole graph (~0.3 s), so it is kept beside the export (``<export>.digest``, keyed
    by the file's size and mtime) and a later start reads 40 bytes (without importing onnx)."""
    st = os.stat(onnx_path)
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    key = (str(onnx_path), stamp)
    if key in _DIGESTS:
        return _DIGESTS[key]
    side = Path(str(onnx_path) + ".digest")
    try:
        got_stamp, digest = side.read_text().rsplit(" ", 1)
        if got_stamp == stamp:
            _DIGESTS[key] = digest
            return digest
    except (OSError, ValueError):
        pass
    from onnx import numpy_helper

    parts = sorted(hashlib.sha1(t.raw_data if t.raw_data else numpy_helper.to_array(t).tobytes()).hexdigest()
                   for t in _load(onnx_path).graph.initializer)
    digest = _DIGESTS[key] = hashlib.sha1("".join(parts).encode()).hexdigest()[:16]
    try:
        tmp = side.with_name(f"{side.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{stamp} {digest}")
        tmp.replace(side)
    except OSError:  # a read-only folder: computed again next time
        pass
    return digest


def _quiet(fn):
    """Run ``fn`` with the quantizer's advice-level log lines (pre-processing hints) silenced."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        return fn()
    finally:
        root.setLevel(level)


def shipped_ranges(meta: dict | None = None, arch: str | None = None) -> Path | None:
    """The shipped ranges for a model (by its architecture name), if there are any."""
    arch = arch or (meta or {}).get("arch")
    p = WEIGHTS / f"{arch}.int8-ranges.json"
    return p if arch and p.is_file() else None


def _hash(*paths) -> str:
    h = hashlib.sha1()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def ranges_for(onnx_path) -> Path | None:
    """The ranges to quantize ``onnx_path`` with: made for this export by ``posestream quantize``
    (beside it), else the shipped ones when they were made for these weights; None otherwise."""
    from .export import read_onnx_meta

    own = Path(str(onnx_path)[:-len(".onnx")] + ".int8-ranges.json")
    for cand in (own, None):
        try:
            path = own if cand is not None else shipped_ranges(read_onnx_meta(onnx_path))
            if (path is not None and path.is_file()
                    and json.loads(path.read_text())["posestream"]["weights"] == weights_digest(onnx_path)):
                return path
        except Exception:  # noqa: BLE001 - unreadable, no metadata, or ranges for other weights: none
            pass
    return None


QUANT_REVISION = 1  # bumped when the INT8 graph changes for the same export and ranges (its cache name keys on it)


def int8_path(onnx_path, ranges, reduce_range: bool = False) -> Path:
    """Where the INT8 graph of ``onnx_path`` quantized with ``ranges`` is cached: named by the
    ranges, the export's weights and size, and the quantizer's revision, so a re-exported file at
    the same path never gets an old graph."""
    key = hashlib.sha1(f"{QUANT_REVISION} {_hash(ranges)} {weights_digest(onnx_path)} "
                       f"{os.path.getsize(onnx_path)}".encode()).hexdigest()[:12]
    return Path(f"{str(onnx_path)[:-len('.onnx')]}.int8-{key}{'-w7' if reduce_range else ''}.onnx")


def build_int8(onnx_path, ranges=None, reduce_range: bool = False) -> Path:
    """The INT8 graph of ``onnx_path`` (built on first use, then cached). ``reduce_range``: 7-bit
    weights, for x86 CPUs without VNNI (their u8 x s8 products then fit in 16 bits). QuantizeError
    (one line) when there are no ranges or they do not fit this export."""
    ranges = Path(ranges) if ranges is not None else ranges_for(onnx_path)
    if ranges is None:
        raise QuantizeError(f"{onnx_path}: no INT8 calibration ranges for this model "
                            "(posestream quantize --model M --calib DIR makes them)")
    dst = int8_path(onnx_path, ranges, reduce_range)
    if dst.is_file():
        return dst
    model = _load(onnx_path)
    nodes = quantized_nodes(model)
    try:
        known = set(json.loads(ranges.read_text()).get("data", {}))
    except (OSError, ValueError) as e:
        raise QuantizeError(f"{ranges}: unreadable calibration ranges ({e})") from None
    needed = {t for n in model.graph.node if n.name in set(nodes) for t in list(n.input[:1]) + list(n.output)}
    missing = sorted(needed - known)
    if not nodes or missing:
        raise QuantizeError(f"{ranges}: the ranges do not fit {Path(onnx_path).name} "
                            f"({len(missing)} of its tensors have none, e.g. {missing[:1]})")
    tmp = dst.with_suffix(f".{os.getpid()}.tmp")
    try:
        quantize(onnx_path, tmp, nodes, ranges, reduce_range=reduce_range)
    except TypeError as e:
        if "calibration_cache_path" not in str(e):
            raise
        import onnxruntime  # an onnxruntime without calibration_cache_path

        raise QuantizeError(f"INT8 needs onnxruntime >= 1.32 (this one is {onnxruntime.__version__})") from None
    tmp.replace(dst)
    return dst


def split_at_backbone(onnx_path) -> tuple[Path, Path]:
    """The graph cut in two where the backbone (the INT8 scope: ``/model/backbone/`` outside its
    FPN) ends: ``image -> the backbone's outputs`` and ``those -> the graph's outputs`` (cached
    beside the export). For runtimes that take one precision per compiled graph (OpenVINO's
    bf16): the backbone in bf16, the rest in fp32."""
    stem = str(onnx_path)[:-len(".onnx")]
    a, b = Path(stem + ".part-backbone.onnx"), Path(stem + ".part-rest.onnx")
    t = Path(onnx_path).stat().st_mtime_ns
    if a.is_file() and b.is_file() and a.stat().st_mtime_ns >= b.stat().st_mtime_ns >= t:
        return a, b
    import onnx
    from onnx.utils import Extractor
    model = onnx.shape_inference.infer_shapes(_load(onnx_path))
    inside = set(quantized_nodes(model))
    if not inside:
        raise QuantizeError(f"{onnx_path}: no backbone to run in another precision (no /model/backbone/ nodes)")
    made = [o for n in model.graph.node if n.name in inside for o in n.output]
    outputs = [o.name for o in model.graph.output]
    used = {i for n in model.graph.node if n.name not in inside and n.op_type != "Constant" for i in n.input}
    cut = [t for t in made if t in used or t in outputs]
    inputs = [i.name for i in model.graph.input]
    ex = Extractor(model)
    part_a = ex.extract_model(inputs, cut)
    part_b = ex.extract_model(cut + [i for i in inputs if _reaches(model, i, inside)], outputs)
    for part, path in ((part_b, b), (part_a, a)):  # the backbone last: it marks a complete pair
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        onnx.save(part, str(tmp))
        tmp.replace(path)
    return a, b


def _reaches(model, name: str, inside: set) -> bool:
    """Whether a node outside the backbone reads graph input ``name`` directly."""
    return any(name in n.input for n in model.graph.node if n.name not in inside)


if __name__ == "__main__":  # the child of stream.backends.DeferredInt8: build one INT8 graph
    import sys

    try:
        print(build_int8(sys.argv[1], reduce_range=sys.argv[2:3] == ["--reduce-range"]))
    except QuantizeError as e:
        sys.exit(f"posestream quantize: error: {e}")
