"""The FP32 pass's side of calibration (trt_mpq.quant.collector): per-channel means, what one batch adds
(``observe``, pure), folding batches in order, histograms per batch, candidate thresholds and the ranges that
come out, each checked against numpy on known arrays."""

from __future__ import annotations

import numpy as np
import pytest

from trt_mpq.quant.collector import BatchRanges, ChannelMean, RangeCollector, batch_histograms, candidate_thresholds
from trt_mpq.quant.ranges import AUTO_START, HIST_BINS, THRESHOLDS, AbsHistogram, mse_threshold, percentile_threshold


def _batches(seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Three batches of a [n, 3, 4] activation 'a' (channel axis 1), a [n, 5] activation 'b' and int ids."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (2, 3, 1):
        a = (rng.standard_normal((n, 3, 4)) + np.array([0.0, 5.0, -2.0])[None, :, None]).astype(np.float32)
        b = rng.laplace(size=(n, 5)).astype(np.float32)
        out.append({"a": a, "b": b, "ids": np.arange(n * 2, dtype=np.int64).reshape(n, 2)})
    out[1]["b"][0, 0] = -30.0  # the largest magnitude, negative
    return out


# ----------------------------------------------------------------------------------------------- ChannelMean


def test_channel_mean_over_batches_equals_numpy():
    batches = _batches()
    c = ChannelMean(1)
    assert c.value() == ()
    for t in batches:
        c.update(t["a"])
    want = np.concatenate([t["a"] for t in batches]).astype(np.float64).mean(axis=(0, 2))
    np.testing.assert_allclose(c.value(), want, rtol=1e-12)
    assert c.count == 6 * 4  # values per channel: 6 samples x 4 positions
    assert isinstance(c.value()[0], float) and len(c.value()) == 3


def test_channel_mean_with_a_negative_axis_and_ignored_inputs():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    c = ChannelMean(-1)
    c.update(x)
    c.update(np.zeros((0, 3, 4), np.float32))  # empty: nothing
    c.update(np.ones((2, 3, 4), np.int64))  # not float: nothing
    np.testing.assert_array_equal(c.value(), x.mean(axis=(0, 1)))
    assert c.count == 6


def test_channel_mean_leaves_non_finite_values_out_of_the_sum_but_counts_them():
    x = np.array([[1.0, np.inf], [3.0, 4.0], [5.0, np.nan]], np.float32)
    c = ChannelMean(1)
    c.update(x)
    assert c.value() == (3.0, 4.0 / 3)  # channel 1: (0 + 4 + 0) / 3


# ----------------------------------------------------------------------------------------------- observe, fold


def test_observe_is_pure_and_gives_maxima_sums_and_per_sample_shapes():
    col = RangeCollector("max", ["a", "b", "ids", "absent"], ["a"], {"a": 1}, bias_correction=True)
    t = _batches()[1]  # 3 samples
    t["a"][2, 0, 3] = np.inf
    got = col.observe(t, samples=3)
    assert isinstance(got, BatchRanges)
    finite_a = np.abs(t["a"][np.isfinite(t["a"])])
    assert got.maxima == {"a": (float(finite_a.max()), 1), "b": (30.0, 0)}  # no entry for ints, absent tensors
    total, count = got.sums["a"]
    np.testing.assert_allclose(total, np.nan_to_num(t["a"].astype(np.float64), posinf=0.0).sum(axis=(0, 2)))
    assert count == 3 * 4 and set(got.sums) == {"a"}
    assert got.shapes == {"a": (1, 3, 4), "b": (1, 5)}  # batch axis divided by 3; integer tensors have none
    # the collector itself has not moved
    assert col.maxima["a"].value == 0.0 and col.maxima["b"].nonfinite == 0 and col.means["a"].total is None
    assert col.shapes == {}


def test_observe_divides_only_a_leading_axis_that_holds_the_batch():
    col = RangeCollector("max", [], [])
    t = {"even": np.zeros((8, 2), np.float32), "odd": np.zeros((3, 2), np.float32),
         "scalar": np.float32(1.0) * np.ones((), np.float32), "half": np.zeros((4, 7), np.float16)}
    got = col.observe(t, samples=4)
    assert got.shapes == {"even": (2, 2), "odd": (3, 2), "scalar": (), "half": (1, 7)}
    assert col.observe(t, samples=1).shapes["even"] == (8, 2)
    assert got.maxima == {} and got.sums == {}


def test_folding_observed_batches_equals_one_pass_of_update_max():
    batches = _batches()
    args = ("max", ["a", "b", "ids"], ["a", "b"], {"a": 1, "b": -1})
    here = RangeCollector(*args, bias_correction=True)
    for t in batches:
        here.update_max(t)
    observed = [RangeCollector(*args, bias_correction=True).observe(t, len(t["a"])) for t in batches]
    folded = RangeCollector(*args, bias_correction=True)
    for b in observed:
        folded.fold(b)
    for name in ("a", "b", "ids"):
        assert folded.maxima[name].value == here.maxima[name].value
    assert folded.maxima["b"].value == 30.0 and folded.maxima["ids"].value == 0.0
    for name in ("a", "b"):
        assert folded.means[name].value() == here.means[name].value()
        assert folded.means[name].count == here.means[name].count
    assert folded.shapes == {"a": (1, 3, 4), "b": (1, 5)}
    assert here.shapes == {}  # update_max records no shapes


def test_fold_keeps_the_first_shape_and_adds_non_finite_counts():
    col = RangeCollector("max", ["t"], ["t"])
    col.fold(BatchRanges({"t": (2.0, 1)}, {}, {"t": (4,)}))
    col.fold(BatchRanges({"t": (1.5, 2)}, {}, {"t": (9,)}))
    col.fold(BatchRanges({"t": (7.0, 0)}, {}, {}))
    assert (col.maxima["t"].value, col.maxima["t"].nonfinite) == (7.0, 3)
    assert col.shapes == {"t": (4,)}


def test_channel_means_need_bias_correction():
    col = RangeCollector("max", ["a"], ["a"], {"a": 1})
    assert col.means == {}
    col.update_max(_batches()[0])
    assert col.result().means == {}
    on = RangeCollector("max", ["a"], ["a"], {"a": 1}, bias_correction=True)
    on.update_max(_batches()[0])
    np.testing.assert_allclose(on.result().means["a"], _batches()[0]["a"].mean(axis=(0, 2)), rtol=1e-6)


# ----------------------------------------------------------------------------------------------- histograms


def test_histograms_span_each_tensors_maximum_and_bin_by_magnitude():
    col = RangeCollector("percentile", ["t", "other"], ["t"])
    x = np.array([0.0, 1.0, -2.0, 3.999, -4.0], np.float32)
    col.update_max({"t": x, "other": np.full(3, 9.0, np.float32)})
    assert col.histogram_limits() == {"t": 4.0}  # quantized tensors only
    col.start_histograms()
    assert set(col.hists) == {"t"} and col.hists["t"].amax == 4.0
    col.update_histograms({"t": x, "other": np.ones(3, np.float32)})
    col.update_histograms({"t": x[:2]})
    counts = col.hists["t"].counts
    assert len(counts) == HIST_BINS and counts.sum() == 7
    # bin = floor(|x| * 2048 / 4): 0, 512, 1024, 2047 (3.999 * 512 = 2047.49), and 4.0 clipped into the last
    assert {int(k): int(counts[k]) for k in np.flatnonzero(counts)} == {0: 2, 512: 2, 1024: 1, 2047: 2}


def test_batch_histograms_fold_into_the_histogram_of_all_batches():
    batches = _batches()
    limits = {"a": 8.0, "b": 30.0, "missing": 1.0}
    per_batch = [batch_histograms(limits, t) for t in batches]
    assert all(set(h) == {"a", "b"} for h in per_batch)  # tensors not in the batch give nothing
    for name, amax in (("a", 8.0), ("b", 30.0)):
        values = np.abs(np.concatenate([t[name].ravel() for t in batches]))
        idx = np.minimum((values * np.float32(HIST_BINS / amax)).astype(np.int64), HIST_BINS - 1)
        np.testing.assert_array_equal(sum(h[name] for h in per_batch), np.bincount(idx, minlength=HIST_BINS))
    col = RangeCollector("mse", ["a", "b"], ["a", "b"])
    col.hists = {n: AbsHistogram(a) for n, a in limits.items() if n != "missing"}
    for h in per_batch:
        col.fold_histograms(h)
    direct = RangeCollector("mse", ["a", "b"], ["a", "b"])
    direct.hists = {n: AbsHistogram(a) for n, a in limits.items() if n != "missing"}
    for t in batches:
        for n, h in direct.hists.items():
            h.update(t[n])
    for n in ("a", "b"):
        np.testing.assert_array_equal(col.hists[n].counts, direct.hists[n].counts)


# ----------------------------------------------------------------------------------------------- thresholds, result


def test_candidate_thresholds_hold_max_and_each_method_asked_for():
    x = np.random.default_rng(3).standard_normal(4096).astype(np.float32)
    h = AbsHistogram(float(np.abs(x).max()))
    h.update(x)
    got = candidate_thresholds(h, 123.0, ("percentile", "mse"))
    assert got == {"max": 123.0, "percentile": percentile_threshold(h), "mse": mse_threshold(h)}
    assert candidate_thresholds(h, 2.5, ()) == {"max": 2.5}


@pytest.mark.parametrize(("calibrator", "methods"), [
    ("max", ()), ("percentile", ("percentile",)), ("entropy", ("entropy",)), ("mse", ("mse",)),
    ("auto", tuple(THRESHOLDS)),
])
def test_threshold_methods_per_calibrator(calibrator, methods):
    assert RangeCollector(calibrator, ["t"], ["t"]).threshold_methods() == methods


def test_result_takes_each_quantized_tensors_threshold_from_its_histogram():
    batches = _batches()
    col = RangeCollector("percentile", ["a", "b", "ids"], ["b", "a", "b"])
    for t in batches:
        col.update_max(t)
    col.start_histograms()
    for t in batches:
        col.update_histograms(t)
    r = col.result()
    assert list(r.amax) == ["b", "a"]  # quantized tensors, each once, in the order given
    for n in ("a", "b"):
        assert r.amax[n] == percentile_threshold(col.hists[n]) and r.methods[n] == "percentile"
        assert r.candidates[n] == {"max": col.maxima[n].value, "percentile": r.amax[n]}
    assert r.absmax == {"a": col.maxima["a"].value, "b": 30.0, "ids": 0.0}  # every observed tensor


def test_result_uses_candidates_computed_elsewhere_and_falls_back_to_max():
    col = RangeCollector("auto", ["a", "b"], ["a", "b"])
    col.fold(BatchRanges({"a": (5.0, 0), "b": (9.0, 0)}, {}, {"a": (3,)}))
    cands = {"a": {"max": 5.0, "percentile": 4.0, "entropy": 3.0, "mse": 2.0}}
    r = col.result(cands)
    assert r.calibrator == "auto" and AUTO_START == "mse"
    assert r.amax == {"a": 2.0, "b": 9.0}  # auto starts at mse; b has no candidates: its maximum
    assert r.methods == {"a": "mse", "b": "max"}
    assert r.candidates == cands and r.shapes == {"a": (3,)}
    assert r.using("entropy").amax["a"] == 3.0


def test_a_max_calibrator_keeps_the_maxima_and_records_its_settings():
    col = RangeCollector("max", ["a"], ["a"], weight_scales="mse")
    for t in _batches():
        col.update_max(t)
    r = col.result()
    want = max(float(np.abs(t["a"]).max()) for t in _batches())
    assert r.amax == {"a": want} and r.methods == {"a": "max"} and r.candidates == {}
    assert r.weight_scales == "mse" and r.bias_correction is False
