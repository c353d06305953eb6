"""The grouping kernels built ahead of time (models/fields/_aot.py): the same poses as the JIT
kernels bit for bit, on encoded scenes and on the shipped model's real outputs; a build for other
sources is never loaded; the decoder then imports no Numba; no compiler: one line, JIT as before."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from posestream.models.fields import DecoderConfig, _aot, decode, decode_graph, encode, upsample
from posestream.models.fields.synthetic import random_scene


@pytest.fixture(scope="module")
def aot_root(tmp_path_factory):
    """A cache folder with this host's AOT build (~6 s on 2 cores)."""
    root = tmp_path_factory.mktemp("aot-cache")
    try:
        _aot.build(root)
    except Exception as e:  # noqa: BLE001 - no C toolchain here: nothing to test
        pytest.skip(f"no AOT build on this host: {type(e).__name__}: {e}")
    return root


def _both(root, fn):
    with _aot.use("aot", root):
        a = fn()
    with _aot.use("jit"):
        b = fn()
    return a, b


def _assert_identical(a, b):
    assert a.keypoints.dtype == b.keypoints.dtype and a.scores.dtype == b.scores.dtype
    assert np.array_equal(a.keypoints, b.keypoints) and np.array_equal(a.scores, b.scores)


def _candidates(up, n=64):
    flat = up.reshape(len(up), -1)
    index = np.argsort(-flat, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(flat, index, 1), index


@pytest.mark.parametrize("seed", range(4))
def test_aot_and_jit_identical_on_noisy_scenes(aot_root, seed):
    rng = np.random.default_rng(seed)
    size, stride = (384, 384), 8
    gt = random_scene(rng, 12, size, height_range=(50, 200), allow_overlap=True, n_crossing_pairs=2)
    t = encode(gt, size, stride, sigma=1.0)
    heat = np.clip(t.heatmaps + rng.normal(0, 0.15, t.heatmaps.shape), 0, 1).astype(np.float32)
    paf = (t.pafs + rng.normal(0, 0.15, t.pafs.shape)).astype(np.float32)
    cfg = DecoderConfig(peak_threshold=0.2)
    a, b = _both(aot_root, lambda: decode(heat, paf, stride, cfg))  # group
    assert len(a.scores) > 3
    _assert_identical(a, b)
    up = upsample(heat[:17], stride / cfg.working_stride)
    for n in (64, 3):  # 3: the lists end early, group_candidates scans the map instead
        scores, index = _candidates(up, n)
        a, b = _both(aot_root, lambda: decode_graph(up, scores, index, paf, stride, cfg))
        assert len(a.scores) > 3
        _assert_identical(a, b)


def test_aot_and_jit_identical_with_other_settings_and_read_only_maps(aot_root):
    rng = np.random.default_rng(7)
    t = encode(random_scene(rng, 6, (256, 256), height_range=(40, 160)), (256, 256), 4, sigma=2.0)
    heat, paf = t.heatmaps.copy(), t.pafs.copy()
    heat.setflags(write=False)
    paf.setflags(write=False)
    for cfg in (DecoderConfig(), DecoderConfig(fill_missing=False, max_peaks=5, paf_samples=4, min_keypoints=1)):
        a, b = _both(aot_root, lambda: decode(heat, paf, 4, cfg))
        _assert_identical(a, b)
        assert len(a.scores) > 0


@pytest.mark.slow  # the ONNX export of the shipped model: ~9 s
def test_aot_and_jit_identical_on_the_shipped_models_outputs(aot_root, shared_data, tmp_path):
    """Real-looking input: the shipped model (graph decoding: group_candidates; and the host
    decoder: group) on COCO images."""
    from posestream.models.predictor import Predictor
    from posestream.stream.infer import InferConfig, load_network

    run, meta, _ = load_network(InferConfig(backend="onnxruntime", cache_dir=str(tmp_path)))
    graph = Predictor(run, meta)
    host = Predictor(run, {k: v for k, v in meta.items() if k != "graph_decode"})
    assert graph.graph_decode and not host.graph_decode
    found = 0
    for path in sorted((shared_data / "coco-mini/val2017").iterdir())[:8]:
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        for pred in (graph, host):
            a, b = _both(aot_root, lambda: pred(img).poses)
            _assert_identical(a, b)
            found += len(a.scores)
    assert found > 5


def test_a_build_for_other_sources_or_versions_is_not_loaded(aot_root, monkeypatch, tmp_path):
    key = _aot.build_key()
    assert _aot.module_path(aot_root).is_file() and _aot.load(aot_root) is not None
    edited = tmp_path / "_numba.py"
    edited.write_bytes(_aot._SOURCE.read_bytes() + b"\n# an edit\n")
    monkeypatch.setattr(_aot, "_SOURCE", edited)
    assert _aot.build_key() != key
    assert _aot.load(aot_root) is None
    monkeypatch.undo()
    monkeypatch.setattr(_aot, "_numba_version_text", lambda: b"version 0.0.0")
    assert _aot.build_key() != key and _aot.load(aot_root) is None
    monkeypatch.undo()
    monkeypatch.setenv("POSESTREAM_AOT", "0")
    assert _aot.load(aot_root) is None
    with pytest.raises(RuntimeError, match="no ahead-of-time build"):
        with _aot.use("aot", aot_root):
            pass


_PROBE = """
import hashlib, json, sys
import numpy as np
from posestream.models.fields import _aot, decode, decode_graph, upsample
from posestream.models.skeleton import COCO_17
rng = np.random.default_rng(0)
heat = (rng.random((17, 40, 40)) * 0.5).astype(np.float32)
heat[:, 20, 20] = 1.0
pafs = (rng.random((2 * COCO_17.num_limbs, 40, 40)) - 0.5).astype(np.float32)
h = hashlib.sha256()
p = decode(heat, pafs, 8)
h.update(p.keypoints.tobytes()); h.update(p.scores.tobytes())
up = upsample(heat, 4.0)
index = np.argsort(-up.reshape(17, -1), axis=1, kind="stable")[:, :64]
p = decode_graph(up, np.take_along_axis(up.reshape(17, -1), index, 1), index, pafs, 8)
h.update(p.keypoints.tobytes()); h.update(p.scores.tobytes())
print(json.dumps({"aot": _aot.using_aot(), "numba": "numba" in sys.modules, "poses": h.hexdigest()}))
"""


def _probe(env):
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_decoder_with_a_build_imports_no_numba(aot_root):
    """A fresh process with the build in its cache decodes without importing Numba, and gets the
    bits a process without it (POSESTREAM_AOT=0, or an empty cache) gets from the JIT kernels."""
    with_aot = _probe({"POSESTREAM_CACHE": str(aot_root)})
    assert with_aot["aot"] and not with_aot["numba"]
    jit = _probe({"POSESTREAM_CACHE": str(aot_root), "POSESTREAM_AOT": "0"})
    assert not jit["aot"] and jit["numba"]
    assert with_aot["poses"] == jit["poses"]


def test_warmup_without_a_compiler_says_so_in_one_line(tmp_path):
    code = ("from posestream.stream.cli_warmup import build_decoder_aot; "
            "print('LINE', build_decoder_aot())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "POSESTREAM_CACHE": str(tmp_path), "CC": str(tmp_path / "no-cc")})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("LINE")]
    assert len(lines) == 1 and "not built ahead of time" in lines[0] and "JIT" in lines[0], out.stdout
    assert not list((tmp_path / "aot").glob("posestream_grouping_*"))
