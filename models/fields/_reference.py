"""NumPy reference of the PAF grouping: the algorithm of ``_numba.py``, vectorised where NumPy
can and plain Python where the step is inherently sequential (greedy matching, assembly).

Kept for tests (the Numba kernels must return identical poses) and for the grouping benchmark.
Float operations are done in the same order as the kernels so that ties break identically.
"""
from __future__ import annotations

import math

import numpy as np


def _refine(heat: np.ndarray, k: np.ndarray, y: np.ndarray, x: np.ndarray):
    """Vectorised twin of ``_numba._refine``."""
    _, h, w = heat.shape
    k, y, x = np.asarray(k), np.asarray(y), np.asarray(x)
    c = heat[k, y, x].astype(np.float64)

    def axis(lo_v, hi_v, inside):
        lo_v, hi_v = lo_v.astype(np.float64), hi_v.astype(np.float64)
        den = lo_v - 2.0 * c + hi_v
        ok = inside & (den < 0.0)
        off = np.zeros(c.shape, np.float64)
        off[ok] = np.minimum(np.maximum(0.5 * (lo_v[ok] - hi_v[ok]) / den[ok], -0.5), 0.5)
        return off

    xin = (x > 0) & (x < w - 1)
    yin = (y > 0) & (y < h - 1)
    xm, xp = np.clip(x - 1, 0, w - 1), np.clip(x + 1, 0, w - 1)
    ym, yp = np.clip(y - 1, 0, h - 1), np.clip(y + 1, 0, h - 1)
    ox = axis(heat[k, y, xm], heat[k, y, xp], xin)
    oy = axis(heat[k, ym, x], heat[k, yp, x], yin)
    return x + ox, y + oy


def find_peaks(heat, threshold, min_dist, max_peaks):
    k_count, h, w = heat.shape
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    is_max = heat >= threshold
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            is_max &= heat >= padded[:, dy:dy + h, dx:dx + w]
    kk, yy, xx = np.nonzero(is_max)
    vals = heat[kk, yy, xx].astype(np.float64)
    md2 = min_dist * min_dist
    starts = np.zeros(k_count + 1, np.int64)
    sel_rows = []
    for k in range(k_count):
        rows = np.nonzero(kk == k)[0]
        rows = rows[np.argsort(-vals[rows], kind="mergesort")]
        kept: list[int] = []
        for r in rows:
            if len(kept) >= max_peaks:
                break
            if kept:
                dxs = (xx[r] - xx[kept]).astype(np.float64)
                dys = (yy[r] - yy[kept]).astype(np.float64)
                if np.any(dxs * dxs + dys * dys < md2):
                    continue
            kept.append(r)
        sel_rows.extend(kept)
        starts[k + 1] = len(sel_rows)
    sel = np.asarray(sel_rows, dtype=np.int64)
    ix, iy = xx[sel].astype(np.int64), yy[sel].astype(np.int64)
    fx, fy = _refine(heat, kk[sel], iy, ix)
    return starts, ix, iy, fx, fy, vals[sel]


def score_limbs(starts, fx, fy, paf, limbs, n_samples, paf_threshold, min_fraction, max_length):
    out_l, out_a, out_b, out_s = [], [], [], []
    t = np.arange(n_samples) * (1.0 / (n_samples - 1))
    for li, (a, b) in enumerate(limbs):
        sa, ea, sb, eb = starts[a], starts[a + 1], starts[b], starts[b + 1]
        if ea == sa or eb == sb:
            continue
        xa, ya, xb, yb = fx[sa:ea], fy[sa:ea], fx[sb:eb], fy[sb:eb]
        dx = xb[None, :] - xa[:, None]                       # (na, nb)
        dy = yb[None, :] - ya[:, None]
        norm = np.sqrt(dx * dx + dy * dy)
        valid = norm >= 1e-9
        safe = np.where(valid, norm, 1.0)
        h, w = paf.shape[1:]
        sx = np.minimum((xa[:, None, None] + t * dx[:, :, None] + 0.5).astype(np.int64), w - 1)  # (na, nb, S)
        sy = np.minimum((ya[:, None, None] + t * dy[:, :, None] + 0.5).astype(np.int64), h - 1)
        vx = paf[2 * li][sy, sx].astype(np.float64)
        vy = paf[2 * li + 1][sy, sx].astype(np.float64)
        d = (vx * dx[:, :, None] + vy * dy[:, :, None]) / safe[:, :, None]
        acc = np.zeros(dx.shape)
        for s in range(n_samples):  # sequential, as the kernel sums
            acc = acc + d[:, :, s]
        hits = (d > paf_threshold).sum(axis=2)
        prior = np.minimum(max_length / safe - 1.0, 0.0)
        score = acc / n_samples + prior
        ok = valid & (hits >= min_fraction * n_samples) & (score > 0.0)
        ci, cj = np.nonzero(ok)
        cs = score[ci, cj]
        order = np.argsort(-cs, kind="mergesort")
        used_a, used_b = set(), set()
        limit = min(ea - sa, eb - sb)
        for o in order:
            i, j = int(ci[o]), int(cj[o])
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            out_l.append(li)
            out_a.append(sa + i)
            out_b.append(sb + j)
            out_s.append(float(cs[o]))
            if len(used_a) >= limit:
                break
    return (np.asarray(out_l, np.int64), np.asarray(out_a, np.int64), np.asarray(out_b, np.int64),
            np.asarray(out_s, np.float64))


def assemble(n_peaks, k_count, limbs, conn_l, conn_a, conn_b, conn_s):
    owner = [-1] * n_peaks
    people: list[list[int]] = []
    lsum: list[float] = []
    alive: list[bool] = []
    for li, i, j, s in zip(conn_l.tolist(), conn_a.tolist(), conn_b.tolist(), conn_s.tolist()):
        ka, kb = int(limbs[li][0]), int(limbs[li][1])
        p, q = owner[i], owner[j]
        if p < 0 and q < 0:
            slots = [-1] * k_count
            slots[ka], slots[kb] = i, j
            owner[i] = owner[j] = len(people)
            people.append(slots)
            lsum.append(s)
            alive.append(True)
        elif p >= 0 and q < 0:
            if people[p][kb] < 0:
                people[p][kb] = j
                owner[j] = p
                lsum[p] += s
        elif p < 0 and q >= 0:
            if people[q][ka] < 0:
                people[q][ka] = i
                owner[i] = q
                lsum[q] += s
        elif p != q:
            if all(x < 0 or y < 0 for x, y in zip(people[p], people[q])):
                for k, r in enumerate(people[q]):
                    if r >= 0:
                        people[p][k] = r
                        owner[r] = p
                people[q] = [-1] * k_count
                lsum[p] += lsum[q] + s
                alive[q] = False
        else:
            lsum[p] += s
    keep = [n for n, a in enumerate(alive) if a]
    slots = np.asarray([people[n] for n in keep], np.int64).reshape(len(keep), k_count)
    return slots, np.asarray([lsum[n] for n in keep], np.float64)


def finish(heat, slots, ix, iy, fx, fy, score, min_keypoints, min_score, fill_missing, fill_margin):
    k_count, h, w = heat.shape
    pscore = []
    for p in range(slots.shape[0]):
        cnt, acc = 0, 0.0
        for k in range(k_count):
            r = slots[p, k]
            if r >= 0:
                acc += float(score[r])
                cnt += 1
        pscore.append(acc / cnt * math.sqrt(cnt / k_count) if cnt else 0.0)
    pscore = np.asarray(pscore, np.float64)
    found = (slots >= 0).sum(axis=1)
    idx = np.nonzero((found >= min_keypoints) & (pscore >= min_score))[0]
    order = idx[np.argsort(-pscore[idx], kind="mergesort")]
    sl = slots[order]
    has = sl >= 0
    rows = np.where(has, sl, 0)
    kps = np.zeros((len(order), k_count, 3), np.float64)
    kps[..., 0] = np.where(has, fx[rows] if len(fx) else 0.0, 0.0)
    kps[..., 1] = np.where(has, fy[rows] if len(fy) else 0.0, 0.0)
    kps[..., 2] = np.where(has, score[rows] if len(score) else 0.0, 0.0)
    if fill_missing:
        for n in range(len(order)):
            xs, ys = kps[n, has[n], 0], kps[n, has[n], 1]
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            margin = fill_margin * max(x1 - x0, y1 - y0) + 1.0
            bx0, by0 = max(math.floor(x0 - margin), 0), max(math.floor(y0 - margin), 0)
            bx1, by1 = min(math.ceil(x1 + margin), w - 1), min(math.ceil(y1 + margin), h - 1)
            for k in np.nonzero(~has[n])[0]:
                box = heat[k, by0:by1 + 1, bx0:bx1 + 1]
                a = int(np.argmax(box))
                best = float(box.flat[a])
                if best > 0.0:
                    y, x = divmod(a, box.shape[1])
                    rx, ry = _refine(heat, np.array([k]), np.array([by0 + y]), np.array([bx0 + x]))
                    kps[n, k] = (rx[0], ry[0], best)
    return kps, pscore[order]


def group(heat, paf, limbs, peak_threshold, min_dist, max_peaks, n_samples, paf_threshold, min_fraction,
          max_length, min_keypoints, min_score, fill_missing, fill_margin):
    starts, ix, iy, fx, fy, sc = find_peaks(heat, peak_threshold, min_dist, max_peaks)
    cl, ca, cb, cs = score_limbs(starts, fx, fy, paf, limbs, n_samples, paf_threshold, min_fraction, max_length)
    slots, _ = assemble(ix.shape[0], heat.shape[0], limbs, cl, ca, cb, cs)
    return finish(heat, slots, ix, iy, fx, fy, sc, min_keypoints, min_score, fill_missing, fill_margin)
