"""A task metric sample by sample (measure/per_sample.py), every figure recomputed by hand with numpy and scipy:
top-1 scores with their exact or bootstrap intervals and the smooth surrogate, cosine and SQNR over all outputs
(the worst output, the edge cases of zero signals), and a user's metric with its resampled interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from trt_mpq.errors import TrtMpqError
from trt_mpq.measure.intervals import BOOTSTRAP_RESAMPLES
from trt_mpq.measure.per_sample import SQNR_CEILING, USER_RESAMPLES, smooth_metric, top1, user_metric


def _call(fn, outputs, labels):
    return fn(outputs, labels)


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def _bootstrap_means(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """Means of the seeded resamples the module draws (seed 0, ``resamples`` x n sample indices)."""
    idx = np.random.default_rng(0).integers(0, len(values), size=(resamples, len(values)))
    return values.astype(np.float64)[idx].mean(axis=-1)


GOT = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.5, 2.0], [0.2, 0.1, 0.0], [0.0, 0.5, 5.0]])
NOISE = np.array([[0.1, -0.2, 0.0], [0.3, 0.0, -0.1], [0.0, 0.2, 0.1], [-0.05, 0.05, 0.0], [0.5, -0.5, 0.2]])
LABELS = np.array([0, 1, 1, 0, 2])


def test_top1_against_labels_counts_hits_and_gives_the_exact_binomial_interval():
    ref = GOT - NOISE
    measured, correct = top1(GOT, ref, LABELS, 0.9, one_sided=False)
    assert correct.tolist() == [True, True, False, True, True] and measured.value == 0.8 and measured.samples == 5
    ci = stats.binomtest(4, 5).proportion_ci(confidence_level=0.9, method="exact")
    assert (measured.low, measured.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    lower, _ = top1(GOT, ref, LABELS, 0.9, one_sided=True)
    assert lower.low == pytest.approx(stats.beta.ppf(0.1, 4, 2), rel=1e-12) and lower.high == 1.0
    assert lower.value == measured.value and lower.smooth == measured.smooth


def test_the_surrogate_is_the_mean_probability_that_each_target_stays_on_top():
    ref = GOT - NOISE
    measured, _ = top1(GOT, ref, LABELS, 0.95, one_sided=False)
    margins = []
    for row, label in zip(GOT, LABELS, strict=True):
        margins.append(row[label] - np.delete(row, label).max())
    sigma = np.sqrt(2 * (NOISE ** 2).mean(axis=1))
    by_hand = float(np.mean(stats.norm.cdf(np.array(margins) / sigma)))
    assert measured.smooth == pytest.approx(by_hand, rel=1e-12)
    assert 0 < measured.smooth < 1 and measured.smooth != measured.value


def test_without_labels_the_target_is_the_references_top1():
    ref = GOT - NOISE
    ref[3] = [0.0, 0.0, 1.0]  # FP32 says class 2 for sample 3, the candidate class 0
    measured, correct = top1(GOT, ref, None, 0.95, one_sided=False)
    assert correct.tolist() == [np.argmax(g) == np.argmax(r) for g, r in zip(GOT, ref, strict=True)]
    assert correct.tolist() == [True, True, True, False, True] and measured.value == 0.8


def test_without_noise_every_clear_decision_counts_whole():
    measured, correct = top1(GOT, GOT, LABELS, 0.95, one_sided=False)  # no ties in GOT: every margin is clear
    assert correct.tolist() == [True, True, False, True, True]
    assert measured.smooth == measured.value == 0.8  # margin / 0: certain, one way or the other


def test_without_noise_a_tie_counts_as_the_exact_decision_does():
    ref = np.array([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # two ties argmax breaks to class 0
    measured, correct = top1(ref, ref, None, 0.95, one_sided=False)
    assert correct.all() and measured.value == measured.smooth == 1.0  # nothing changed: no drop to search on


def test_several_decisions_per_sample_are_scored_each_with_a_bootstrap_over_samples():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(30, 6, 4))  # 30 samples, 6 decisions each (tokens, pixels), 4 classes
    got = ref + rng.normal(scale=0.6, size=ref.shape)
    measured, correct = top1(got, ref, None, 0.9, one_sided=False)
    hits = np.argmax(got, -1) == np.argmax(ref, -1)
    assert measured.value == pytest.approx(hits.mean(), rel=1e-12) and 0 < measured.value < 1
    assert correct.tolist() == hits.all(axis=1).tolist()  # a sample is unchanged when all its decisions are
    assert (measured.low, measured.high) == pytest.approx(_percentiles(_bootstrap_means(hits.mean(axis=1)), 0.9),
                                                          rel=1e-12)


def _sqnr(r: np.ndarray, g: np.ndarray) -> float:
    r, g = r.astype(np.float64), g.astype(np.float64)
    return float(10 * np.log10((r ** 2).sum() / ((g - r) ** 2).sum()))


def _cos(r: np.ndarray, g: np.ndarray) -> float:
    r, g = r.astype(np.float64).ravel(), g.astype(np.float64).ravel()
    return float(r @ g / np.sqrt((r @ r) * (g @ g)))


@pytest.fixture
def two_outputs():
    """A detector-like pair: boxes barely moved, scores moved a lot (the worst output decides)."""
    rng = np.random.default_rng(7)
    ref = {"boxes": rng.normal(size=(40, 4, 4)).astype(np.float32), "scores": rng.normal(size=(40, 3))}
    got = {"boxes": (ref["boxes"] + rng.normal(scale=1e-3, size=(40, 4, 4))).astype(np.float32),
           "scores": ref["scores"] + rng.normal(scale=0.5, size=(40, 3))}
    return ref, got


def test_sqnr_is_the_worst_outputs_over_all_samples_with_a_paired_bootstrap(two_outputs):
    ref, got = two_outputs
    measured = smooth_metric("sqnr", got, ref, 40, 0.95, one_sided=False)
    by_output = {k: _sqnr(ref[k], got[k]) for k in ref}
    assert by_output["scores"] < 20 < by_output["boxes"]
    assert measured.value == measured.smooth == pytest.approx(by_output["scores"], rel=1e-9)
    assert measured.low < measured.value < measured.high and measured.samples == 40
    one_sided = smooth_metric("sqnr", got, ref, 40, 0.95, one_sided=True)
    assert measured.low < one_sided.low < measured.value and one_sided.high == float("inf")


def test_cosine_is_the_worst_outputs_over_all_samples(two_outputs):
    ref, got = two_outputs
    measured = smooth_metric("cosine", got, ref, 40, 0.9, one_sided=False)
    assert measured.value == pytest.approx(min(_cos(ref[k], got[k]) for k in ref), rel=1e-12)
    assert measured.value == pytest.approx(_cos(ref["scores"], got["scores"]), rel=1e-12)
    assert measured.low <= measured.value <= measured.high < 1.0


def test_outputs_without_float_values_per_sample_do_not_count(two_outputs):
    ref, got = two_outputs
    extra = {"count": np.arange(40), "scale": np.float32(3.0), "table": np.ones((7, 2), np.float32)}
    wrong = {"count": np.arange(40) + 1, "scale": np.float32(-3.0), "table": np.zeros((7, 2), np.float32)}
    for name in ("sqnr", "cosine"):
        plain = smooth_metric(name, got, ref, 40, 0.95, False)
        assert smooth_metric(name, {**got, **wrong}, {**ref, **extra}, 40, 0.95, False) == plain


def test_sqnr_is_capped_for_identical_outputs_and_floored_for_error_on_silence():
    ref = {"y": np.random.default_rng(1).normal(size=(8, 5))}
    same = smooth_metric("sqnr", ref, ref, 8, 0.95, False)
    assert (same.value, same.low, same.high) == (SQNR_CEILING, SQNR_CEILING, SQNR_CEILING)
    tiny = smooth_metric("sqnr", {"y": ref["y"] * (1 + 1e-12)}, ref, 8, 0.95, False)
    assert tiny.value == SQNR_CEILING  # 240 dB is reported as the ceiling
    zero = {"y": np.zeros((8, 5))}
    assert smooth_metric("sqnr", ref, zero, 8, 0.95, False).value == -SQNR_CEILING  # error on a zero reference
    worst = smooth_metric("sqnr", {"y": ref["y"], "z": zero["y"] + 1}, {"y": ref["y"], "z": zero["y"]}, 8, 0.95,
                          False)
    assert worst.value == -SQNR_CEILING  # one silent output moved: the worst output decides


def test_cosine_of_zero_signals_is_one_when_both_are_zero_and_zero_when_one_is():
    zero, ones = {"y": np.zeros((6, 3))}, {"y": np.ones((6, 3))}
    assert smooth_metric("cosine", zero, zero, 6, 0.95, False).value == 1.0
    assert smooth_metric("cosine", zero, ones, 6, 0.95, False).value == 0.0
    assert smooth_metric("cosine", ones, zero, 6, 0.95, False).value == 0.0
    assert smooth_metric("cosine", {"y": -ones["y"]}, ones, 6, 0.95, False).value == pytest.approx(-1.0)


def test_a_user_metric_per_sample_is_its_mean_with_a_bootstrap_interval():
    values = np.random.default_rng(2).random(25)
    calls = []

    def metric(outputs, labels):
        calls.append(labels)
        return values

    measured = user_metric(metric, {"y": np.zeros((25, 2))}, np.arange(25), 25, 0.8, False, _call)
    assert len(calls) == 1  # per-sample values: resampled without calling the metric again
    assert measured.value == measured.smooth == pytest.approx(values.mean(), rel=1e-12)
    assert (measured.low, measured.high) == pytest.approx(_percentiles(_bootstrap_means(values), 0.8), rel=1e-12)
    lower = user_metric(metric, {"y": np.zeros((25, 2))}, None, 25, 0.8, True, _call)
    assert lower.high == float("inf") and lower.low > measured.low


@pytest.mark.parametrize("shape", [(24,), (25, 1), (5, 5)])
def test_a_user_metric_array_must_hold_one_value_per_sample(shape):
    with pytest.raises(TrtMpqError) as err:
        user_metric(lambda o, lab: np.ones(shape), {"y": np.zeros((25, 2))}, None, 25, 0.95, False, _call)
    assert str(err.value) == (f"the metric function returned an array of shape {shape}; return one number, or one "
                              f"number per evaluation sample (shape (25,)).")


def test_a_user_metric_number_is_called_again_on_resamples_that_keep_outputs_and_labels_paired():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(20, 3))
    labels = np.argmax(y, axis=1)
    seen = []

    def accuracy(outputs, labels):
        seen.append(len(labels))
        assert np.array_equal(np.argmax(outputs["y"], axis=1), labels)  # the same samples in both
        return float(outputs["y"][:, 0].mean())

    measured = user_metric(accuracy, {"y": y}, labels, 20, 0.9, False, _call)
    assert len(seen) == 1 + USER_RESAMPLES and set(seen) == {20}
    assert measured.value == pytest.approx(y[:, 0].mean(), rel=1e-12)
    idx = np.random.default_rng(0).integers(0, 20, size=(USER_RESAMPLES, 20))
    assert (measured.low, measured.high) == pytest.approx(_percentiles(y[idx, 0].mean(axis=1), 0.9), rel=1e-12)
    unlabelled = user_metric(lambda o, lab: 1.0 if lab is None else 0.0, {"y": y}, None, 20, 0.9, False, _call)
    assert (unlabelled.value, unlabelled.low, unlabelled.high) == (1.0, 1.0, 1.0)  # labels stay None
