"""`posestream bench scale`: every cell is a real pipeline run over S copies of a clip, W workers,
batch B; the JSON has every cell, its exact frame count and its ratios to the 1/1/1 cell."""
import json
import subprocess
import sys
from pathlib import Path

from conftest import VTEST

REPO = Path(__file__).resolve().parents[1]


def test_bench_scale_json_has_every_cell_with_exact_frames_and_ratios():
    r = subprocess.run([sys.executable, "-m", "posestream", "bench", "scale", "--source", str(VTEST), "--sources",
                        "2", "--workers", "1,2", "--batch", "2", "--frames", "8", "--input-size", "96", "--json"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    cells = {(c["sources"], c["workers"], c["batch"]): c for c in res["cells"]}
    assert sorted(cells) == [(1, 1, 1), (2, 1, 2), (2, 2, 2)]   # the 1/1/1 reference is always run
    for (s, w, b), c in cells.items():
        assert c["frames"] == 8 * s, c
        assert c["fps"] > 0 and c["latency_ms_p95"] >= c["latency_ms_p50"] > 0
        assert abs(c["fps_vs_reference"] - c["fps"] / res["reference_fps"]) < 1e-3
        assert 1.0 <= c["mean_batch"] <= b
    assert cells[(1, 1, 1)]["fps_vs_reference"] == 1.0 and res["flags"] is not None and res["cores"] >= 1


def test_bench_scale_rejects_a_bad_list():
    r = subprocess.run([sys.executable, "-m", "posestream", "bench", "scale", "--sources", "1,x"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2 and "--sources: expected integers separated by commas, got '1,x'" in r.stderr
