"""CPU backends (stream/backends.py): OpenVINO beside ONNX Runtime, the calibration that picks
one by measurement, its cache, and the rule that a reduced precision needs a measured AP."""
from __future__ import annotations

import json

import numpy as np
import pytest

from posestream.models.export import maps, peak_list_error
from posestream.stream import backends as B
from posestream.stream.infer import InferConfig, load_network


def test_candidates_follow_the_cpu_flags():
    assert B.available(set()) == ["onnxruntime-fp32", "openvino-fp32"]
    assert B.available({"avx512_bf16"})[-2:] == ["openvino-bf16", "openvino-bf16-mixed"]
    assert B.available({"amx_bf16"})[-2:] == ["openvino-bf16", "openvino-bf16-mixed"]


def test_openvino_fp32_matches_onnxruntime_on_the_shipped_model(tmp_path):
    ort_run, meta, desc = load_network(InferConfig(backend="onnxruntime", cache_dir=str(tmp_path)))
    ov_run, _, ov_desc = load_network(InferConfig(backend="openvino", cache_dir=str(tmp_path)))
    assert "ONNX Runtime" in desc and "OpenVINO CPU fp32" in ov_desc
    x = np.random.default_rng(1).standard_normal((1, 3, 320, 320)).astype(np.float32)
    a, b = ort_run(x), ov_run(x)
    assert [t.shape for t in a] == [t.shape for t in b]
    assert len(a) == 5 and meta["graph_decode"]["factor"] == 2  # the shipped export decodes in the graph
    # the maps agree; each runtime's peak lists are the maxima of its own upsampled heatmaps
    assert max(float(np.abs(p - q).max()) for p, q in zip(maps(a), maps(b))) <= B.FP32_TOLERANCE
    assert peak_list_error(*a[2:]) is None and peak_list_error(*b[2:]) is None


def test_estimator_on_openvino_finds_the_same_people(tmp_path):
    import cv2

    import posestream
    from posestream.stream.benches.tracking import _shared

    img = cv2.cvtColor(cv2.imread(str(_shared() / "coco-mini/val2017" / sorted(
        p.name for p in (_shared() / "coco-mini/val2017").iterdir())[0])), cv2.COLOR_BGR2RGB)
    with posestream.Estimator(backend="onnxruntime") as e1, posestream.Estimator(backend="openvino") as e2:
        p1, p2 = e1(img), e2(img)
    assert len(p1) == len(p2) > 0
    for a, b in zip(p1, p2):
        seen = a.keypoints[:, 2] > 0.1
        assert np.abs(a.keypoints[seen, :2] - b.keypoints[seen, :2]).max() < 1.0
        assert abs(a.score - b.score) < 0.01


def test_auto_measures_once_per_host_and_model_then_reads_the_cache(tmp_path):
    cfg = InferConfig(backend="auto", input_size=128, cache_dir=str(tmp_path))
    _, _, desc = load_network(cfg)
    assert "measured now" in desc, desc
    files = list((tmp_path / "backends").glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert set(rec["results"]) == set(B.available()) and rec["size"] == 128
    assert rec["chosen"].endswith("-fp32")   # a reduced precision is never chosen on outputs alone
    assert all(r["ms"] > 0 for r in rec["results"].values())
    assert rec["results"]["onnxruntime-fp32"]["max_abs_diff"] == 0.0
    _, _, again = load_network(cfg)
    assert "cached" in again and rec["chosen"] in again
    # another input size is another measurement
    load_network(InferConfig(backend="auto", input_size=96, cache_dir=str(tmp_path)))
    assert len(list((tmp_path / "backends").glob("*.json"))) == 2


def _rec(**bf16):
    return {"size": 320, "results": {"onnxruntime-fp32": {"ms": 23.0, "max_abs_diff": 0.0},
                                     "openvino-fp32": {"ms": 25.0, "max_abs_diff": 2e-5},
                                     "openvino-bf16": {"ms": 12.0, "max_abs_diff": 0.05, **bf16}}}


def test_the_fastest_eligible_wins_and_bf16_needs_a_measured_ap():
    assert B.choose(_rec()) == "onnxruntime-fp32"                       # bf16 faster, AP unknown
    assert B.choose(_rec(ap=0.293, ap_fp32=0.304)) == "onnxruntime-fp32"  # measured: costs 0.011
    assert B.choose(_rec(ap=0.301, ap_fp32=0.304)) == "openvino-bf16"     # within 0.005
    r = _rec()
    r["results"]["openvino-fp32"].update(ms=20.0)
    assert B.choose(r) == "openvino-fp32"
    r["results"]["openvino-fp32"].update(max_abs_diff=0.2)              # a wrong graph is never chosen
    assert B.choose(r) == "onnxruntime-fp32"
    assert "AP not measured" in B.summary({**_rec(), "chosen": "onnxruntime-fp32"})


def test_forced_choices_say_what_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match="bf16 runs on OpenVINO"):
        InferConfig(backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="precision must be"):
        InferConfig(precision="int4")
    monkeypatch.setattr(B, "cpu_flags", lambda: {"avx2"})
    with pytest.raises(ValueError, match="no bf16 arithmetic"):
        B.make_runner("openvino-bf16", "unused.onnx")
    with pytest.raises(ValueError, match="bf16 arithmetic"):
        load_network(InferConfig(backend="openvino", precision="bf16"))


def test_a_cold_pipeline_start_serves_at_once_and_moves_after_the_background_measurement(tmp_path):
    cfg = InferConfig(backend="auto", input_size=128, cache_dir=str(tmp_path))
    run, _, desc = load_network(cfg, background_calibration=True)
    assert isinstance(run, B.BackgroundCalibration) and "measured in the background" in desc, desc
    x = np.random.default_rng(2).standard_normal((1, 3, 128, 128)).astype(np.float32)
    ref = run(x)  # served by ONNX Runtime fp32 while the child measures
    assert run.name == "onnxruntime-fp32"
    run.wait(120)
    assert run.done and run.record is not None
    assert run.name == run.record["chosen"] and run.name.endswith("-fp32")
    files = list((tmp_path / "backends").glob("*.json"))
    assert len(files) == 1 and set(json.loads(files[0].read_text())["results"]) == set(B.available())
    assert max(float(np.abs(a - b).max()) for a, b in zip(maps(run(x)), maps(ref))) <= B.FP32_TOLERANCE
    # the move itself: another candidate is built, run once on the last shape, then serves
    run.adopt("openvino-fp32")
    assert run.name == "openvino-fp32"
    assert max(float(np.abs(a - b).max()) for a, b in zip(maps(run(x)), maps(ref))) <= B.FP32_TOLERANCE
    # the next start reads the measurement: no background run
    again, _, desc2 = load_network(cfg, background_calibration=True)
    assert not isinstance(again, B.BackgroundCalibration) and "cached" in desc2


def test_a_failed_background_measurement_keeps_onnxruntime(tmp_path, caplog):
    import logging

    cfg = InferConfig(backend="auto", input_size=128, cache_dir=str(tmp_path))
    run, _, _ = load_network(cfg, background_calibration=True)
    run._proc.kill()  # the measuring child dies
    with caplog.at_level(logging.WARNING, logger="posestream.stream.backends"):
        run.wait(30)
    assert run.done and run.name == "onnxruntime-fp32"
    assert "backend calibration failed" in caplog.text and "staying on onnxruntime-fp32" in caplog.text
    x = np.zeros((1, 3, 128, 128), np.float32)
    assert len(run(x)) == 5


def test_infer_spin_sets_onnx_runtimes_spinning_for_the_process(tmp_path):
    """``infer.spin`` (default off) decides whether the sessions load_network makes spin-wait."""
    from posestream.models import export

    key = "session.intra_op.allow_spinning"
    with pytest.raises(ValueError, match="spin must be true or false"):
        InferConfig(spin="yes")
    before = export.ORT_SPINNING
    try:
        run, meta, _ = load_network(InferConfig(model="lite", backend="onnxruntime", cache_dir=str(tmp_path)))
        assert export.ORT_SPINNING is False
        path = next(tmp_path.glob("lite-*.onnx"))
        assert export.onnx_session(path).get_session_options().get_session_config_entry(key) == "0"
        load_network(InferConfig(model="lite", backend="onnxruntime", cache_dir=str(tmp_path), spin=True))
        assert export.ORT_SPINNING is True
        with pytest.raises(Exception):  # no entry: ONNX Runtime's default (spinning)
            export.onnx_session(path).get_session_options().get_session_config_entry(key)
    finally:
        export.ORT_SPINNING = before
