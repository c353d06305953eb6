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
    assert set(res) == {"still", "small", "walk", "fast", "turn"}
    for row in res.values():
        assert row["frames"] == 8 and row["people"] == 1
        assert {"ids", "id_switches", "unconfirmed_frames", "jitter_raw_pct", "jitter_smoothed_pct", "lag_pct"} <= set(row)


def test_pedestrian_track_follows_one_man_over_his_crossing():
    from posestream.stream.benches.tracking import PEDESTRIAN, pedestrian_clip, pedestrian_track

    track = pedestrian_track()
    assert len(track) == PEDESTRIAN["end"] - PEDESTRIAN["start"] + 1 == 117
    step = np.hypot(*np.diff(track[:, :2], axis=0).T)
    assert step.max() < 0.15 * np.median(track[:, 2]), step.max()   # a walk: no jump to another person
    assert track[:, 0].max() - track[:, 0].min() > 300                # and a crossing (> 300 px)
    frames, h, centres = pedestrian_clip()
    assert len(frames) == 117 and frames[0].shape == (320, 528, 3) and 80 < h < 130
    # the whole man stays inside the (fixed) window
    assert all(0.4 * h <= c[0] <= 528 - 0.4 * h and 0.5 * h <= c[1] <= 320 - 0.5 * h for c in centres)


def test_one_id_per_person_on_the_real_clips():
    """Issue #14: the shipped model + tracker on the single-person clips (real pixels): the
    person keeps one id from their first frame (no switch, no frame without an id)."""
    from posestream.stream.benches import tracking as T

    data = T.clips(60, 300)
    data.pop("vtest")
    for name, (frames, fps, h, people, centres, moving) in data.items():
        row = T.evaluate(T.detect(frames), fps, h, people, centres, moving)
        assert row["unconfirmed_frames"] == 0, (name, row)
        assert row["id_switches"] == 0 and row["ids"] == 1, (name, row)
        if name in ("still", "small", "walk"):
            assert row["jitter_ratio"] <= 0.3, (name, row)
        if name == "walk":
            assert abs(row["lag_pct"]) <= 2.0, (name, row)   # behind (or ahead) by < 2 % of the height
