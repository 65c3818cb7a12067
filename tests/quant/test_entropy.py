"""Entropy calibration's screened search finds the threshold the exhaustive one does (trt_mpq.quant.entropy)."""

from __future__ import annotations

import numpy as np
import pytest

from trt_mpq.quant import entropy
from trt_mpq.quant.entropy import _divergence, _screen, entropy_threshold
from trt_mpq.quant.ranges import AbsHistogram


def _exhaustive(h: AbsHistogram, levels: int = 128) -> float:
    """Every candidate scored as written, the first least one kept: the search before the screen."""
    counts = h.counts.astype(np.float64)
    counts[0] = counts[1]
    last = int(np.nonzero(counts)[0][-1]) + 1
    kl = [_divergence(counts, levels, i) for i in range(levels, last + 1)]
    return float(h.edges[levels + int(np.argmin(kl))])


def _histograms(seed: int) -> list[AbsHistogram]:
    r = np.random.default_rng(seed)
    draws = [r.standard_normal(50_000), np.maximum(r.standard_normal(80_000), 0), r.laplace(size=20_000) * 7,
             r.standard_t(2, 30_000), np.concatenate([r.uniform(-1, 1, 5_000), [40.0]]), r.exponential(size=9_000) ** 3]
    out = []
    for x in draws:
        h = AbsHistogram(float(np.abs(x).max()))
        h.update(x.astype(np.float32))
        out.append(h)
    sparse = AbsHistogram(10.0)  # few populated bins: the smoothing moves more than usual
    idx = r.choice(2048, size=150, replace=False)
    sparse.counts[idx] = r.integers(1, 1000, len(idx))
    out.append(sparse)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_screened_search_equals_the_exhaustive_one(seed):
    for h in _histograms(seed):
        assert entropy_threshold(h) == _exhaustive(h)


def test_screen_matches_every_exact_divergence_where_trusted():
    """Not only the winner: each trusted screened value is the written divergence, to rounding."""
    for h in _histograms(3)[:3] + _histograms(3)[-1:]:
        counts = h.counts.astype(np.float64)
        counts[0] = counts[1]
        last = int(np.nonzero(counts)[0][-1]) + 1
        screened, trusted = _screen(counts, 128, last)
        exact = np.array([_divergence(counts, 128, i) for i in range(128, last + 1)])
        assert trusted.mean() > 0.9
        np.testing.assert_allclose(screened[trusted], exact[trusted], rtol=1e-9, atol=1e-12)


def test_counts_below_the_smoothing_are_scored_exactly(monkeypatch):
    """Fractional counts smaller than the smoothing's eps make the expansion unsafe: every candidate is then
    scored as written (the screen marks them untrusted), so the answer is still the exhaustive one."""
    h = AbsHistogram(5.0)
    h.counts = np.random.default_rng(4).uniform(0, 3e-5, 2048)
    calls = []
    real = entropy._divergence
    monkeypatch.setattr(entropy, "_divergence", lambda *a: calls.append(a[2]) or real(*a))
    assert entropy_threshold(h) == _exhaustive(h)
    assert len(calls) == 2048 - 128 + 1
