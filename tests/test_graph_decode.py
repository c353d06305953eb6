"""Decoding on the runtime (models/decode_head.py + fields.decode_graph): the graph's upsampling is
OpenCV's bicubic, its peak lists are 3x3 maxima, and the people it yields are the host decoder's,
on encoded scenes, on the decoder's fallback, and on the shipped model's real outputs."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from posestream.models.decode_head import DecodeHead, GraphDecoder, bicubic_phase_weights
from posestream.models.export import export_onnx, maps, onnx_session, peak_list_error, read_onnx_meta
from posestream.models.fields import DecoderConfig, _numba, decode, decode_graph, encode, upsample
from posestream.models.fields.synthetic import random_scene


def _cv2_up(maps_: np.ndarray, f: int) -> np.ndarray:
    c, h, w = maps_.shape
    return np.stack([cv2.resize(m, (w * f, h * f), interpolation=cv2.INTER_CUBIC) for m in maps_])


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_head_upsampling_is_opencv_bicubic(factor):
    x = np.random.default_rng(factor).random((5, 7, 9)).astype(np.float32)  # odd sizes: all borders
    head = DecodeHead(5, factor)
    with torch.no_grad():
        up = head.upsample(torch.from_numpy(x)[None])[0].numpy()
    assert up.shape == (5, 7 * factor, 9 * factor)
    assert np.abs(up - _cv2_up(x, factor)).max() < 1e-5
    assert np.allclose(bicubic_phase_weights(factor).sum(1), 1.0)  # every phase keeps a constant


@pytest.mark.parametrize("factor", [2, 4])
def test_paf_samples_at_the_network_stride_equal_the_upsampled_maps(factor):
    x = np.random.default_rng(0).standard_normal((2, 6, 8)).astype(np.float32)
    ref = _cv2_up(x, factor)
    got = np.array([[_numba._bicubic_pair(x, 0, y, xx, float(factor)) for xx in range(8 * factor)]
                    for y in range(6 * factor)])  # (H, W, 2)
    assert np.abs(got.transpose(2, 0, 1) - ref).max() < 1e-5


def _graph_outputs(t, stride, cfg, candidates=64):
    head = DecodeHead(17, int(stride / cfg.working_stride), candidates)
    with torch.no_grad():
        return [o[0].numpy() for o in head(torch.from_numpy(np.ascontiguousarray(t.heatmaps[None])))]


@pytest.mark.parametrize("people,stride,candidates", [(1, 4, 64), (10, 4, 64), (30, 8, 64), (10, 4, 3)])
def test_graph_decoding_finds_the_host_decoders_people(people, stride, candidates):
    """Encoded scenes decoded both ways; candidates=3 cuts the lists short: the host scans instead."""
    rng = np.random.default_rng(people)
    size = 320
    kp = random_scene(rng, people, (size, size), height_range=(40.0, 0.6 * size), allow_overlap=True, hide_prob=0.1,
                      border_fraction=0.1)
    t = encode(kp, (size, size), stride, sigma=8.0 / stride)
    cfg = DecoderConfig()
    a = decode(t.heatmaps, t.pafs, stride, cfg)
    up, scores, index = _graph_outputs(t, stride, cfg, candidates)
    assert peak_list_error(up[None], scores[None], index[None]) is None
    b = decode_graph(up, scores, index, t.pafs, stride, cfg)
    assert len(a.scores) == len(b.scores) >= min(people, 1)
    assert np.abs(a.keypoints - b.keypoints).max() < 1e-3
    assert np.abs(a.scores - b.scores).max() < 1e-5
    if candidates == 3:  # the fallback really ran: some type has more than 3 peaks
        _, _, _, _, _, _, complete = _numba.select_peaks(up, scores, index, cfg.peak_threshold,
                                                         cfg.min_peak_distance / cfg.working_stride, cfg.max_peaks)
        assert not complete


def test_decode_graph_refuses_outputs_of_another_working_stride():
    t = encode(np.zeros((0, 17, 3)), (64, 64), 4, sigma=2.0)
    up, scores, index = _graph_outputs(t, 4, DecoderConfig())
    with pytest.raises(ValueError, match="working stride 1"):
        decode_graph(up, scores, index, t.pafs, 4, DecoderConfig(working_stride=1.0))


def test_peak_list_error_names_what_is_wrong():
    t = encode(random_scene(np.random.default_rng(3), 3, (128, 128), height_range=(40.0, 80.0)), (128, 128), 4,
               sigma=2.0)
    up, scores, index = (o[None] for o in _graph_outputs(t, 4, DecoderConfig()))
    assert peak_list_error(up, scores, index) is None
    s2, i2 = scores.copy(), index.copy()
    s2[0, 0, [0, 1]], i2[0, 0, [0, 1]] = s2[0, 0, [1, 0]], i2[0, 0, [1, 0]]
    assert "descending" in peak_list_error(up, s2, i2)
    assert "neither" in peak_list_error(up, s2, index)
    i2 = index.copy()
    i2[0, 0, 0] += 1  # the strongest peak's neighbour: a value, but no maximum
    assert peak_list_error(up, scores, i2) is not None


@pytest.fixture(scope="module")
def shipped_graph_export(tmp_path_factory):
    from posestream.stream.infer import InferConfig, load_network

    run, meta, _ = load_network(InferConfig(backend="onnxruntime", cache_dir=str(tmp_path_factory.mktemp("c"))))
    return run, meta


def test_shipped_model_decodes_in_the_graph_with_the_same_people(shipped_graph_export, shared_data):
    from posestream.models.predictor import Predictor

    run, meta = shipped_graph_export
    assert meta["graph_decode"] == {"factor": 2, "candidates": 64, "activation": "sigmoid"}
    graph = Predictor(run, meta)
    host = Predictor(run, {k: v for k, v in meta.items() if k != "graph_decode"})
    flipped = Predictor(run, meta, flip=True)
    assert graph.graph_decode and not host.graph_decode and not flipped.graph_decode
    found = 0
    for path in sorted((shared_data / "coco-mini/val2017").iterdir())[:12]:
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        a, b = host(img).poses, graph(img).poses
        assert a.keypoints.shape == b.keypoints.shape, path.name
        if len(a.scores):
            assert np.abs(a.keypoints - b.keypoints).max() < 1e-2, path.name  # image pixels
            found += len(a.scores)
        flipped(img)  # the flip test averages raw maps: the host path, on the same export
    assert found > 5


def test_export_with_and_without_the_decoding_layers(tmp_path):
    from posestream.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("movenet_paf").eval()
    rep = export_onnx(model, tmp_path / "g.onnx", input_hw=(128, 160), graph_decode=True)
    assert rep["outputs"] == ["heatmaps", "pafs", "heatmaps_up", "peak_scores", "peak_index"]
    assert rep["max_abs_err"] <= rep["tolerance"]  # parity on the maps; peak lists checked in the export
    meta = read_onnx_meta(tmp_path / "g.onnx")
    assert meta["graph_decode"]["factor"] == model.stride // 2
    out = onnx_session(tmp_path / "g.onnx").run(None, {"image": np.zeros((1, 3, 96, 128), np.float32)})
    assert out[2].shape == (1, 17, 96 // 2, 128 // 2) and out[4].dtype == np.int64
    assert peak_list_error(*out[2:]) is None and len(maps(out)) == 3
    plain = export_onnx(model, tmp_path / "p.onnx", input_hw=(128, 160), check=False)
    assert plain["outputs"] == ["heatmaps", "pafs"] and "graph_decode" not in read_onnx_meta(tmp_path / "p.onnx")
    with torch.no_grad():  # the wrapper's own outputs begin with the network's
        x = torch.randn(1, 3, 64, 64)
        assert torch.equal(GraphDecoder(model)(x)[0], model(x)[0])


def test_bench_decode_same_ap_and_oracle_both_ways(shared_data):
    r = subprocess.run([sys.executable, "-m", "posestream", "bench", "decode", "--frames", "4", "--ap", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    host, graph = res["paths"]["host"], res["paths"]["graph"]
    assert host["people"] == graph["people"] > 0
    assert abs(host["ap"] - graph["ap"]) <= 0.002 and abs(host["ap"] - 0.304) < 0.003
    assert host["oracle_ap"] == pytest.approx(graph["oracle_ap"], abs=0.002) and host["oracle_ap"] > 0.85
    assert set(res["saved"]) == {"forward_ms", "decode_ms", "total_ms", "cpu_ms"} and res["flags"] is not None
