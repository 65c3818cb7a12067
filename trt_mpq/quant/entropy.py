"""TensorRT's entropy calibration: the threshold whose quantization of a histogram loses the least information.

Every candidate threshold (each bin edge from ``levels`` up) is scored by KL(P || Q). Scoring them one by one
costs O(bins) numpy calls each, 1,920 candidates per tensor. ``_screen`` scores all of them at once from prefix
sums over the bins (each candidate's merged groups are contiguous runs of bins); the few candidates it cannot
tell apart from the best are then scored exactly, one by one, so the threshold is the one the exact search
finds.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

EPS = 1e-4  # the counts moved into every empty bin so that KL stays finite
SCREEN_TOLERANCE = 1e-7  # candidates this close to the screened best (relative, and absolute) are scored exactly
ALWAYS_EXACT = 8  # and at least this many of the best screened ones


class Histogram(Protocol):
    counts: np.ndarray
    amax: float

    @property
    def edges(self) -> np.ndarray: ...


def _smooth(counts: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Move ``eps`` counts into every empty bin, taken evenly from the others, so that KL stays finite (on raw
    counts, as the reference implementations do: a populated bin holds at least one value, far more than eps)."""
    empty = counts == 0
    n_empty = int(empty.sum())
    if n_empty == 0 or n_empty == counts.size:
        return counts
    taken = eps * n_empty / (counts.size - n_empty)
    return np.where(empty, eps, np.maximum(counts - taken, eps))


def entropy_threshold(hist: Histogram, levels: int = 128) -> float:
    """TensorRT's entropy calibration (Migacz, GTC 2017): the threshold whose ``levels``-level quantization
    minimises KL(P || Q). P: the histogram up to the threshold, values beyond it clipped into the last bin;
    Q: the same bins merged into ``levels`` groups, each group's count spread evenly over the bins that P
    populates. Exact zeros (the spike a ReLU makes) are left out: bin 0 gets its neighbour's count, since a
    zero is exact at any scale and counting it would only pull the threshold down. Tensors are treated as
    |x| with 128 levels whether signed or not: TensorRT's INT8 is symmetric, so a post-ReLU tensor uses the
    positive half of the grid."""
    counts = hist.counts.astype(np.float64)
    if len(counts) > 1:
        counts[0] = counts[1]
    if counts.sum() == 0 or hist.amax == 0:
        return hist.amax
    last = int(np.nonzero(counts)[0][-1]) + 1
    if last <= levels:
        return float(hist.edges[last])
    screened, trusted = _screen(counts, levels, last)
    finite = np.isfinite(screened) & trusted
    best = float(screened[finite].min()) if finite.any() else np.inf
    near = ~trusted | np.isnan(screened) | (screened <= best + SCREEN_TOLERANCE * (1.0 + abs(best)))
    near[np.argsort(screened, kind="stable")[:ALWAYS_EXACT]] = True
    exact = np.full(len(screened), np.inf)
    for k in np.flatnonzero(near):
        exact[k] = _divergence(counts, levels, levels + int(k))
    return float(hist.edges[levels + int(np.argmin(exact))])


def _divergence(counts: np.ndarray, levels: int, i: int) -> float:
    """KL(P || Q) of the candidate threshold at bin edge ``i``, computed as written."""
    ref = counts[:i]
    p, nonzero = ref.copy(), counts[:i] > 0
    if i < len(counts):
        p[i - 1] += counts[i:].sum()
        nonzero[i - 1] = p[i - 1] > 0
    groups = np.arange(i) * levels // i
    sums = np.bincount(groups, weights=ref, minlength=levels)
    filled = np.bincount(groups, weights=nonzero.astype(np.float64), minlength=levels)
    q = np.where(nonzero, (sums / np.maximum(filled, 1))[groups], 0.0)  # each group's mean, then spread
    if q.sum() == 0:
        return np.inf
    p, q = _smooth(p), _smooth(q)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def _screen(counts: np.ndarray, levels: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """KL of every candidate ``levels..last`` at once, and whether each screened value can be trusted.

    With T the total count, P's smoothed total is T and Q's is C_i, the count below the threshold, so
    KL = (A - B) / T + log(C_i / T): A = sum over P's populated bins of (p - t_p) log(p - t_p), B = sum over
    groups of (the group's P mass less its share of t_p) x log(its Q value less t_q), t_p and t_q the counts
    smoothing takes from each populated bin. A is expanded to third order in t_p (t_p is eps x empty / populated
    bins, tiny against a count of at least one) over prefix sums; a candidate where that is not safe is marked
    untrusted and scored exactly."""
    n = len(counts)
    i = np.arange(levels, last + 1)
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])[np.minimum(i, n)]  # beyond the threshold
    total = counts.sum()
    populated = counts > 0
    safe = np.where(populated, counts, 1.0)

    def prefix(v: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(np.where(populated, v, 0.0))])

    c_sum, nz_sum = prefix(counts), prefix(np.ones(n))
    f1, f2 = prefix(safe * np.log(safe)), prefix(np.log(safe) + 1.0)
    f3, f4 = prefix(1.0 / safe), prefix(1.0 / safe ** 2)

    lastbin = counts[i - 1] + tail
    lastnz = lastbin > 0
    populated_p = nz_sum[i - 1] + lastnz
    empty_p = i - populated_p
    tp = np.where(empty_p > 0, EPS * empty_p / np.maximum(populated_p, 1), 0.0)

    g = np.arange(levels + 1)
    bounds = np.minimum((g[None, :] * i[:, None] + levels - 1) // levels, i[:, None])  # each group's first bin
    sums = np.diff(c_sum[bounds], axis=1)
    filled = np.diff(nz_sum[bounds], axis=1)
    filled[:, -1] = nz_sum[i - 1] - nz_sum[bounds[:, -2]] + lastnz  # the last group holds bin i-1, with the tail
    mass = sums.copy()
    mass[:, -1] += tail
    has_q = (sums > 0) & (filled > 0)
    populated_q = np.where(has_q, filled, 0).sum(axis=1)
    empty_q = i - populated_q
    tq = np.where(empty_q > 0, EPS * empty_q / np.maximum(populated_q, 1), 0.0)
    mean = np.where(has_q, sums / np.maximum(filled, 1), 0.0)
    qval = np.where(has_q, mean - tq[:, None], EPS)
    share = mass - filled * tp[:, None]
    b = np.where(filled > 0, share * np.log(np.maximum(qval, EPS)), 0.0).sum(axis=1)

    j = i - 1  # bins below the last one: the expansion; the last one (tail folded in) exactly
    a = f1[j] - tp * f2[j] + tp ** 2 / 2 * f3[j] + tp ** 3 / 6 * f4[j]
    top = np.maximum(lastbin - tp, EPS)
    a = a + np.where(lastnz, top * np.log(top), 0.0)
    below = c_sum[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (a - b) / total + np.log(below / total)
    kl = np.where(populated_q > 0, kl, np.inf)
    smallest = counts[populated].min() if populated.any() else 1.0
    least_q = np.where(has_q, qval, np.inf).min(axis=1)
    trusted = (tp < 1e-2 * smallest) & (smallest - tp > EPS) & (least_q > 10 * EPS) & (lastbin - tp > EPS)
    return kl, trusted
