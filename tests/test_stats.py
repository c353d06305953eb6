"""Bounded-memory latency statistics (stream.stats)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from posestream.stream.stats import LatencyHistogram, RecentWindow


def _lognormal(n, seed=0, median_ms=20.0, sigma=0.8):
    return np.random.default_rng(seed).lognormal(math.log(median_ms), sigma, n)


def test_percentiles_within_the_documented_bound_of_numpy():
    x = _lognormal(100_000)
    h = LatencyHistogram()
    h.add_many(x)
    bound = h.relative_error
    assert bound == pytest.approx(10 ** (1 / 20) - 1) and bound < 0.123
    got = h.percentiles((50, 95, 99))
    for p in (50, 95, 99):
        want = float(np.percentile(x, p))
        assert abs(got[f"p{p}"] / want - 1) < bound, (p, got[f"p{p}"], want)
    assert h.count == x.size and h.sum == pytest.approx(x.sum())
    assert h.min == x.min() and h.max == x.max() and h.mean == pytest.approx(x.mean())
    assert h.percentile(0) == x.min() and h.percentile(100) == x.max()


@pytest.mark.parametrize("per_decade", [10, 40])
def test_bound_follows_the_layout(per_decade):
    x = _lognormal(50_000, seed=3, median_ms=3.0, sigma=1.5)
    h = LatencyHistogram(per_decade=per_decade)
    h.add_many(x)
    for p in (1, 10, 50, 90, 99, 99.9):
        assert abs(h.percentile(p) / np.percentile(x, p) - 1) < h.relative_error


def test_empty_histogram():
    h = LatencyHistogram()
    assert h.count == 0 and h.sum == 0.0 and h.min is None and h.max is None and h.mean is None
    assert h.percentile(50) is None
    assert h.percentiles() == {"p50": None, "p95": None, "p99": None}
    assert h.percentiles((90,)) == {"p90": None}
    assert h.cumulative_buckets([0.01, 0.1]) == [(0.01, 0), (0.1, 0), (math.inf, 0)]
    assert LatencyHistogram.from_dict(json.loads(json.dumps(h.to_dict()))).to_dict() == h.to_dict()
    h.add_many([])
    h.add(float("nan"))
    assert h.count == 0
    with pytest.raises(ValueError):
        h.percentile(101)


def test_single_value_is_exact():
    h = LatencyHistogram()
    h.add(12.5)
    assert h.percentiles() == {"p50": 12.5, "p95": 12.5, "p99": 12.5}


def test_merge_equals_adding_all():
    x = _lognormal(30_000, seed=1)
    y = _lognormal(20_000, seed=2, median_ms=80.0)
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    a.add_many(x)
    for v in y[:500]:
        b.add(v)               # the scalar path buckets like the vectorised one
    b.add_many(y[500:])
    both.add_many(np.concatenate([x, y]))
    assert a.merge(b) is a
    da, dboth = a.to_dict(), both.to_dict()
    assert da.pop("sum") == pytest.approx(dboth.pop("sum"))
    assert da == dboth
    assert a.percentiles() == both.percentiles()
    assert a.merge(LatencyHistogram()).count == both.count   # merging an empty one changes nothing
    empty = LatencyHistogram().merge(both)
    assert empty.min == both.min and empty.max == both.max and empty.count == both.count
    with pytest.raises(ValueError, match="layouts"):
        a.merge(LatencyHistogram(per_decade=10))


def test_to_dict_from_dict_round_trip_through_json():
    h = LatencyHistogram()
    h.add_many(_lognormal(10_000))
    h.add_many([0.0, -3.0, 1e9])
    d = h.to_dict()
    text = json.dumps(d)
    assert len(d["buckets"]) < 142 and len(text) < 4000       # only the non-empty buckets
    back = LatencyHistogram.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert back.percentiles((1, 50, 99.9)) == h.percentiles((1, 50, 99.9))
    assert (back.count, back.sum, back.min, back.max) == (h.count, h.sum, h.min, h.max)
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict({**d, "count": d["count"] + 1})
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict({**d, "buckets": [[500, 1]]})


def test_memory_does_not_depend_on_the_number_of_samples():
    h = LatencyHistogram()
    size = h._counts.size
    assert size == 142
    rng = np.random.default_rng(0)
    for _ in range(10):
        h.add_many(rng.lognormal(2.0, 2.0, 100_000))   # 1e6 samples
    for v in rng.lognormal(2.0, 2.0, 2_000):
        h.add(v)
    assert h.count == 1_002_000
    assert h._counts.size == size and h._counts.dtype == np.int64
    assert len(h.to_dict()["buckets"]) <= size
    assert sorted(vars(h)) == sorted(vars(LatencyHistogram()))   # no per-sample state appears


def test_values_outside_the_range_do_not_crash_and_min_max_are_exact():
    h = LatencyHistogram()
    for v in (0.0, -5.0, 1e-9, 5.0, 1e12):
        h.add(v)
    h.add_many([0.0, -7.5, 3e15, float("nan"), float("inf"), -float("inf")])   # non-finite: ignored
    assert h.count == 8
    assert h.min == -7.5 and h.max == 3e15
    assert h._counts[0] == 5 and h._counts[-1] == 2                 # underflow, overflow
    assert h.percentile(0) == -7.5 and h.percentile(100) == 3e15
    for p in (1, 25, 50, 75, 99):
        v = h.percentile(p)
        assert -7.5 <= v <= 3e15 and math.isfinite(v)
    assert h.percentile(10) < h.lo_ms                                # underflow stays below lo_ms
    assert h.percentile(99) >= h.hi_ms                               # overflow at or above hi_ms
    only_low = LatencyHistogram()
    only_low.add_many([-1.0, -2.0])
    assert only_low.percentiles((50,))["p50"] <= -1.0


def test_cumulative_buckets_prometheus_style():
    h = LatencyHistogram()
    h.add_many([0.0, 0.5, 2.0, 7.0, 30.0, 30.0, 700.0, 5_000.0, 2e6])   # ms
    got = h.cumulative_buckets([1.0, 0.001, 0.01, 0.1, 0.005])        # seconds, any order
    assert got == [(0.001, 2), (0.005, 3), (0.01, 4), (0.1, 6), (1.0, 7), (math.inf, 9)]
    counts = [c for _, c in got]
    assert counts == sorted(counts) and counts[-1] == h.count
    # a bound that is not a bucket edge never over-counts
    x = _lognormal(20_000, seed=5)
    h2 = LatencyHistogram()
    h2.add_many(x)
    for le, c in h2.cumulative_buckets([0.0123, 0.0171, 0.05, 0.25]):
        if le != math.inf:
            exact = int((x <= le * 1000).sum())
            assert c <= exact and exact - c <= 0.05 * x.size
    edges_s = h2.bucket_edges_ms()[::20] / 1000       # decade edges: exact
    for le, c in h2.cumulative_buckets(edges_s):
        if le != math.inf:
            assert c == int((x < le * 1000).sum())


def test_recent_window_median():
    w = RecentWindow(5)
    assert w.median() is None and len(w) == 0
    for v in (10, 1, 2, 3, 100, 4, 5):
        w.add(v)
    assert len(w) == 5 and list(w.values) == [2.0, 3.0, 100.0, 4.0, 5.0]
    assert w.median() == 4.0
    with pytest.raises(ValueError):
        RecentWindow(0)
