"""Numba kernels of the PAF grouping (the fast path).

Same algorithm, step for step and float operation for float operation, as ``_reference.py``; the
tests assert both return identical poses. See ``decoder.py`` for what the steps mean.
"""
from __future__ import annotations

import math
import sys

import numpy as np
from numba import njit


def _load_numpy_support_without_blas_probe() -> None:
    """Import Numba's NumPy support now, with SciPy's BLAS hidden from it when SciPy's linalg is not
    loaded yet. Numba loads it at the first compilation or cache load and probes for a BLAS by
    importing ``scipy.linalg`` (~0.2 s of every pipeline start, on the inference process's critical
    path); these kernels use no BLAS (no ``np.dot`` / ``np.linalg``), so the probe's answer does not
    matter to them. A later ``import scipy.linalg`` in the process works as usual."""
    name = "scipy.linalg.cython_blas"
    hide = "scipy.linalg" not in sys.modules and name not in sys.modules
    if hide:
        sys.modules[name] = None  # an import of it raises ImportError
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        if hide and sys.modules.get(name, 0) is None:
            del sys.modules[name]


_load_numpy_support_without_blas_probe()


@njit(cache=True, nogil=True)
def _refine(heat, k, y, x):
    """Sub-cell position of a peak: vertex of the parabola through the 3 values on each axis.

    Only +, -, *, / (no log), so the NumPy reference computes the same bits; offsets are clipped
    to half a cell.
    """
    _, h, w = heat.shape
    c = float(heat[k, y, x])
    ox = 0.0
    oy = 0.0
    if 0 < x < w - 1:
        l, r = float(heat[k, y, x - 1]), float(heat[k, y, x + 1])
        den = l - 2.0 * c + r
        if den < 0.0:
            ox = min(max(0.5 * (l - r) / den, -0.5), 0.5)
    if 0 < y < h - 1:
        u, d = float(heat[k, y - 1, x]), float(heat[k, y + 1, x])
        den = u - 2.0 * c + d
        if den < 0.0:
            oy = min(max(0.5 * (u - d) / den, -0.5), 0.5)
    return x + ox, y + oy


@njit(cache=True, nogil=True)
def _peak_buffers(k_count, max_peaks):
    """starts (K + 1,) and room for max_peaks peaks per type: ix, iy, fx, fy, score."""
    cap = k_count * max_peaks
    return (np.zeros(k_count + 1, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64),
            np.empty(cap, np.float64), np.empty(cap, np.float64), np.empty(cap, np.float64))


@njit(cache=True, nogil=True)
def _far_from_kept(ix, iy, first, n, x, y, md2):
    """True when (x, y) is at least sqrt(md2) cells from every peak kept so far (rows first:n)."""
    for q in range(first, n):
        dx = float(x - ix[q])
        dy = float(y - iy[q])
        if dx * dx + dy * dy < md2:
            return False
    return True


@njit(cache=True, nogil=True)
def find_peaks(heat, threshold, min_dist, max_peaks):
    """Local maxima (3x3) above ``threshold``, duplicates within ``min_dist`` cells suppressed.

    Returns:
        starts (K + 1,) int64: peaks of type k are rows starts[k]:starts[k+1];
        ix, iy (P,) int64 grid position; fx, fy (P,) float64 refined position; score (P,) float64.
        Within a type, peaks are ordered by descending score (ties: raster order).
    """
    k_count, h, w = heat.shape
    starts, ix, iy, fx, fy, sc = _peak_buffers(k_count, max_peaks)
    bx = np.empty(h * w, np.int64)
    by = np.empty(h * w, np.int64)
    bs = np.empty(h * w, np.float64)
    rowmax = np.empty((h, w), heat.dtype)
    flag = np.empty(w, np.uint8)
    md2 = min_dist * min_dist
    n = 0
    for k in range(k_count):
        # separable 3x3 max, written branch-free so that LLVM vectorises both loops: row maxima
        # first, then a pixel is a peak when it is >= the row maxima above, at and below it
        for y in range(h):
            if w == 1:
                rowmax[y, 0] = heat[k, y, 0]
                continue
            rowmax[y, 0] = max(heat[k, y, 0], heat[k, y, 1])
            for x in range(1, w - 1):
                rowmax[y, x] = max(max(heat[k, y, x - 1], heat[k, y, x]), heat[k, y, x + 1])
            rowmax[y, w - 1] = max(heat[k, y, w - 2], heat[k, y, w - 1])
        nb = 0
        for y in range(h):
            y0 = y - 1 if y > 0 else 0
            y1 = y + 1 if y < h - 1 else h - 1
            hit = 0
            for x in range(w):
                v = heat[k, y, x]
                f = (v >= threshold) & (v >= rowmax[y0, x]) & (v >= rowmax[y, x]) & (v >= rowmax[y1, x])
                flag[x] = f
                hit |= f
            if hit:
                for x in range(w):
                    if flag[x]:
                        bx[nb] = x
                        by[nb] = y
                        bs[nb] = heat[k, y, x]
                        nb += 1
        order = np.argsort(-bs[:nb], kind="mergesort")
        first = n
        for o in order:
            if n - first >= max_peaks:
                break
            if _far_from_kept(ix, iy, first, n, bx[o], by[o], md2):
                ix[n] = bx[o]
                iy[n] = by[o]
                sc[n] = bs[o]
                fx[n], fy[n] = _refine(heat, k, by[o], bx[o])
                n += 1
        starts[k + 1] = n
    return starts, ix[:n], iy[:n], fx[:n], fy[:n], sc[:n]


@njit(cache=True, nogil=True)
def select_peaks(heat, cand_score, cand_index, threshold, min_dist, max_peaks):
    """``find_peaks`` from a list of 3x3 maxima already found (the graph's ``peak_scores`` /
    ``peak_index``: per type, descending, ties in raster order, -inf past the last maximum).

    The same threshold, minimum distance, ``max_peaks`` and sub-cell refinement as ``find_peaks``.
    Returns its outputs and ``complete``: False when some type's list ended while every entry was
    still above the threshold and fewer than ``max_peaks`` were kept (more maxima may exist: the
    caller scans the map instead).
    """
    k_count, h, w = heat.shape
    n_cand = cand_score.shape[1]
    starts, ix, iy, fx, fy, sc = _peak_buffers(k_count, max_peaks)
    md2 = min_dist * min_dist
    complete = True
    n = 0
    for k in range(k_count):
        first = n
        exhausted = True
        for c in range(n_cand):
            if n - first >= max_peaks or not cand_score[k, c] >= threshold:
                exhausted = False
                break
            flat = cand_index[k, c]
            y = flat // w
            x = flat - y * w
            if _far_from_kept(ix, iy, first, n, x, y, md2):
                ix[n] = x
                iy[n] = y
                sc[n] = heat[k, y, x]
                fx[n], fy[n] = _refine(heat, k, y, x)
                n += 1
        if exhausted and n - first < max_peaks:
            complete = False
        starts[k + 1] = n
    return starts, ix[:n], iy[:n], fx[:n], fy[:n], sc[:n], complete


@njit(cache=True, nogil=True)
def _middle_out(n):
    """0..n-1 by decreasing distance from the nearer end: the middle first, the ends last."""
    key = np.empty(n, np.int64)
    for s in range(n):
        key[s] = -min(s, n - 1 - s)
    return np.argsort(key, kind="mergesort")


@njit(cache=True, nogil=True)
def _cubic(t):
    """OpenCV's bicubic tap weights (a = -0.75) at fractional offset t (taps floor - 1 .. floor + 2)."""
    a = -0.75
    w0 = ((a * (t + 1.0) - 5.0 * a) * (t + 1.0) + 8.0 * a) * (t + 1.0) - 4.0 * a
    w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    w2 = ((a + 2.0) * (1.0 - t) - (a + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0
    return w0, w1, w2, 1.0 - w0 - w1 - w2


@njit(cache=True, nogil=True)
def _bicubic_pair(maps, c, y, x, factor):
    """Channels c and c + 1 of ``maps`` (at ``factor`` times the working stride) at working cell
    (y, x): the value ``cv2.resize(..., INTER_CUBIC)`` to the working size has there (half-pixel
    centres, edge replicated), computed for this one cell."""
    h, w = maps.shape[1], maps.shape[2]
    sy = (y + 0.5) / factor - 0.5
    sx = (x + 0.5) / factor - 0.5
    y0 = int(math.floor(sy))
    x0 = int(math.floor(sx))
    wy = _cubic(sy - y0)
    wx = _cubic(sx - x0)
    u = 0.0
    v = 0.0
    for i in range(4):
        yy = min(max(y0 - 1 + i, 0), h - 1)
        ru = 0.0
        rv = 0.0
        for j in range(4):
            xx = min(max(x0 - 1 + j, 0), w - 1)
            ru += wx[j] * maps[c, yy, xx]
            rv += wx[j] * maps[c + 1, yy, xx]
        u += wy[i] * ru
        v += wy[i] * rv
    return u, v


@njit(cache=True, nogil=True)
def score_limbs(starts, fx, fy, paf, limbs, n_samples, paf_threshold, min_fraction, max_length,
                factor=1.0, grid_h=0, grid_w=0):
    """Score every candidate connection by a line integral over the PAF and match greedily.

    For a candidate a -> b (sub-cell peak positions: peaks of neighbouring keypoints of a small
    person may share a cell) the PAF is sampled at ``n_samples`` evenly spaced cells on the segment;
    each sample contributes its projection on the unit direction. Accepted when at least
    ``min_fraction`` of the samples exceed ``paf_threshold`` and the mean plus the length prior
    ``min(0, max_length / |ab| - 1)`` is positive (OpenPose's criterion). Per limb, candidates are
    taken by descending score, each peak at most once (greedy bipartite matching).

    ``factor`` > 1: ``paf`` is at ``factor`` times the working stride (the network's own maps) and
    each sample is its bicubic value at the working cell (``_bicubic_pair``) on a working grid of
    ``grid_h`` x ``grid_w`` cells; the same scores as upsampling first, without the upsampling.

    Returns:
        limb, pa, pb (C,) int64 peak rows; score (C,) float64 — in limb order, best first.
    """
    n_limbs = limbs.shape[0]
    h, w = paf.shape[1], paf.shape[2]
    if factor != 1.0:
        h, w = grid_h, grid_w
    total = 0
    for li in range(n_limbs):
        a, b = limbs[li, 0], limbs[li, 1]
        total += min(starts[a + 1] - starts[a], starts[b + 1] - starts[b])
    out_l = np.empty(total, np.int64)
    out_a = np.empty(total, np.int64)
    out_b = np.empty(total, np.int64)
    out_s = np.empty(total, np.float64)
    n = 0
    inv = 1.0 / (n_samples - 1)
    max_misses = n_samples - int(math.ceil(min_fraction * n_samples))
    visit = _middle_out(n_samples)
    dbuf = np.empty(n_samples, np.float64)
    for li in range(n_limbs):
        a, b = limbs[li, 0], limbs[li, 1]
        sa, ea, sb, eb = starts[a], starts[a + 1], starts[b], starts[b + 1]
        na, nb = ea - sa, eb - sb
        if na == 0 or nb == 0:
            continue
        cs = np.empty(na * nb, np.float64)
        ci = np.empty(na * nb, np.int64)
        cj = np.empty(na * nb, np.int64)
        nc = 0
        for i in range(sa, ea):
            for j in range(sb, eb):
                dx = fx[j] - fx[i]
                dy = fy[j] - fy[i]
                norm = math.sqrt(dx * dx + dy * dy)
                if norm < 1e-9:
                    continue
                # Samples are visited middle-out (see `visit`) and the candidate is dropped as soon
                # as more than max_misses disagree: exact, since it would fail min_fraction anyway.
                # Wrong pairs fail on their middle samples; their end samples lie inside the PAFs
                # of the peaks' true limbs and would agree. The mean is then summed in sample
                # order, as the reference does.
                misses = 0
                for q in range(n_samples):
                    s = visit[q]
                    t = s * inv
                    sx = min(int(fx[i] + t * dx + 0.5), w - 1)
                    sy = min(int(fy[i] + t * dy + 0.5), h - 1)
                    if factor == 1.0:
                        d = (float(paf[2 * li, sy, sx]) * dx + float(paf[2 * li + 1, sy, sx]) * dy) / norm
                    else:
                        pu, pv = _bicubic_pair(paf, 2 * li, sy, sx, factor)
                        d = (pu * dx + pv * dy) / norm
                    dbuf[s] = d
                    if not d > paf_threshold:
                        misses += 1
                        if misses > max_misses:
                            break
                if misses > max_misses:
                    continue
                acc = 0.0
                for s in range(n_samples):
                    acc += dbuf[s]
                hits = n_samples - misses
                prior = max_length / norm - 1.0
                if prior > 0.0:
                    prior = 0.0
                score = acc / n_samples + prior
                if hits >= min_fraction * n_samples and score > 0.0:
                    cs[nc] = score
                    ci[nc] = i
                    cj[nc] = j
                    nc += 1
        order = np.argsort(-cs[:nc], kind="mergesort")
        used_a = np.zeros(na, np.bool_)
        used_b = np.zeros(nb, np.bool_)
        taken = 0
        limit = min(na, nb)
        for o in order:
            i, j = ci[o], cj[o]
            if used_a[i - sa] or used_b[j - sb]:
                continue
            used_a[i - sa] = True
            used_b[j - sb] = True
            out_l[n] = li
            out_a[n] = i
            out_b[n] = j
            out_s[n] = cs[o]
            n += 1
            taken += 1
            if taken >= limit:
                break
    return out_l[:n], out_a[:n], out_b[:n], out_s[:n]


@njit(cache=True, nogil=True)
def assemble(n_peaks, k_count, limbs, conn_l, conn_a, conn_b, conn_s):
    """Join connections into people, merging partial skeletons that share no keypoint type.

    Returns:
        slots (N, K) int64 peak row per keypoint (-1: none); limb_score (N,) float64 sum of the
        connection scores of each person. People are in order of creation.
    """
    owner = np.full(n_peaks, -1, np.int64)
    cap = max(n_peaks, 1)
    slots = np.full((cap, k_count), -1, np.int64)
    lsum = np.zeros(cap, np.float64)
    alive = np.zeros(cap, np.bool_)
    n = 0
    for c in range(conn_l.shape[0]):
        ka, kb = limbs[conn_l[c], 0], limbs[conn_l[c], 1]
        i, j, s = conn_a[c], conn_b[c], conn_s[c]
        p, q = owner[i], owner[j]
        if p < 0 and q < 0:
            slots[n, ka] = i
            slots[n, kb] = j
            owner[i] = n
            owner[j] = n
            lsum[n] = s
            alive[n] = True
            n += 1
        elif p >= 0 and q < 0:
            if slots[p, kb] < 0:
                slots[p, kb] = j
                owner[j] = p
                lsum[p] += s
        elif p < 0 and q >= 0:
            if slots[q, ka] < 0:
                slots[q, ka] = i
                owner[i] = q
                lsum[q] += s
        elif p != q:
            disjoint = True
            for k in range(k_count):
                if slots[p, k] >= 0 and slots[q, k] >= 0:
                    disjoint = False
                    break
            if disjoint:
                for k in range(k_count):
                    if slots[q, k] >= 0:
                        slots[p, k] = slots[q, k]
                        owner[slots[q, k]] = p
                        slots[q, k] = -1
                lsum[p] += lsum[q] + s
                alive[q] = False
        else:
            lsum[p] += s
    keep = np.nonzero(alive[:n])[0]
    return slots[keep], lsum[keep]


@njit(cache=True, nogil=True)
def finish(heat, slots, ix, iy, fx, fy, score, min_keypoints, min_score, fill_missing, fill_margin):
    """Score, filter and sort people; fill missing keypoints from the heatmap inside each box.

    Person score = mean peak score x sqrt(n / K), n = keypoints found by grouping.

    Returns:
        kps (N, K, 3) float64 x, y, score in working-grid cells; scores (N,) float64, descending.
    """
    k_count, h, w = heat.shape
    m = slots.shape[0]
    pscore = np.zeros(m, np.float64)
    keep = np.zeros(m, np.bool_)
    for p in range(m):
        cnt = 0
        acc = 0.0
        for k in range(k_count):
            r = slots[p, k]
            if r >= 0:
                acc += score[r]
                cnt += 1
        if cnt > 0:
            pscore[p] = acc / cnt * math.sqrt(cnt / k_count)
        keep[p] = cnt >= min_keypoints and pscore[p] >= min_score
    idx = np.nonzero(keep)[0]
    order = idx[np.argsort(-pscore[idx], kind="mergesort")]
    kps = np.zeros((order.shape[0], k_count, 3), np.float64)
    for n in range(order.shape[0]):
        p = order[n]
        x0, y0, x1, y1 = np.inf, np.inf, -np.inf, -np.inf
        for k in range(k_count):
            r = slots[p, k]
            if r >= 0:
                kps[n, k, 0] = fx[r]
                kps[n, k, 1] = fy[r]
                kps[n, k, 2] = score[r]
                x0, x1 = min(x0, fx[r]), max(x1, fx[r])
                y0, y1 = min(y0, fy[r]), max(y1, fy[r])
        if not fill_missing:
            continue
        margin = fill_margin * max(x1 - x0, y1 - y0) + 1.0
        bx0 = max(int(math.floor(x0 - margin)), 0)
        by0 = max(int(math.floor(y0 - margin)), 0)
        bx1 = min(int(math.ceil(x1 + margin)), w - 1)
        by1 = min(int(math.ceil(y1 + margin)), h - 1)
        for k in range(k_count):
            if slots[p, k] >= 0:
                continue
            best = 0.0
            bxk = -1
            byk = -1
            for y in range(by0, by1 + 1):
                for x in range(bx0, bx1 + 1):
                    if heat[k, y, x] > best:
                        best = heat[k, y, x]
                        bxk = x
                        byk = y
            if bxk >= 0:
                kps[n, k, 0], kps[n, k, 1] = _refine(heat, k, byk, bxk)
                kps[n, k, 2] = best
    return kps, pscore[order]


@njit(cache=True, nogil=True)
def group(heat, paf, limbs, peak_threshold, min_dist, max_peaks, n_samples, paf_threshold, min_fraction,
          max_length, min_keypoints, min_score, fill_missing, fill_margin):
    """All steps in one call (one dispatch instead of four)."""
    starts, ix, iy, fx, fy, sc = find_peaks(heat, peak_threshold, min_dist, max_peaks)
    cl, ca, cb, cs = score_limbs(starts, fx, fy, paf, limbs, n_samples, paf_threshold, min_fraction, max_length,
                                 1.0, 0, 0)
    slots, _ = assemble(ix.shape[0], heat.shape[0], limbs, cl, ca, cb, cs)
    return finish(heat, slots, ix, iy, fx, fy, sc, min_keypoints, min_score, fill_missing, fill_margin)


@njit(cache=True, nogil=True)
def group_candidates(heat, cand_score, cand_index, paf, factor, limbs, peak_threshold, min_dist, max_peaks,
                     n_samples, paf_threshold, min_fraction, max_length, min_keypoints, min_score, fill_missing,
                     fill_margin):
    """``group`` on the graph's outputs: heatmaps at the working stride with their peak candidates,
    PAFs at ``factor`` times the working stride."""
    starts, ix, iy, fx, fy, sc, complete = select_peaks(heat, cand_score, cand_index, peak_threshold, min_dist,
                                                        max_peaks)
    if not complete:
        starts, ix, iy, fx, fy, sc = find_peaks(heat, peak_threshold, min_dist, max_peaks)
    cl, ca, cb, cs = score_limbs(starts, fx, fy, paf, limbs, n_samples, paf_threshold, min_fraction, max_length,
                                 factor, heat.shape[1], heat.shape[2])
    slots, _ = assemble(ix.shape[0], heat.shape[0], limbs, cl, ca, cb, cs)
    return finish(heat, slots, ix, iy, fx, fy, sc, min_keypoints, min_score, fill_missing, fill_margin)
