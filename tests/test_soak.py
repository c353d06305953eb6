"""`posestream bench soak`: a very short soak run end to end (about 30 s)."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

from posestream.stream.transport import SHM_ROOT, _folder_hash

REPO = Path(__file__).resolve().parents[1]
PROCESSES = {"capture0", "infer", "track", "output", "supervisor"}


def test_soak_short_run(tmp_path, shared_data):
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    cmd = [sys.executable, "-m", "posestream", "bench", "soak", "--minutes", "0.4", "--warmup", "5",
           "--interval", "3", "--json", str(out_json), "--plot", str(out_png)]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MPLBACKEND": "Agg"})
    assert p.returncode in (0, 1), f"rc {p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "growth MB" in p.stdout and "cpu flags:" in p.stdout and "command:" in p.stdout, p.stdout

    res = json.loads(out_json.read_text())
    samples = res["samples"]
    assert len(samples) >= 3
    for s in samples:
        assert PROCESSES <= set(s["procs"]), s["procs"].keys()
        for name in PROCESSES:
            assert s["procs"][name]["rss_mb"] > 0, (name, s)
            assert s["procs"][name]["fds"] > 0, (name, s)
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    assert res["frames"] > 0
    assert set(res["analysis"]["procs"]) == PROCESSES

    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # nothing of this pipeline left: no ring of its private folder in /dev/shm, the folder gone,
    # and the temporary outputs removed
    folder = res["after_close"]["folder"]
    assert folder
    assert not glob.glob(os.path.join(SHM_ROOT, f"psring-{_folder_hash(folder)}-*"))
    assert not os.path.exists(folder)
    assert res["after_close"]["shm_pipeline"] == 0 and not res["after_close"]["folder_exists"]
    assert not os.path.exists(os.path.dirname(res["files"]["record"]))


def test_soak_missing_source(tmp_path):
    p = subprocess.run([sys.executable, "-m", "posestream", "bench", "soak", "--source", str(tmp_path / "nope.avi")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "nope.avi" in p.stderr
