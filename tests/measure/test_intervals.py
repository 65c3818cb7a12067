"""Intervals of measured scores, checked against closed forms, textbook values and scipy's bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from trt_mpq.measure.intervals import binomial_interval, bootstrap
from trt_mpq.measure.output_delta import OutputDelta
from trt_mpq.measure.per_sample import smooth_metric, top1


def test_binomial_interval_matches_closed_forms_and_a_textbook_value():
    n = 135
    low, high = binomial_interval(n, n, 0.95, one_sided=True)
    assert low == pytest.approx(0.05 ** (1 / n)) and high == 1.0  # no failure: (1 - C)^(1/n)
    low, high = binomial_interval(0, 20, 0.95)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 20))  # no success: 1 - (alpha/2)^(1/n)
    assert binomial_interval(5, 10, 0.95) == pytest.approx((0.187086, 0.812914), abs=1e-6)  # Clopper-Pearson


def test_bootstrap_agrees_with_scipy_and_the_normal_approximation():
    x = np.random.default_rng(1).normal(2.0, 1.0, 400)
    ours = bootstrap([x], lambda a: a.mean(axis=-1), 0.95)
    ref = stats.bootstrap((x,), np.mean, confidence_level=0.95, method="percentile", n_resamples=4999,
                          random_state=np.random.default_rng(2)).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.015)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert ours == pytest.approx((x.mean() - half, x.mean() + half), abs=0.015)
    low, high = bootstrap([x], lambda a: a.mean(axis=-1), 0.95, one_sided=True)
    assert ours[0] < low < x.mean() and high == float("inf")  # one-sided: a tighter lower bound


def test_top1_surrogate_is_exact_without_noise_and_falls_smoothly_with_it():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 10))
    exact, correct = top1(ref, ref, None, 0.95, False)
    assert exact.value == exact.smooth == 1.0 and correct.all()
    noisy = [top1(ref + rng.normal(scale=s, size=ref.shape), ref, None, 0.95, False)[0] for s in (0.05, 0.2, 0.8)]
    assert noisy[0].smooth > noisy[1].smooth > noisy[2].smooth  # monotone in the noise, sample by sample smooth
    assert all(abs(m.smooth - m.value) < 0.1 for m in noisy)  # close to the exact count, not the same number
    assert noisy[2].low < noisy[2].value < noisy[2].high


def test_cosine_with_interval_matches_the_output_delta_definition():
    rng = np.random.default_rng(3)
    ref = {"y": rng.normal(size=(64, 5)).astype(np.float32)}
    got = {"y": (ref["y"] + rng.normal(scale=0.3, size=(64, 5))).astype(np.float32)}
    delta = OutputDelta()
    delta.update(ref, got, 64)
    measured = smooth_metric("cosine", got, ref, 64, 0.95, False)
    assert measured.value == pytest.approx(delta.result().cosine, rel=1e-9)
    assert measured.low < measured.value < measured.high
