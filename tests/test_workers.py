"""`posestream run --workers N` (stream/pool.py): N inference processes fed by ZeroMQ's
load-balancing broker, per-source order restored before tracking. End to end with real processes,
real ZeroMQ and a real clip (the first frames of vtest.avi), plus the reorder buffer on its own."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_clip

from posestream.stream.messages import Frame, People
from posestream.stream.pool import Reorder

REPO = Path(__file__).resolve().parents[1]
FAST = ["--input-size", "128", "--quiet"]
N = 40


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("workers") / "clip.mp4", N)


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory):
    """The --workers 1 run: its JSONL lines and summary."""
    out = tmp_path_factory.mktemp("ref") / "w1.jsonl"
    r = posestream("run", "--source", str(clip), "--jsonl", str(out), "--workers", "1", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    s = summary_of(r.stdout)
    assert s["workers"] == 1 and "pool" not in s and s["frames_out"] == N
    return lines_of(out), s


def posestream(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "posestream", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def summary_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{"):])


def lines_of(path) -> list[dict]:
    """The JSONL records without ``t_capture_ns`` (the monotonic clock when the frame was decoded:
    different in every run, whatever the number of workers)."""
    out = []
    for line in Path(path).read_text().splitlines():
        d = json.loads(line)
        d.pop("t_capture_ns")
        out.append(d)
    return out


def test_two_workers_write_the_same_jsonl_as_one(clip, reference, tmp_path):
    ref, _ = reference
    r = posestream("run", "--source", str(clip), "--jsonl", str(tmp_path / "w2.jsonl"), "--workers", "2", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    s = summary_of(r.stdout)
    assert s["policy"] == "lossless" and s["workers"] == 2
    assert s["frames_in"] == s["frames_out"] == N and s["frames_dropped"] == 0
    pool = s["pool"]
    assert pool["dispatched"] == N and pool["sent_again"] == 0 and pool["duplicates"] == 0
    assert sorted(pool["per_worker"]) == ["w0", "w1"] and all(v > 0 for v in pool["per_worker"].values()), pool
    got = lines_of(tmp_path / "w2.jsonl")
    assert len(got) == len(ref) == N
    assert [x["frame_id"] for x in got] == list(range(N))
    for i, (a, b) in enumerate(zip(ref, got)):
        assert a == b, f"line {i} differs"
    assert sum(len(x["people"]) for x in got) > N  # vtest's pedestrians: the lines are not empty
    assert s["stage_latency_ms"]["infer"]["p50"] is not None


def test_workers_option_is_checked_before_anything_runs():
    r = posestream("run", "--source", "x.mp4", "--workers", "0", *FAST, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("posestream run: error: --workers")
    assert "Traceback" not in r.stderr


def _pids(proc, names, timeout=90):
    deadline, pids, seen = time.time() + timeout, {}, []
    pat = re.compile(r"stage (\w+) ready \(pid (\d+)\)")
    while time.time() < deadline and not set(names) <= set(pids):
        line = proc.stderr.readline()
        seen.append(line)
        m = pat.search(line)
        if m:
            pids[m.group(1)] = int(m.group(2))
    assert set(names) <= set(pids), "".join(seen[-20:])
    return pids


def _signal_a_worker_mid_run(clip, tmp_path, config: str, sig, *extra) -> tuple[int, str, str, Path]:
    """Run 40 frames with the pool ``config`` (YAML) and flags ``extra``, send ``sig`` to worker
    infer1 once 8 lines are out; -> (exit status, stdout, stderr, the JSONL's path)."""
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(config)
    out = tmp_path / "o.jsonl"
    # ~100 ms per frame and worker: 40 frames take ~2 s, the signal lands mid-run
    p = subprocess.Popen([sys.executable, "-m", "posestream", "-v", "run", "--source", str(clip),
                          "--jsonl", str(out), "--config", str(cfg), "--infer-delay-ms", "100", *extra, *FAST],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        pids = _pids(p, ["infer0", "infer1", "dispatch"])
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 8):
            time.sleep(0.05)
        assert len(out.read_text().splitlines()) < N - 5, "the run ended before the signal"
        os.kill(pids["infer1"], sig)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, stdout, stderr, out


def test_a_killed_worker_loses_no_frame_and_no_order(clip, reference, tmp_path):
    """Lossless: SIGKILL one of two workers mid-run; the frames it held are sent again to the
    other, the output is the --workers 1 output. The pool size comes from the YAML config here."""
    ref, _ = reference
    code, stdout, stderr, out = _signal_a_worker_mid_run(clip, tmp_path, "workers: 2\n", signal.SIGKILL)
    assert code == 0, stderr[-2000:]
    assert "worker infer1 died (signal SIGKILL)" in stderr
    s = summary_of(stdout)
    assert s["failed_stage"] is None and s["frames_in"] == s["frames_out"] == N
    assert s["pool"]["workers_lost"] and s["pool"]["workers_lost"][0].startswith("infer1")
    got = lines_of(out)
    assert [x["frame_id"] for x in got] == list(range(N))
    assert got == ref


def test_a_hung_worker_is_killed_and_its_frames_go_to_the_other(clip, reference, tmp_path):
    """Lossless: SIGSTOP one of two workers mid-run (it holds its frames and never answers); after
    worker_timeout the broker kills it, its frames go to the other, the output is still exact."""
    ref, _ = reference
    code, stdout, stderr, out = _signal_a_worker_mid_run(clip, tmp_path, "workers: 2\nworker_timeout: 1.5\n",
                                                         signal.SIGSTOP)
    assert code == 0, stderr[-2000:]
    assert re.search(r"worker w1 \(pid \d+\) returned no frame for 1\.\d s: hung, killed", stderr), stderr[-2000:]
    s = summary_of(stdout)
    assert s["failed_stage"] is None and s["frames_in"] == s["frames_out"] == N
    assert s["pool"]["workers_hung"] == [1] and s["pool"]["sent_again"] >= 1
    got = lines_of(out)
    assert [x["frame_id"] for x in got] == list(range(N))
    assert got == ref


def test_live_a_killed_worker_s_frames_are_counted_as_drops_and_the_other_carries_on(clip, tmp_path):
    """Live: SIGKILL one of two workers mid-run; the other takes every later frame, nothing is
    passed on out of order, and every captured frame is either out or counted as dropped."""
    code, stdout, stderr, out = _signal_a_worker_mid_run(clip, tmp_path, "workers: 2\npolicy: live\n", signal.SIGKILL,
                                                         "--realtime")
    assert code == 0, stderr[-2000:]
    assert "worker infer1 died (signal SIGKILL)" in stderr
    s = summary_of(stdout)
    assert s["policy"] == "live" and s["failed_stage"] is None and s["frames_in"] == N
    assert s["frames_out"] + s["frames_dropped"] == N, s
    pool = s["pool"]
    assert pool["workers_lost"][0].startswith("infer1") and pool["sent_again"] == 0
    assert pool["lost_with_workers"] in (0, 1)   # live: one credit per worker, so at most one frame held
    ids = [x["frame_id"] for x in lines_of(out)]
    assert len(ids) == s["frames_out"] and all(b > a for a, b in zip(ids, ids[1:]))
    assert ids[-1] >= N - 3   # the survivor carried on to the end of the clip


def test_batches_across_sources_give_the_people_of_one_frame_per_call(clip, reference, tmp_path):
    """Lossless, three sources (the same clip), two workers, --batch 4: every source's lines are
    the single-source, single-frame-per-call run's lines, and the forward calls did take several
    frames."""
    ref, _ = reference
    out = tmp_path / "b.jsonl"
    r = posestream("run", *[a for _ in range(3) for a in ("--source", str(clip))], "--jsonl", str(out),
                   "--workers", "2", "--batch", "4", "--batch-timeout-ms", "50", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    s = summary_of(r.stdout)
    assert s["frames_in"] == s["frames_out"] == 3 * N and s["frames_dropped"] == 0
    b = s["batch"]
    assert b["size"] == 4 and b["frames"] == 3 * N and b["calls"] < 3 * N, b
    assert sum(int(k) * v for k, v in b["sizes"].items()) == 3 * N and max(map(int, b["sizes"])) == 4, b
    got = lines_of(out)
    for sid in range(3):
        mine = [x for x in got if x["source_id"] == sid]
        assert [x["frame_id"] for x in mine] == list(range(N))
        for i, (a, x) in enumerate(zip(ref, mine)):
            assert {**x, "source_id": 0} == a, f"source {sid} line {i} differs"


def test_batch_options_are_checked_before_anything_runs(tmp_path):
    r = posestream("run", "--source", "x.mp4", "--batch", "0", *FAST, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("posestream run: error: --batch")
    assert "Traceback" not in r.stderr
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("batch: 4\nbatch_timeout_ms: -1\n")
    r = posestream("run", "--source", "x.mp4", "--config", str(cfg), *FAST, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        "pipeline.yaml:2: batch_timeout_ms: must be a number of milliseconds in [0, 10000], got -1")


def test_worker_timeout_is_checked_before_anything_runs(tmp_path):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("workers: 2\nworker_timeout: 0\n")
    r = posestream("run", "--source", "x.mp4", "--config", str(cfg), *FAST, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        "pipeline.yaml:2: worker_timeout: must be a number of seconds in [0.1, 86400], got 0")
    assert "Traceback" not in r.stderr


def test_live_pool_keeps_the_newest_frame_and_counts_every_drop(tmp_path):
    # a 10 fps camera-paced file, ~250 ms per frame in each of two workers (8 fps together): frames are dropped,
    # none is passed on after a newer one of its source, and every captured frame is out or counted
    clip = make_clip(tmp_path / "c30.mp4", 30)
    r = posestream("run", "--source", str(clip), "--realtime", "--policy", "live", "--infer-delay-ms", "250",
                   "--model", "lite", "--workers", "2", "--jsonl", str(tmp_path / "l.jsonl"), *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    s = summary_of(r.stdout)
    assert s["policy"] == "live" and s["frames_in"] == 30
    assert s["frames_out"] + s["frames_dropped"] == 30 and s["frames_dropped"] > 0, s
    assert sum(s["pool"]["per_worker"].values()) == s["pool"]["dispatched"] and len(s["pool"]["per_worker"]) == 2
    ids = [json.loads(x)["frame_id"] for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert len(ids) == s["frames_out"] and all(b > a for a, b in zip(ids, ids[1:]))
    assert s["capture_to_output_ms"]["p95"] < 1000


# -- the reorder buffer alone ---------------------------------------------------------------------------


class _Link:
    """A stand-in for the track process's Receiver: hands out a fixed list of frames."""

    def __init__(self, frames):
        self.frames = list(frames)
        self.received = self.dropped = 0

    def recv(self, timeout_ms=None):
        if not self.frames:
            return None
        self.received += 1
        return self.frames.pop(0)

    def close(self):
        pass


def _f(sid, seq):
    return Frame(source_id=sid, frame_id=seq, t_capture_ns=seq, info={"seq": seq},
                 people=People.empty())


def _eos(sid, worker, of=(0, 1)):
    """Worker ``worker``'s end-of-stream marker, which the broker sent to every worker in ``of``."""
    return Frame(source_id=sid, frame_id=-1, t_capture_ns=0, eos=True, info={"worker": worker, "of": list(of)})


def _drain(r):
    out = []
    while (f := r.recv(0)) is not None:
        out.append(f)
    return out


def test_reorder_lossless_restores_exact_order_per_source_and_drops_duplicates():
    arrivals = [_f(0, 1), _f(1, 0), _f(0, 2), _f(0, 0), _f(1, 2), _f(0, 1), _f(1, 1), _eos(0, 0), _f(0, 3),
                _eos(1, 1), _eos(0, 1), _eos(1, 0)]
    r = Reorder(_Link(arrivals), 2, "lossless")
    out = _drain(r)
    per = {s: [(f.frame_id, f.eos) for f in out if f.source_id == s] for s in (0, 1)}
    assert per[0] == [(0, False), (1, False), (2, False), (3, False), (-1, True)]
    assert per[1] == [(0, False), (1, False), (2, False), (-1, True)]
    assert r.duplicates == 1 and r.dropped == 0 and all("seq" not in f.info for f in out)
    # a source's end waits for every worker's marker
    assert [i for i, f in enumerate(out) if f.eos and f.source_id == 0][0] > [i for i, f in enumerate(out)
                                                                               if f.frame_id == 3][0]


def test_reorder_live_passes_the_newest_and_counts_older_frames_as_drops():
    r = Reorder(_Link([_f(0, 0), _f(0, 2), _f(0, 1), _f(1, 0), _f(0, 3), _f(0, 2)]), 2, "live")
    out = _drain(r)
    assert [(f.source_id, f.frame_id) for f in out] == [(0, 0), (0, 2), (1, 0), (0, 3)]
    assert r.stale == 2 and r.dropped == 2


def test_reorder_waits_for_every_listed_worker_and_a_forced_end_ends_it():
    """A source ends when every worker its markers list (``of``) passed one on, remote ones
    included; markers without ``of`` (in place of a dead worker) only count; a forced end (the
    supervisor, when nobody is left to pass on a dead remote worker's) ends it at once."""
    of = [0, "r:gpu1@h:7"]
    r = Reorder(_Link([_f(0, 0), _eos(0, 0, of), _eos(1, "r:gpu1@h:7", [])]), 1, "lossless")
    out = _drain(r)
    assert [(f.source_id, f.eos) for f in out] == [(0, False), (1, True)]   # source 1: its broker listed nobody
    r.rx.frames.append(Frame(source_id=0, frame_id=-1, t_capture_ns=0, eos=True,
                             info={"worker": "supervisor", "force": True}))
    assert [(f.source_id, f.eos) for f in _drain(r)] == [(0, True)]


def test_a_batch_gives_its_credits_back_after_it_was_processed():
    """With --batch, a pool worker's credits go back once the forward call is done (so the broker's
    hung-worker clock and the live policy's one batch per worker hold), not as each frame comes."""
    from posestream.stream.runner import RunStats, _Batched

    events = []

    class Rx(_Link):
        hold_credits = False

        def flush_credits(self):
            events.append("credits")

    class Stage:
        name = "infer"

        def process_batch(self, frames):
            events.append(f"batch of {len(frames)}")
            return frames

    rx = Rx([_f(0, 0), _f(1, 0), _f(0, 1), _eos(0, 0)])
    b = _Batched(rx, Stage(), 4, 0, RunStats(False))
    assert rx.hold_credits is True
    got = [b.next() for _ in range(4)]
    assert [(f.source_id, f.eos) for f in got] == [(0, False), (1, False), (0, False), (0, True)]
    assert events == ["batch of 3", "credits"]
