"""Bounded-memory statistics for a pipeline that runs for days: latency histograms, recent windows.

:class:`LatencyHistogram` keeps counts in fixed, log-spaced buckets (by default 0.01 ms to
100 000 ms, 20 buckets per decade, plus an underflow and an overflow bucket): its memory does not
grow with the number of samples, two of them merge by adding counts (one per process or per
source, merged by a supervisor), and it travels as compact JSON (:meth:`LatencyHistogram.to_dict`).
:meth:`LatencyHistogram.cumulative_buckets` gives Prometheus-style ``le`` counts.

:class:`RecentWindow` is the last N values (a deque) with a median, for a status line.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Iterable

import numpy as np

__all__ = ["LatencyHistogram", "RecentWindow"]


class LatencyHistogram:
    """Latencies in milliseconds, counted in fixed log-spaced buckets.

    Layout: bucket ``i`` (``0 <= i < n``, ``n = per_decade * log10(hi_ms / lo_ms)``) holds values in
    ``[lo_ms * r**i, lo_ms * r**(i + 1))`` with ``r = 10 ** (1 / per_decade)``; values below
    ``lo_ms`` (0 and negative ones included) go to an underflow bucket, values ``>= hi_ms`` to an
    overflow bucket. Non-finite values (NaN, ±inf) are not counted (they would poison the sum).
    ``count``, ``sum``, ``min`` and ``max`` are exact.

    Percentile accuracy: :meth:`percentile` finds the bucket that holds the sample of the wanted
    rank and interpolates log-linearly inside it, so the estimate lies in the same bucket as that
    sample. Its relative error against the exact percentile is therefore below the bucket's
    relative width, ``r - 1 = 10 ** (1 / per_decade) - 1`` (**12.2 %** with the default 20 per
    decade; 5.9 % with 40), whenever the samples next to that rank share a bucket, which holds for
    any dense distribution (it cannot hold for, say, two samples 1 ms and 100 ms apart, where any
    value in between is "the median"). In practice the log-linear interpolation is several times
    better than the bound. In the underflow and overflow buckets the estimate is interpolated
    linearly between the exact ``min`` (or ``hi_ms``) and ``lo_ms`` (or the exact ``max``), and every
    estimate is clamped to ``[min, max]``, so ``percentile(0) == min`` and ``percentile(100) == max``.

    Memory: ``n + 2`` int64 counts (142 with the defaults) and four scalars, whatever the number
    of samples.

    Args:
        lo_ms: lower edge of the first regular bucket (> 0).
        hi_ms: upper edge of the last regular bucket (> lo_ms; ``hi_ms / lo_ms`` a power of 10 keeps
            the edges round).
        per_decade: buckets per factor of 10.
    """

    def __init__(self, lo_ms: float = 0.01, hi_ms: float = 100_000.0, per_decade: int = 20) -> None:
        if not (lo_ms > 0 and hi_ms > lo_ms and math.isfinite(hi_ms)):
            raise ValueError(f"need 0 < lo_ms < hi_ms < inf, got lo_ms={lo_ms}, hi_ms={hi_ms}")
        if isinstance(per_decade, bool) or int(per_decade) != per_decade or per_decade < 1:
            raise ValueError(f"per_decade must be an integer >= 1, got {per_decade!r}")
        self.lo_ms = float(lo_ms)
        self.hi_ms = float(hi_ms)
        self.per_decade = int(per_decade)
        self._n = int(math.ceil(round(math.log10(self.hi_ms / self.lo_ms) * self.per_decade, 9)))
        self._r = 10.0 ** (1.0 / self.per_decade)
        # index 0: underflow, 1..n: regular buckets, n + 1: overflow
        self._counts = np.zeros(self._n + 2, np.int64)
        self.count = 0
        self.sum = 0.0
        self.min: float | None = None
        self.max: float | None = None

    # ------------------------------------------------------------------------------- layout

    @property
    def relative_error(self) -> float:
        """The percentile error bound ``r - 1`` (see the class docstring)."""
        return self._r - 1.0

    def bucket_edges_ms(self) -> np.ndarray:
        """(n + 1,) edges of the regular buckets in ms, ``lo_ms`` .. ``hi_ms``."""
        edges = self.lo_ms * 10.0 ** (np.arange(self._n + 1, dtype=np.float64) / self.per_decade)
        edges[-1] = self.hi_ms
        return edges

    def _same_layout(self, other: "LatencyHistogram") -> bool:
        return (self.lo_ms, self.hi_ms, self.per_decade) == (other.lo_ms, other.hi_ms, other.per_decade)

    def _index(self, ms: np.ndarray) -> np.ndarray:
        """Storage index (0 underflow, n + 1 overflow) of finite values."""
        pos = np.floor(np.log10(np.maximum(ms, self.lo_ms) / self.lo_ms) * self.per_decade)
        idx = np.clip(pos, 0, self._n - 1).astype(np.int64) + 1
        idx[ms < self.lo_ms] = 0
        idx[ms >= self.hi_ms] = self._n + 1
        return idx

    # ------------------------------------------------------------------------------- adding

    def add(self, ms: float) -> None:
        """Count one latency in ms (non-finite values are ignored)."""
        ms = float(ms)
        if not math.isfinite(ms):
            return
        if ms < self.lo_ms:
            i = 0
        elif ms >= self.hi_ms:
            i = self._n + 1
        else:
            i = min(int(math.log10(ms / self.lo_ms) * self.per_decade), self._n - 1) + 1
        self._counts[i] += 1
        self.count += 1
        self.sum += ms
        self.min = ms if self.min is None else min(self.min, ms)
        self.max = ms if self.max is None else max(self.max, ms)

    def add_many(self, values_ms: Iterable[float]) -> None:
        """Count many latencies at once (vectorised; non-finite values are ignored)."""
        a = np.asarray(values_ms, dtype=np.float64).ravel()
        a = a[np.isfinite(a)]
        if not a.size:
            return
        self._counts += np.bincount(self._index(a), minlength=self._n + 2)
        self.count += int(a.size)
        self.sum += float(a.sum())
        lo, hi = float(a.min()), float(a.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        """Add ``other``'s counts to this histogram (same layout required); returns ``self``."""
        if not self._same_layout(other):
            raise ValueError(f"cannot merge histograms with different layouts: "
                             f"{(self.lo_ms, self.hi_ms, self.per_decade)} vs "
                             f"{(other.lo_ms, other.hi_ms, other.per_decade)}")
        if not other.count:
            return self
        self._counts += other._counts
        self.count += other.count
        self.sum += other.sum
        self.min = other.min if self.min is None else min(self.min, other.min)
        self.max = other.max if self.max is None else max(self.max, other.max)
        return self

    def reset(self) -> None:
        """Forget every sample (the layout stays)."""
        self._counts[:] = 0
        self.count, self.sum, self.min, self.max = 0, 0.0, None, None

    # ------------------------------------------------------------------------------- reading

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def percentile(self, p: float) -> float | None:
        """Estimated ``p``-th percentile in ms (0 <= p <= 100); None when empty. See the class
        docstring for the error bound."""
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {p}")
        if not self.count:
            return None
        rank = p / 100.0 * self.count                         # continuous rank in [0, count]
        cum = np.cumsum(self._counts)
        i = int(np.searchsorted(cum, rank, side="left"))       # first bucket with cum >= rank
        i = min(i, self._n + 1)
        while self._counts[i] == 0:                            # rank 0: the first non-empty bucket
            i += 1
        before = float(cum[i] - self._counts[i])
        f = min(max((rank - before) / float(self._counts[i]), 0.0), 1.0)
        if i == 0:                                             # underflow: [min, lo_ms)
            lo = min(self.min, self.lo_ms)
            value = lo + f * (self.lo_ms - lo)
        elif i == self._n + 1:                                 # overflow: [hi_ms, max]
            hi = max(self.max, self.hi_ms)
            value = self.hi_ms + f * (hi - self.hi_ms)
        else:
            value = self.lo_ms * self._r ** (i - 1 + f)
        return float(min(max(value, self.min), self.max))

    def percentiles(self, ps=(50, 95, 99)) -> dict:
        """``{"p50": ms, ...}``; every value None when empty (the shape of ``stream.output.percentiles``)."""
        return {f"p{p}": self.percentile(p) for p in ps}

    def cumulative_buckets(self, bounds_s) -> list[tuple[float, int]]:
        """Prometheus-style cumulative counts: ``[(le_seconds, samples <= le), ..., (inf, count)]``.

        Exact when every bound is a bucket edge (:meth:`bucket_edges_ms` / 1000), e.g. 0.001, 0.01,
        0.1, 1 s with the default layout (buckets are half-open, so a sample exactly on an edge counts
        in the bucket above it); a bucket that straddles a bound is counted above it (the
        count is never too high, so it stays a valid lower bound). Underflow samples (0 and negative
        values included) are at or below every bound >= ``lo_ms``; overflow samples only in ``+Inf``.
        Bounds are sorted; a trailing ``inf`` is added if missing.
        """
        bounds = sorted(float(b) for b in bounds_s)
        if bounds and math.isnan(bounds[-1]):
            raise ValueError("bounds must not be NaN")
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        # upper edge (ms) of each storage index: underflow lo_ms, regular edges, overflow inf
        upper = np.concatenate([self.bucket_edges_ms(), [math.inf]])
        cum = np.cumsum(self._counts)
        out = []
        for b in bounds:
            if b == math.inf:
                out.append((b, int(self.count)))
                continue
            k = int(np.searchsorted(upper, b * 1000.0 * (1 + 1e-9), side="right"))  # buckets fully <= b
            out.append((b, int(cum[k - 1]) if k else 0))
        return out

    # ------------------------------------------------------------------------------- JSON

    def to_dict(self) -> dict:
        """JSON-serialisable form; only the non-empty buckets are listed, as ``[index, count]`` with
        index 0 the underflow and ``n + 1`` the overflow bucket."""
        nz = np.flatnonzero(self._counts)
        return {"lo_ms": self.lo_ms, "hi_ms": self.hi_ms, "per_decade": self.per_decade,
                "count": int(self.count), "sum": float(self.sum), "min": self.min, "max": self.max,
                "buckets": [[int(i), int(self._counts[i])] for i in nz]}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyHistogram":
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on an inconsistent dict."""
        h = cls(d.get("lo_ms", 0.01), d.get("hi_ms", 100_000.0), d.get("per_decade", 20))
        for pair in d.get("buckets", ()):
            i, c = int(pair[0]), int(pair[1])
            if not 0 <= i < h._counts.size or c < 0:
                raise ValueError(f"bad histogram bucket {pair!r} (indices 0..{h._counts.size - 1})")
            h._counts[i] += c
        h.count = int(h._counts.sum())
        if h.count != int(d.get("count", h.count)):
            raise ValueError(f"histogram count {d.get('count')} != sum of its buckets {h.count}")
        h.sum = float(d.get("sum", 0.0))
        h.min = None if d.get("min") is None else float(d["min"])
        h.max = None if d.get("max") is None else float(d["max"])
        if h.count and (h.min is None or h.max is None):
            raise ValueError("a non-empty histogram needs min and max")
        return h

    def __repr__(self) -> str:
        q = self.percentiles()
        return f"LatencyHistogram(count={self.count}, min={self.min}, max={self.max}, " + \
            ", ".join(f"{k}={v:.3g}" if v is not None else f"{k}=None" for k, v in q.items()) + ")"


class RecentWindow:
    """The last ``maxlen`` values (older ones fall out), with a median for a status line."""

    def __init__(self, maxlen: int) -> None:
        if isinstance(maxlen, bool) or int(maxlen) != maxlen or maxlen < 1:
            raise ValueError(f"maxlen must be an integer >= 1, got {maxlen!r}")
        self.values: deque[float] = deque(maxlen=int(maxlen))

    def add(self, value: float) -> None:
        self.values.append(float(value))

    def __len__(self) -> int:
        return len(self.values)

    def median(self) -> float | None:
        """Median of the window; None when empty."""
        return float(np.median(np.fromiter(self.values, np.float64, len(self.values)))) if self.values else None
