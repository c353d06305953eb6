"""INT8 with mixed precision (models/quantize.py): the backbone in INT8 from calibrated ranges, the
FPN, heads and decoding in fp32; offered on x86 CPUs (7-bit weights without VNNI) for weights with ranges."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posestream.models import quantize as Q
from posestream.models.commands.quantize import simulated_session
from posestream.models.quantize import image_input
from posestream.models.export import maps
from posestream.stream import backends as B
from posestream.stream.benches.tracking import _shared
from posestream.stream.infer import InferConfig, load_network, onnx_export_path

VAL = _shared() / "coco-mini" / "val2017"
TRAIN = _shared() / "pseudo" / "images"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """The shipped model's ONNX export, made the pipeline's way in a fresh cache."""
    cache = tmp_path_factory.mktemp("cache")
    cfg = InferConfig(backend="onnxruntime", cache_dir=str(cache))
    _, meta, _ = load_network(cfg)
    return Path(onnx_export_path(cfg, meta))


def _val_input():
    return image_input(str(sorted(VAL.glob("*.jpg"))[3]), 320)


def _weight_producers(model) -> dict[str, str]:
    """Conv node name -> op type of the node that feeds its weight (initializer: '')."""
    prod = {o: n.op_type for n in model.graph.node for o in n.output}
    return {n.name: prod.get(n.input[1], "") for n in model.graph.node if n.op_type == "Conv"}


def test_the_shipped_ranges_build_a_graph_with_only_the_backbone_in_int8(export):
    import onnx

    ranges = Q.ranges_for(export)
    assert ranges == Q.shipped_ranges(arch="movenet_paf")  # made for exactly these weights
    rec = json.loads(ranges.read_text())["posestream"]
    assert rec["weights"] == Q.weights_digest(export) and rec["images"] == 64
    q = Q.build_int8(export)
    assert q.parent == export.parent and q.is_file()
    mtime = q.stat().st_mtime_ns
    assert Q.build_int8(export) == q and q.stat().st_mtime_ns == mtime  # cached, not rebuilt
    feeds = _weight_producers(onnx.load(str(q)))
    backbone = [n for n in feeds if n.startswith("/model/backbone/") and "/fpn/" not in n]
    rest = [n for n in feeds if n not in backbone]
    assert len(backbone) >= 50 and len(rest) >= 10
    assert all(feeds[n] == "DequantizeLinear" for n in backbone)
    assert not any(feeds[n] == "DequantizeLinear" for n in rest)  # FPN, heads, decoding head: fp32
    # the INT8 rounding as written (no CPU's integer kernels): close to fp32 on a held-out image
    x = _val_input()
    ref, got = simulated_session(export).run(None, {"image": x}), simulated_session(q).run(None, {"image": x})
    corr = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(maps(ref), maps(got))]
    assert corr[0] > 0.85 and corr[1] > 0.5, corr
    assert float(np.abs(got[0] - ref[0]).max()) > 1e-3  # and it is not the fp32 graph


def test_int8_is_offered_on_avx2_or_vnni_and_only_with_ranges_for_these_weights(export, tmp_path):
    import onnx
    from onnx import numpy_helper

    assert "onnxruntime-int8" not in B.available(set(), onnx_path=export)
    assert "AVX2" in B.why_not_available("onnxruntime-int8", set(), onnx_path=export)
    assert "onnxruntime-int8" in B.available({"avx2"}, onnx_path=export) and B.int8_reduce_range({"avx2"})
    for flag in B.INT8_FLAGS:  # VNNI: 8-bit weights
        assert "onnxruntime-int8" in B.available({"avx2", flag}, onnx_path=export)
        assert not B.int8_reduce_range({"avx2", flag})
    # other weights (one tensor changed) do not get the shipped ranges
    m = onnx.load(str(export))
    t = m.graph.initializer[0]
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.01, t.name))
    other = tmp_path / "other.onnx"
    onnx.save(m, str(other))
    assert Q.ranges_for(other) is None
    assert "onnxruntime-int8" not in B.available({"amx_int8"}, onnx_path=other)
    assert "calibration ranges" in B.why_not_available("onnxruntime-int8", {"amx_int8"}, onnx_path=other)
    with pytest.raises(Q.QuantizeError, match="no INT8 calibration ranges"):
        Q.build_int8(other)


@pytest.mark.skipif("avx2" not in B.cpu_flags() or any(f in B.cpu_flags() for f in B.INT8_FLAGS),
                    reason="needs an x86 CPU with AVX2 and without VNNI")
def test_without_vnni_the_real_int8_kernels_compute_the_7_bit_graph_exactly(export):
    """8-bit weights saturate there (correlation 0.36 with the exact result, measured); 7-bit do not."""
    run = B.make_runner("onnxruntime-int8", export)
    q = Q.int8_path(export, Q.ranges_for(export), reduce_range=True)
    assert q.is_file() and q.name.endswith("-w7.onnx")
    x = _val_input()
    got, exact = run(x), simulated_session(q).run(None, {"image": x})
    corr = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(maps(got), maps(exact))]
    assert min(corr) > 0.97, corr
    with pytest.raises(ValueError, match="not torch"):
        InferConfig(precision="int8", backend="torch")


def test_int8_is_chosen_only_with_a_measured_ap_within_the_bound():
    rec = {"results": {"onnxruntime-fp32": {"ms": 24.0, "max_abs_diff": 0.0},
                       "onnxruntime-int8": {"ms": 13.0, "max_abs_diff": 0.6}}}
    assert B.choose(rec) == "onnxruntime-fp32"
    assert "AP not measured" in B.eligible("onnxruntime-int8", rec["results"]["onnxruntime-int8"])[1]
    rec["results"]["onnxruntime-int8"].update(ap=0.296, ap_fp32=0.304)
    assert B.choose(rec) == "onnxruntime-fp32"
    rec["results"]["onnxruntime-int8"].update(ap=0.300)
    assert B.choose(rec) == "onnxruntime-int8"


def test_quantize_command_calibrates_ranges_on_training_images(export, tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "posestream", "quantize", "--model", str(export), "--calib", str(TRAIN),
                        "--images", "4", "--out", str(out), "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["images"] == 4 and rep["ranges"] == str(out) and rep["corr_heatmaps"] > 0.8
    rec = json.loads(out.read_text())
    assert rec["posestream"]["weights"] == Q.weights_digest(export) and rec["posestream"]["images"] == 4
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert Path(rep["int8"]).is_file() and Path(rep["int8"]) == Q.int8_path(export, out)
    # the ranges made for one set of weights are checked against the graph they quantize
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, msg in ((["--calib", str(tmp_path / "nope")], "no such folder"), (["--calib", str(empty)], "no images")):
        r = subprocess.run([sys.executable, "-m", "posestream", "quantize", "--model", str(export), *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_ranges_that_do_not_fit_the_graph_are_refused(export, tmp_path):
    bad = tmp_path / "bad.json"
    rec = json.loads(Q.shipped_ranges(arch="movenet_paf").read_text())
    rec["data"] = dict(list(rec["data"].items())[:5])
    bad.write_text(json.dumps(rec))
    with pytest.raises(Q.QuantizeError, match="do not fit"):
        Q.build_int8(export, bad)


def test_the_split_graph_gives_the_whole_graphs_outputs(export):
    """bf16-mixed runs the backbone and the rest as two compiled graphs; with both in f32 (this
    test runs on any CPU) the pair must give exactly what the whole graph gives."""
    import onnx

    a, b = Q.split_at_backbone(export)
    ga, gb = onnx.load(str(a)).graph, onnx.load(str(b)).graph
    cut = [o.name for o in ga.output]
    assert [i.name for i in ga.input] == ["image"] and [i.name for i in gb.input] == cut and len(cut) == 4
    assert [o.name for o in gb.output] == ["heatmaps", "pafs", "heatmaps_up", "peak_scores", "peak_index"]
    assert all(n.name.startswith("/model/backbone/") and "/fpn/" not in n.name
               for n in ga.node if n.op_type != "Constant")
    x = _val_input()
    whole, split = B.make_runner("openvino-fp32", export), B.split_runner(export, "f32")
    for got, ref in zip(split(x), whole(x)):
        assert got.shape == ref.shape and float(np.abs(got - ref).max()) <= 1e-5
    x2 = np.ascontiguousarray(x[:, :, :256, :])  # another shape: compiled again, still exact
    assert all(float(np.abs(g - r).max()) <= 1e-5 for g, r in zip(split(x2), whole(x2)))
    assert Q.split_at_backbone(export) == (a, b)


@pytest.mark.skipif(any(f in B.cpu_flags() for f in B.BF16_FLAGS), reason="this CPU has bf16")
def test_bf16_mixed_needs_bf16_arithmetic(export):
    assert "openvino-bf16-mixed" in B.available({"avx512_bf16"}, onnx_path=export)
    with pytest.raises(ValueError, match="no bf16 arithmetic"):
        B.make_runner("openvino-bf16-mixed", export)
    with pytest.raises(ValueError, match="runs on OpenVINO"):
        InferConfig(precision="bf16-mixed", backend="onnxruntime")


@pytest.mark.skipif(not B._int8_cpu(B.cpu_flags()), reason="this CPU runs no INT8 candidate")
def test_a_cold_forced_int8_start_serves_fp32_at_once_then_moves_to_int8(tmp_path):
    cfg = InferConfig(backend="onnxruntime", precision="int8", cache_dir=str(tmp_path))
    run, meta, desc = load_network(cfg, background_calibration=True)
    assert isinstance(run, B.DeferredInt8) and "until the INT8 graph is built" in desc, desc
    assert run.name == "onnxruntime-fp32"
    x = _val_input()
    first = run(x)  # served at once, by fp32
    run.wait()
    assert run.name == "onnxruntime-int8" and run.done
    got = run(x)
    assert [a.shape for a in got] == [a.shape for a in first] and float(np.abs(got[0] - first[0]).max()) > 1e-3
    # the next start finds the graph built and uses it from the first frame
    run2, _, desc2 = load_network(cfg, background_calibration=True)
    assert not isinstance(run2, B.DeferredInt8) and "int8 [forced]" in desc2, desc2


def _other_weights(export, dst):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(export))
    t = m.graph.initializer[0]
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.01, t.name))
    onnx.save(m, str(dst))
    return dst


def test_a_re_exported_file_at_the_same_path_never_gets_the_old_int8_graph(export, tmp_path):
    import shutil

    m = tmp_path / "m.onnx"
    shutil.copy(export, m)
    ranges = Q.ranges_for(m)
    assert ranges is not None  # the shipped ranges: same weights
    first = Q.int8_path(m, ranges)
    _other_weights(export, m)  # the same path, other weights
    assert Q.ranges_for(m) is None and Q.int8_path(m, ranges) != first
    # ranges made beside an export are used only while its weights are the ones they were made for
    own = tmp_path / "m.int8-ranges.json"
    shutil.copy(ranges, own)
    assert Q.ranges_for(m) is None


def test_fast_presets_int8_falls_back_where_the_weights_have_no_ranges(export, tmp_path, caplog):
    other = _other_weights(export, tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="no INT8 calibration ranges|no VNNI|AVX2"):
        load_network(InferConfig(model=str(other), backend="onnxruntime", precision="int8"))
    with caplog.at_level("WARNING"):
        _, _, desc = load_network(InferConfig(model=str(other), backend="onnxruntime", precision="int8",
                                              int8_fallback=True))
    assert "fp32" in desc and "INT8 cannot run here" in caplog.text, desc


@pytest.mark.skipif(any(f in B.cpu_flags() for f in B.BF16_FLAGS), reason="this CPU has bf16")
def test_a_candidate_that_fails_is_recorded_and_left_out_not_the_whole_calibration(export, tmp_path):
    rec = B.calibrate(export, 128, cache_dir=tmp_path, rounds=1, candidates=["onnxruntime-fp32", "openvino-bf16"])
    assert rec["chosen"] == "onnxruntime-fp32" and "bf16" in rec["results"]["openvino-bf16"]["error"]
    assert not B.eligible("openvino-bf16", rec["results"]["openvino-bf16"])[0]
    again = B.calibrate(export, 128, cache_dir=tmp_path, candidates=["onnxruntime-fp32", "openvino-bf16"])
    assert again["cached"]  # complete: not measured again at every start
