"""`posestream bench presets`: each --preset's held-out AP (pycocotools on coco-mini val2017) and ms
per frame, measured the same way in one run."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_presets_report_their_held_out_ap():
    r = subprocess.run([sys.executable, "-m", "posestream", "bench", "presets", "--frames", "3", "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    p = res["presets"]
    assert list(p) == ["fast", "balanced", "accurate"]
    assert [p[k]["input_size"] for k in p] == [256, 320, 320] and p["accurate"]["refine"] and not p["balanced"]["refine"]
    # the README's figures for the shipped models (fp32 at 320; the refined 320)
    assert abs(p["balanced"]["ap"] - 0.304) <= 0.003, p["balanced"]
    assert abs(p["accurate"]["ap"] - 0.438) <= 0.003, p["accurate"]
    assert 0.24 <= p["fast"]["ap"] <= 0.27, p["fast"]           # 0.255 fp32, 0.257 bf16 where auto picks it
    assert all(v["ms_per_frame"] > 0 for v in p.values()) and res["flags"] is not None
