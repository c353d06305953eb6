"""Every registered model through `posestream run` (PyTorch backend, random weights, a 3-frame
clip): it either runs to the end, writing one JSON line per frame with people of the model's
skeleton, or is refused before the first frame with exit status 2 and one line.

Heatmap-only single-person models (``*_mpii``, no PAFs) decode one person per frame
(``decode_single``): with random weights 0 or 1 person, never more.

The big networks are marked ``slow`` (run by ``make test-slow``). Measured on this 2-core
machine, the whole registry takes 70-105 s alone, but 4.5-6 min beside another pipeline (a soak
run): one model 5-16 s alone (5-15 s CPU), 15-50 s under that load; the cmu_pose_* and the
hourglasses cost the most, and the hourglasses with random weights find 20-60 "people" per frame
to group. The default run keeps lite, movenet_paf and one hourglass and one ``*_mpii`` model
(the multiscale ones: stride 8, where lite and movenet_paf have 4). ``SLOW`` may be emptied
where the machine is not shared.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pytest

from posestream.models.registry import list_models

REPO = Path(__file__).resolve().parents[1]
FRAMES = 3
DEFAULT_RUN = {"lite", "movenet_paf", "multiscale_hourglass", "multiscale_hourglass_mpii"}  # never slow
SLOW = {"cmu_pose_se_resnet18", "cmu_pose_se_resnet50", "cmu_pose_se_resnet50_jr", "cmu_pose_vgg19",
        "cmu_pose_vgg19_jr", "stacked_hourglass", "stacked_hourglass_jr", "stacked_hourglass_mpii"}


def _params():
    names = list_models("bottomup")  # the top-down movenet_thunder is refused as --model: test_refine_run.py
    assert DEFAULT_RUN <= set(names) and not DEFAULT_RUN & SLOW, sorted(DEFAULT_RUN - set(names))
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _meta(name: str) -> dict:
    """The model's metadata without its weights (built on the meta device: no memory, no init)."""
    import torch

    from posestream.models.registry import build_model

    with torch.device("meta"):
        return build_model(name).meta()


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for processes and their children
    return ru.ru_utime + ru.ru_stime


@pytest.fixture(scope="module")
def clip():
    # a private folder: pytest's numbered tmp folders are pruned by other sessions running at once
    with tempfile.TemporaryDirectory(prefix="posestream-models-run-") as d:
        path = Path(d) / "clip.mp4"
        rng = np.random.default_rng(0)
        with av.open(str(path), "w") as out:
            st = out.add_stream("libx264", rate=10)
            st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
            for _ in range(FRAMES):
                img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
                for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(p)
            for p in st.encode():
                out.mux(p)
        yield path


@pytest.mark.parametrize("name", _params())
def test_every_model_runs_or_is_refused_in_one_line(name, clip):
    from posestream.models.skeleton import get_skeleton

    meta = _meta(name)
    k = get_skeleton(meta["skeleton"]).num_keypoints
    single = not meta.get("with_pafs", True)
    out = Path(tempfile.mkdtemp(prefix=f"posestream-{name}-", dir=clip.parent)) / "out.jsonl"
    t0, cpu0 = time.monotonic(), _children_cpu()
    r = subprocess.run([sys.executable, "-m", "posestream", "run", "--model", name, "--backend", "torch",
                        "--input-size", "128", "--source", str(clip), "--jsonl", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr, err[-3000:]
    if r.returncode == 2:  # refused: before the first frame, in one line
        lines = err.splitlines()
        assert lines and lines[-1].startswith("posestream run: error: "), err[-2000:]
        assert all(" WARNING " in x or " INFO " in x for x in lines[:-1]), err[-2000:]
        assert not out.exists(), "refused, but wrote keypoints"
        return
    assert r.returncode == 0, (r.returncode, err[-2000:])
    s = json.loads(r.stdout[r.stdout.index("{"):])
    assert s["model"].startswith(name + " ") or s["model"].startswith(name + ","), s["model"]
    assert "RANDOMLY INITIALISED" in s["model"] and "PyTorch" in s["model"], s["model"]
    assert s["frames_in"] == s["frames_out"] == FRAMES and not s["errors"], s
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    print(f"{name}: {wall:.1f} s ({cpu:.1f} s CPU), people per frame {[len(x['people']) for x in lines]}")
    assert [x["frame_id"] for x in lines] == list(range(FRAMES))
    for line in lines:
        people = line["people"]
        if single:
            assert len(people) <= 1, (name, len(people))
        for p in people:
            assert len(p["keypoints"]) == k, (name, len(p["keypoints"]), k)
            assert all(len(kp) == 3 for kp in p["keypoints"])
