"""ONNX export with embedded metadata and a parity check against PyTorch.

The exported graph has one input ``image`` (B, 3, H, W) and the model's eval outputs
(``heatmaps`` [, ``pafs``]), with dynamic batch, height and width. The model's metadata (the same
dict a checkpoint carries) is stored as JSON in the ONNX ``metadata_props`` under ``posestream``.

Parity tolerance: max |onnxruntime - torch| <= 1e-3 * max(1, max |torch|). Both run float32 but
with different convolution algorithms and summation orders; over the deepest model here (~60 conv
layers) the observed error stays around 1e-5 of the output scale, so the bound leaves ~100x
headroom while any wrongly exported operator (errors of 1e-2 and up) fails.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["export_onnx", "read_onnx_meta", "ExportError", "parity_check", "onnx_session", "TOLERANCE"]

TOLERANCE = 1e-3
META_KEY = "posestream"


class ExportError(Exception):
    """Export failed or the exported graph does not match PyTorch."""


def output_names(model) -> list[str]:
    return ["heatmaps", "pafs"] if model.with_pafs else ["heatmaps"]


def export_onnx(model, path: str | os.PathLike, input_hw: tuple[int, int] | None = None, opset: int = 17,
                meta: dict | None = None, check: bool = True) -> dict:
    """Export ``model`` (eval mode) to ``path``; returns a report (parity error, sizes).

    Args:
        input_hw: size of the tracing input (default: the model's standard input).
        meta: metadata to embed (default: ``model.meta()``).
        check: run :func:`parity_check` on a second input size and raise ``ExportError`` above
            the tolerance.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    h, w = input_hw or (model.input_size, model.input_size)
    x = torch.randn(1, 3, h, w)
    names = output_names(model)
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({n: {0: "batch", 2: "out_height", 3: "out_width"} for n in names})
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), str(tmp), dynamo=False, input_names=["image"], output_names=names,
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key = META_KEY
    entry.value = json.dumps(meta if meta is not None else model.meta(), sort_keys=True)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    report = {"path": str(path), "size_mb": path.stat().st_size / 2**20, "opset": opset, "outputs": names}
    if check:
        m = model.input_multiple
        check_hw = (h + m, w + 2 * m)  # another size than the traced one: the axes must be dynamic
        report.update(parity_check(model, path, check_hw))
        if report["max_abs_err"] > report["tolerance"]:
            raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {report['max_abs_err']:.3g} "
                              f"(tolerance {report['tolerance']:.3g})")
    return report


def onnx_session(path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def parity_check(model, path: str | os.PathLike, input_hw: tuple[int, int], batch: int = 2, seed: int = 0) -> dict:
    """Max abs difference between PyTorch and ONNX Runtime (CPU) on a random input."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *input_hw, generator=g)
    with torch.no_grad():
        ref = [t.numpy() for t in model.eval()(x)]
    got = onnx_session(path).run(None, {"image": x.numpy()})
    if len(got) != len(ref) or any(a.shape != b.shape for a, b in zip(got, ref)):
        raise ExportError(f"{path}: ONNX outputs {[a.shape for a in got]} vs PyTorch {[b.shape for b in ref]}")
    err = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
    scale = max(1.0, max(float(np.abs(b).max()) for b in ref))
    return {"max_abs_err": err, "tolerance": TOLERANCE * scale, "check_input": [batch, 3, *input_hw]}


def read_onnx_meta(path: str | os.PathLike) -> dict:
    """The posestream metadata embedded in an exported file."""
    sess = onnx_session(path)
    props = sess.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ExportError(f"{path}: not a posestream ONNX export (no '{META_KEY}' metadata)")
    return json.loads(props[META_KEY])
