"""Confidence intervals of measured scores: exact binomial (Clopper-Pearson, from scipy.stats) for accuracy and
agreement, a paired percentile bootstrap over samples (seeded, so reproducible) for everything else."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 999
DISPLAY_CONFIDENCE = 0.95  # the two-sided interval shown when no --confidence is asked for


def binomial_interval(successes: int, n: int, confidence: float, one_sided: bool = False) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion; one-sided: (lower bound at ``confidence``, 1)."""
    if n == 0:
        return 0.0, 1.0
    if one_sided:
        low = 0.0 if successes == 0 else float(stats.beta.ppf(1 - confidence, successes, n - successes + 1))
        return low, 1.0
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def percentile_interval(draws: np.ndarray, confidence: float, one_sided: bool) -> tuple[float, float]:
    """The interval of bootstrap draws: central at ``confidence``, or its lower bound alone."""
    draws = np.asarray(draws, dtype=np.float64)
    if one_sided:
        return float(np.quantile(draws, 1 - confidence)), math.inf
    tail = (1 - confidence) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def bootstrap(per_sample: list[np.ndarray], statistic: Callable[..., np.ndarray], confidence: float,
              one_sided: bool = False, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Paired percentile bootstrap: the same resampled sample indices (the last axis) in every array of
    ``per_sample``; ``statistic(*resampled)`` reduces that axis, vectorised over the resamples."""
    n = per_sample[0].shape[-1]
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    draws = statistic(*[np.asarray(a, dtype=np.float64)[..., idx] for a in per_sample])
    return percentile_interval(draws, confidence, one_sided)
