"""Output-delta metrics between a configured model and the FP32 reference (trt_mpq.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trt_mpq.artifacts import UnitResult
from trt_mpq.measure.output_delta import METRICS, OutputDelta


def _result(ref: dict, got: dict, samples: int) -> dict:
    d = OutputDelta()
    d.update(ref, got, samples)
    result = d.result()
    assert UnitResult.from_json(result.to_json()) == result
    return result.to_json()


def _scores(n=6, c=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)


def test_identical_outputs():
    ref = _scores()
    r = _result({"y": ref}, {"y": ref.copy()}, 6)
    assert r["cosine"] == pytest.approx(1.0)
    assert r["nmse"] == 0.0
    assert r["sqnr_db"] is None  # infinite SQNR is written as null
    assert r["max_abs"] == 0.0
    assert r["top1_agreement"] == 1.0
    assert "outputs" not in r  # one output: no breakdown
    assert set(r) <= set(METRICS)


def test_known_additive_noise_gives_the_expected_sqnr():
    ref = np.full((4, 25), 2.0, np.float32)  # signal power: 100 values * 4 = 400
    noise = np.where(np.arange(100).reshape(4, 25) % 2 == 0, 0.2, -0.2).astype(np.float32)  # power 100 * 0.04 = 4
    r = _result({"y": ref}, {"y": ref + noise}, 4)
    signal, err = float(np.sum(ref.astype(np.float64) ** 2)), float(np.sum(noise.astype(np.float64) ** 2))
    assert r["sqnr_db"] == pytest.approx(10 * math.log10(signal / err))
    assert r["sqnr_db"] == pytest.approx(20.0, abs=1e-4)
    assert r["nmse"] == pytest.approx(0.01, rel=1e-5)
    assert r["max_abs"] == pytest.approx(0.2, rel=1e-6)
    assert "top1_agreement" in r  # [4, 25] float: class scores


def test_sqnr_by_hand_on_random_noise():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((8, 16))
    noise = 0.05 * rng.standard_normal((8, 16))
    r = _result({"y": ref}, {"y": ref + noise}, 8)
    want = 10 * math.log10(np.sum(ref**2) / np.sum(noise**2))
    assert r["sqnr_db"] == pytest.approx(want, rel=1e-9)
    assert r["nmse"] == pytest.approx(np.sum(noise**2) / np.sum(ref**2), rel=1e-9)
    assert r["max_abs"] == pytest.approx(np.abs(noise).max())


def test_top1_agreement_by_hand():
    ref = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]], np.float32)
    got = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.5, 0.3, 0.2]], np.float32)
    agree = np.mean(ref.argmax(1) == got.argmax(1))
    assert agree == 0.5
    assert _result({"y": ref}, {"y": got}, 4)["top1_agreement"] == pytest.approx(agree)


@pytest.mark.parametrize("ref", [
    np.ones((4, 1), np.float32),  # one class only
    np.ones((4, 3, 2), np.float32),  # not [N, C]
    np.ones((4,), np.float32),  # one value per sample
])
def test_top1_agreement_only_for_class_scores(ref):
    r = _result({"y": ref}, {"y": ref * 1.5}, 4)
    assert "top1_agreement" not in r
    assert r["max_abs"] == pytest.approx(0.5)


def test_integer_outputs_are_ignored():
    ref = {"ids": np.array([[1, 2], [3, 4]], np.int64), "y": _scores(2, 3)}
    got = {"ids": np.array([[9, 9], [9, 9]], np.int64), "y": ref["y"].copy()}
    r = _result(ref, got, 2)
    assert "outputs" not in r  # only 'y' is compared
    assert r["max_abs"] == 0.0 and r["nmse"] == 0.0
    assert _result({"ids": ref["ids"]}, {"ids": got["ids"]}, 2) == {"cosine": None, "sqnr_db": None, "nmse": None,
                                                                     "max_abs": None}


def test_streaming_equals_one_batch():
    rng = np.random.default_rng(2)
    ref = {"y": rng.standard_normal((10, 4)), "z": rng.standard_normal((10, 2, 3)).astype(np.float32)}
    got = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in ref.items()}
    got["y"][3] = -ref["y"][3]  # a sample whose class flips
    whole = _result(ref, got, 10)
    streamed = OutputDelta()
    for lo, hi in [(0, 3), (3, 4), (4, 9), (9, 10)]:
        streamed.update({k: v[lo:hi] for k, v in ref.items()}, {k: v[lo:hi] for k, v in got.items()}, hi - lo)
    part = streamed.result().to_json()
    assert set(part) == set(whole)
    for metric in METRICS:
        assert part[metric] == pytest.approx(whole[metric], rel=1e-9)
    for name in ("y", "z"):
        for metric, value in whole["outputs"][name].items():
            assert part["outputs"][name][metric] == pytest.approx(value, rel=1e-9)


def test_several_outputs_report_the_worst_of_each_metric():
    rng = np.random.default_rng(3)
    ref_a, ref_b = rng.standard_normal((5, 4)), rng.standard_normal((5, 8, 2))
    got_a = ref_a + 0.01 * rng.standard_normal(ref_a.shape)  # good SQNR, small error
    got_b = ref_b + 0.3 * rng.standard_normal(ref_b.shape)  # worse SQNR, larger error
    got_a[0] = ref_a[0][::-1] * 5  # ... but 'a' has the largest single error and a class flip
    r = _result({"a": ref_a, "b": ref_b}, {"a": got_a, "b": got_b}, 5)
    per = r["outputs"]
    assert set(per) == {"a", "b"}
    assert per["a"] == _result({"a": ref_a}, {"a": got_a}, 5)
    assert per["b"] == _result({"b": ref_b}, {"b": got_b}, 5)
    assert r["cosine"] == min(per["a"]["cosine"], per["b"]["cosine"])
    assert r["sqnr_db"] == min(per["a"]["sqnr_db"], per["b"]["sqnr_db"])
    assert r["nmse"] == max(per["a"]["nmse"], per["b"]["nmse"])
    assert r["max_abs"] == max(per["a"]["max_abs"], per["b"]["max_abs"]) == per["a"]["max_abs"]
    assert "top1_agreement" not in per["b"]
    assert r["top1_agreement"] == per["a"]["top1_agreement"] < 1.0


def test_identical_output_does_not_hide_another_outputs_sqnr():
    ref = np.full((2, 3), 2.0)
    r = _result({"same": ref, "noisy": ref}, {"same": ref, "noisy": ref + 0.2}, 2)
    assert r["outputs"]["same"]["sqnr_db"] is None
    assert r["sqnr_db"] == pytest.approx(20.0)


def test_cosine_is_over_all_values_together():
    ref = np.array([[1.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    got = np.array([[0.0, 2.0], [6.0, 8.0], [1.0, 0.0]])  # per-sample cosines would be 0, 1, 1/sqrt(2)
    flat = np.dot(ref.ravel(), got.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(got))
    r = _result({"y": ref}, {"y": got}, 3)
    assert r["cosine"] == pytest.approx(flat)
    assert abs(r["cosine"] - np.mean([0.0, 1.0, 1 / math.sqrt(2)])) > 0.05  # not a per-sample mean


def test_near_zero_sample_does_not_dominate_the_cosine():
    # A detector's probability map for an image with no text is ~0; a negligible absolute change there turns
    # its own cosine to ~0.9 (as seen on PP-OCR), but it must not drag the model's score down.
    ref = np.array([[10.0, 20.0, 30.0], [1e-7, 0.0, 0.0]])
    got = np.array([[10.0, 20.0, 30.0], [0.0, 1e-7, 0.0]])
    assert _result({"y": ref}, {"y": got}, 2)["cosine"] > 0.999999


def test_cosine_of_zero_rows():
    ref = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]])
    got = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    assert _result({"y": ref}, {"y": got}, 3)["cosine"] == pytest.approx(5 / math.sqrt(30))
    zeros = np.zeros((2, 2))
    assert _result({"y": zeros}, {"y": zeros}, 2)["cosine"] == 1.0  # identical zero outputs agree


def test_output_without_a_batch_axis_is_one_vector():
    ref = np.array([1.0, 0.0, 0.0, 0.0, 1.0])  # 5 values for 3 samples: not per-sample rows
    got = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    r = _result({"y": ref}, {"y": got}, 3)
    assert r["cosine"] == pytest.approx(1 / math.sqrt(2))


def test_all_zero_reference_with_error():
    ref = np.zeros((3, 4), np.float32)
    got = ref.copy()
    got[1, 2] = 0.5
    r = _result({"y": ref}, {"y": got}, 3)
    assert r["nmse"] is None
    assert r["sqnr_db"] is None
    assert r["max_abs"] == pytest.approx(0.5)
    assert r["cosine"] == 0.0  # an all-zero reference against a non-zero output


def test_all_zero_reference_makes_the_worst_nmse_unknown():
    ref = {"zero": np.zeros((2, 3)), "ok": np.ones((2, 3))}
    got = {"zero": np.full((2, 3), 0.1), "ok": np.ones((2, 3)) * 1.1}
    r = _result(ref, got, 2)
    assert r["outputs"]["zero"]["nmse"] is None
    assert r["outputs"]["ok"]["nmse"] == pytest.approx(0.01)
    assert r["nmse"] is None


def test_all_zero_reference_is_not_hidden_from_the_worst_sqnr():
    ref = {"zero": np.zeros((2, 3)), "ok": np.ones((2, 3))}
    got = {"zero": np.full((2, 3), 0.1), "ok": np.ones((2, 3)) * 1.1}  # 'ok' alone: 20 dB
    assert _result(ref, got, 2)["sqnr_db"] is None


def test_empty_delta_reports_nothing():
    assert OutputDelta().result() == UnitResult(None, None, None, None)


def test_nonfinite_outputs_are_counted_and_null_the_metrics():
    ref = {"y": _scores(3, 4), "z": np.ones((3, 2), np.float32)}
    got = {"y": ref["y"].copy(), "z": ref["z"].copy()}
    got["y"][1, 2] = np.nan
    got["y"][2, 0] = np.inf
    r = _result(ref, got, 3)
    assert r["nonfinite"] == 2
    assert r["cosine"] is None and r["sqnr_db"] is None and r["nmse"] is None and r["max_abs"] is None
    assert r["outputs"]["y"]["nonfinite"] == 2 and "nonfinite" not in r["outputs"]["z"]
    assert r["outputs"]["z"]["nmse"] == 0.0
    assert 0.0 <= r["top1_agreement"] <= 1.0


def severity(result: dict) -> float:
    return UnitResult.from_json(result).severity


def test_severity_orders_nonfinite_first_then_nmse():
    ref = np.ones((2, 3))
    clean = _result({"y": ref}, {"y": ref}, 2)
    small = _result({"y": ref}, {"y": ref * 1.01}, 2)
    large = _result({"y": ref}, {"y": ref * 1.5}, 2)
    broken = _result({"y": ref}, {"y": np.full((2, 3), np.nan)}, 2)
    assert severity(clean) == 0.0
    assert severity(small) == pytest.approx(1e-4)
    assert sorted([large, broken, clean, small], key=severity, reverse=True) == [broken, large, small, clean]
