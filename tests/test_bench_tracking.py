"""`posestream bench tracking`: the clips with a known truth are built from real pixels and every
cell is reported (the numbers themselves are the benchmark's, README / issue #14)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_fast_clip_moves_the_person_by_30_percent_of_their_height():
    from posestream.stream.benches.tracking import make_clip

    frames, h, centres = make_clip("fast", 4, height=200)
    still, _, _ = make_clip("still", 4, height=200)
    assert [round(b[0] - a[0]) for a, b in zip(centres, centres[1:])] == [60, 60, 60]
    assert len(frames) == 4 and frames[0].shape == (576, 768, 3) and h == 200
    # the pasted person is where the two clips differ from the background; its left edge moves 60 px a frame
    from posestream.stream.benches.tracking import _background

    bg = _background(4)
    lefts = [np.nonzero(np.abs(f.astype(int) - b).sum(2).max(0) > 60)[0].min() for f, b in zip(frames, bg)]
    assert all(abs((b - a) - 60) <= 3 for a, b in zip(lefts, lefts[1:])), lefts
    assert np.abs(still[0].astype(int) - bg[0]).sum() > 0


def test_bench_reports_every_clip():
    r = subprocess.run([sys.executable, "-m", "posestream", "bench", "tracking", "--frames", "8", "--vtest-frames", "0",
                        "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert set(res) == {"still", "small", "fast"}
    for row in res.values():
        assert row["frames"] == 8 and row["people"] == 1
        assert {"ids", "id_switches", "unconfirmed_frames", "jitter_raw_pct", "jitter_smoothed_pct", "lag_pct"} <= set(row)
