"""ONNX export with embedded metadata and a parity check against PyTorch.

The exported graph has one input ``image`` (B, 3, H, W) and the model's eval outputs
(``heatmaps`` [, ``pafs``]), with dynamic batch, height and width. With ``graph_decode`` a bottom-up
model also gets the decoder's upsampling and peak NMS as layers (``models/decode_head.py``:
outputs ``heatmaps_up``, ``peak_scores``, ``peak_index`` after the two). The model's metadata (the same
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

__all__ = ["export_onnx", "read_onnx_meta", "ExportError", "parity_check", "onnx_session", "TOLERANCE"]

TOLERANCE = 1e-3
META_KEY = "posestream"


class ExportError(Exception):
    """Export failed or the exported graph does not match PyTorch."""


# bumped when the exported graph changes for the same weights (caches of exports key on it)
EXPORT_REVISION = 3  # 2: Pad -> Conv fusion; 3: decoding in the graph


def output_names(model) -> list[str]:
    if getattr(model, "output_names", None):  # a network with other outputs (the bench's reference)
        return list(model.output_names)
    return ["heatmaps", "pafs"] if model.with_pafs else ["heatmaps"]


def export_onnx(model, path: str | os.PathLike, input_hw: tuple[int, int] | None = None, opset: int = 17,
                meta: dict | None = None, check: bool = True, graph_decode: bool = False) -> dict:
    """Export ``model`` (eval mode) to ``path``; returns a report (parity error, sizes).

    Args:
        graph_decode: add the decoding head (bottom-up models whose stride is a multiple of the
            decoder's working stride; others are exported as they are).
        input_hw: size of the tracing input (default: the model's standard input).
        meta: metadata to embed (default: ``model.meta()``).
        check: run :func:`parity_check` on a second input size and raise ``ExportError`` above
            the tolerance.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if graph_decode and getattr(model, "with_pafs", False):
        from .decode_head import GraphDecoder, graph_factor
        from .fields import DecoderConfig

        if graph_factor(model.stride, DecoderConfig().working_stride):
            model = GraphDecoder(model, meta, DecoderConfig().working_stride).eval()
            meta = model.meta()
    h, w = input_hw or (model.input_size, model.input_size)
    import torch

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
    fused = fuse_pad_into_conv(proto)
    entry = proto.metadata_props.add()
    entry.key = META_KEY
    entry.value = json.dumps(meta if meta is not None else model.meta(), sort_keys=True)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    report = {"path": str(path), "size_mb": path.stat().st_size / 2**20, "opset": opset, "outputs": names,
              "pads_fused": fused}
    if check:
        m = model.input_multiple
        check_hw = (h + m, w + 2 * m)  # another size than the traced one: the axes must be dynamic
        report.update(parity_check(model, path, check_hw))
        if report["max_abs_err"] > report["tolerance"]:
            raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {report['max_abs_err']:.3g} "
                              f"(tolerance {report['tolerance']:.3g})")
    return report


def _constant_value(graph, name: str):
    """The value of tensor ``name`` when it depends on initializers and constants only, else None."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = {i.name: i for i in graph.initializer}
    if name in inits:
        return numpy_helper.to_array(inits[name])
    producer = {o: n for n in graph.node for o in n.output}
    graph_inputs = {i.name for i in graph.input}
    nodes, needed, todo = [], set(), [name]
    while todo:
        t = todo.pop()
        if t in needed or t == "":
            continue
        needed.add(t)
        if t in inits:
            continue
        if t in graph_inputs or t not in producer:
            return None
        n = producer[t]
        if n not in nodes:
            nodes.append(n)
        todo.extend(n.input)
    order = [n for n in graph.node if n in nodes]
    sub = helper.make_graph(order, "pads", [], [helper.make_tensor_value_info(name, 0, None)],
                            [inits[t] for t in needed if t in inits])
    model = helper.make_model(sub, opset_imports=[helper.make_opsetid("", 17)])
    return ReferenceEvaluator(model).run(None, {})[0]


def fuse_pad_into_conv(proto) -> int:
    """Fold ``Pad(constant 0, spatial only) -> Conv`` into the Conv's own (asymmetric) ``pads``.

    PyTorch convolutions only pad symmetrically, so TF-"SAME" stride-2 layers (``movenet_paf``)
    are a ``F.pad`` then a convolution; as separate ONNX nodes the Pad blocks ONNX Runtime's
    blocked-layout (NCHWc) convolutions and adds layout reorders around every such layer.
    Returns the number of Pad nodes removed (the export's parity check verifies the result)."""
    from onnx import helper

    g = proto.graph
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    removed = []
    for pad in [n for n in g.node if n.op_type == "Pad"]:
        mode = next((helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
        users = consumers.get(pad.output[0], [])
        if mode != b"constant" or len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != pad.output[0]:
            continue
        if len(pad.input) > 2 and pad.input[2]:
            value = _constant_value(g, pad.input[2])
            if value is None or np.any(value != 0):
                continue
        pads = _constant_value(g, pad.input[1])
        if pads is None or pads.size != 8 or np.any(pads < 0) or np.any(pads[[0, 1, 4, 5]] != 0):
            continue
        conv = users[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        old = list(attrs.get("pads", [0, 0, 0, 0]))
        new = [old[0] + int(pads[2]), old[1] + int(pads[3]), old[2] + int(pads[6]), old[3] + int(pads[7])]
        for a in list(conv.attribute):
            if a.name == "pads":
                conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        removed.append(pad)
    if not removed:
        return 0
    for n in removed:
        g.node.remove(n)
    # drop what only fed the removed Pads (their pads computations)
    live = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(i for i in n.input if i)
    dead = [n for n in g.node if n not in keep]
    for n in dead:
        g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    return len(removed)


# whether ONNX Runtime's intra-op threads spin-wait between calls (its default); the pipeline's
# inference sets it from ``infer.spin`` (off: see stream.infer.InferConfig)
ORT_SPINNING = True


def onnx_session(path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None,
                 spinning: bool | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    if not (ORT_SPINNING if spinning is None else spinning):
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def parity_check(model, path: str | os.PathLike, input_hw: tuple[int, int], batch: int = 2, seed: int = 0) -> dict:
    """Max abs difference between PyTorch and ONNX Runtime (CPU) on a random input."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *input_hw, generator=g)
    with torch.no_grad():
        ref = [t.numpy() for t in model.eval()(x)]
    got = onnx_session(path).run(None, {"image": x.numpy()})
    if len(got) != len(ref) or any(a.shape != b.shape for a, b in zip(got, ref)):
        raise ExportError(f"{path}: ONNX outputs {[a.shape for a in got]} vs PyTorch {[b.shape for b in ref]}")
    if len(got) == 5:  # decoding in the graph: the peak lists are checked against the runtime's own maps
        bad = peak_list_error(*got[2:])
        if bad:
            raise ExportError(f"{path}: {bad}")
    err = max(float(np.abs(a - b).max()) for a, b in zip(maps(got), maps(ref)))
    scale = max(1.0, max(float(np.abs(b).max()) for b in maps(ref)))
    return {"max_abs_err": err, "tolerance": TOLERANCE * scale, "check_input": [batch, 3, *input_hw]}


def maps(outputs):
    """The map outputs of a network run (what two runtimes can be compared on): all of them, or the
    first three of a graph-decoding export (its peak lists depend on exact ties and near-equal
    neighbours, so they are checked against its own maps instead: :func:`peak_list_error`)."""
    return list(outputs[:3]) if len(outputs) == 5 else list(outputs)


def peak_list_error(heat_up: np.ndarray, scores: np.ndarray, index: np.ndarray) -> str | None:
    """None when ``scores`` / ``index`` list 3x3 maxima of ``heat_up`` strongest first, then other
    cells pushed down by ``NOT_A_PEAK`` (see ``decode_head.py``); else what is wrong."""
    from .decode_head import NOT_A_PEAK

    b, k, h, w = heat_up.shape
    if index.min() < 0 or index.max() >= h * w:
        return f"peak_index outside 0..{h * w - 1}"
    at = np.take_along_axis(heat_up.reshape(b, k, h * w), index.astype(np.int64), 2)
    peak = scores == at
    if not np.allclose(scores[~peak], at[~peak] - NOT_A_PEAK, rtol=0, atol=NOT_A_PEAK * 1e-5):
        return "peak_scores are neither the heatmap values at peak_index nor those values less NOT_A_PEAK"
    if (np.diff(scores, axis=2) > 0).any():
        return "peak_scores are not in descending order"
    pad = np.pad(heat_up, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    iy, ix = np.divmod(index.astype(np.int64), w)
    bi, ki = np.indices(index.shape[:2])
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            nb = pad[bi[..., None], ki[..., None], iy + dy, ix + dx]
            if (nb[peak] > scores[peak]).any():
                return "a peak candidate is not a 3x3 maximum"
    return None


def _varint(buf, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _metadata_props(path: str | os.PathLike) -> dict[str, str]:
    """``ModelProto.metadata_props`` (field 14) read straight from the file's protobuf wire format,
    skipping the graph by its length: no session, no weights parsed (a few ms instead of building
    an ONNX Runtime session). ValueError when the bytes are not a well-formed message."""
    import mmap

    props: dict[str, str] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        i, n = 0, len(buf)
        while i < n:
            tag, i = _varint(buf, i)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _, i = _varint(buf, i)
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            elif wire == 2:
                size, i = _varint(buf, i)
                if i + size > n:
                    raise ValueError("truncated field")
                if field == 14:  # StringStringEntryProto: key = 1, value = 2
                    entry, j, end = {}, i, i + size
                    while j < end:
                        t, j = _varint(buf, j)
                        if t & 7 != 2:
                            raise ValueError("unexpected wire type in metadata_props")
                        m, j = _varint(buf, j)
                        entry[t >> 3] = bytes(buf[j:j + m]).decode()
                        j += m
                    props[entry.get(1, "")] = entry.get(2, "")
                i += size
            else:
                raise ValueError(f"wire type {wire}")
            if field == 0:
                raise ValueError("field number 0")
    return props


def read_onnx_meta(path: str | os.PathLike) -> dict:
    """The posestream metadata embedded in an exported file (read from the file's bytes; a file
    where that fails or finds none goes through ONNX Runtime, whose errors say what is wrong)."""
    try:
        props = _metadata_props(path)
        if META_KEY in props:
            return json.loads(props[META_KEY])
    except (ValueError, OSError, UnicodeDecodeError, IndexError):
        pass
    sess = onnx_session(path)
    props = sess.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ExportError(f"{path}: not a posestream ONNX export (no '{META_KEY}' metadata)")
    return json.loads(props[META_KEY])
