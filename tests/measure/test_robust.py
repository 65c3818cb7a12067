"""Scores on jittered replicas (measure/robust.py): each replica's FP32 reference is the FP32 model run by hand on
that replica's inputs, the score on the data as given is a plain evaluator's, intervals follow the confidence
asked for, the source is read once, and without jitter a replica scores exactly as the data does."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

import builders
from fakes import CountingBackend
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.data.views import JITTER, jittered
from trt_mpq.measure.calibration import calibrate
from trt_mpq.measure.intervals import DISPLAY_CONFIDENCE
from trt_mpq.measure.robust import ReplicaScorer
from trt_mpq.measure.task_metric import Evaluator, TaskMetric
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan, Precision
from trt_mpq.quant.lower import lower


@pytest.fixture
def tiny(tmp_path):
    """The residual CNN, 12 generated samples read through a counter, and an all-INT8 mix with coarse ranges."""
    model = load_model(builders.save(builders.conv_bn_relu_residual(), tmp_path))
    data = generated_dataset(model, samples=12, seed=6)
    reads = []

    def take(lo, hi, inner=data.take_fn):
        reads.append((lo, hi))
        return inner(lo, hi)

    data = dataclasses.replace(data, take_fn=take)
    units = find_units(model.proto, model.tensors).units
    ranges = calibrate(model, units, generated_dataset(model, samples=4, seed=1), CountingBackend(), "max", 4)
    int8 = lower(model.proto, units, Plan.of({u.name: Precision.INT8 for u in units}), ranges)
    return model, data, int8, reads


def _fp32_by_hand(model, feeds) -> np.ndarray:
    session = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], feeds)[0]


def test_each_replica_has_the_fp32_outputs_on_its_own_jittered_inputs(tiny):
    model, data, _, _ = tiny
    scorer = ReplicaScorer(data, CountingBackend(), TaskMetric.COSINE, 4, replicas=3)
    assert scorer.fp32_score(model.proto) == pytest.approx(1.0)
    assert scorer.jitter == JITTER and len(scorer.copies) == 3
    base = _fp32_by_hand(model, data.take(0, 12))
    np.testing.assert_allclose(scorer.base.reference["y"], base, rtol=1e-5, atol=1e-6)
    for k, copy in enumerate(scorer.copies):
        by_hand = _fp32_by_hand(model, jittered(data, k + 1).take(0, 12))
        np.testing.assert_allclose(copy.reference["y"], by_hand, rtol=1e-5, atol=1e-6)
        moved = np.abs(copy.reference["y"] - scorer.base.reference["y"]).max()
        assert 0 < moved < 1e-4  # another reference, a few rounding steps away
    with pytest.raises(RuntimeError, match="computed once"):
        scorer.fp32_score(model.proto)


def test_the_score_on_the_data_is_a_plain_evaluators_and_replicas_score_near_it(tiny):
    model, data, int8, _ = tiny
    scorer = ReplicaScorer(data, CountingBackend(), TaskMetric.COSINE, 4, replicas=2)
    with pytest.raises(RuntimeError, match="fp32_score first"):
        scorer.measure(int8)
    scorer.fp32_score(model.proto)
    base, replicas = scorer.measure(int8)
    plain = Evaluator(data, CountingBackend(), TaskMetric.COSINE, 4)
    plain.fp32_score(model.proto)
    assert base == plain.measure(int8, DISPLAY_CONFIDENCE, False)  # two-sided at the display level
    assert base.value < 1.0 and base.high < float("inf") and base.samples == 12
    assert len(replicas) == 2 and all(r.samples == 12 and r.high < float("inf") for r in replicas)
    assert all(r.value == pytest.approx(base.value, abs=1e-3) for r in replicas)
    fp32_base, fp32_replicas = scorer.measure(model.proto)
    assert fp32_base.value == pytest.approx(1.0) and [r.value for r in fp32_replicas] == pytest.approx([1.0, 1.0])


def test_a_confidence_makes_every_interval_a_one_sided_lower_bound_at_that_level(tiny):
    model, data, int8, _ = tiny
    scorer = ReplicaScorer(data, CountingBackend(), TaskMetric.SQNR, 4, replicas=2)
    scorer.fp32_score(model.proto)
    base, replicas = scorer.measure(int8, confidence=0.99)
    plain = Evaluator(data, CountingBackend(), TaskMetric.SQNR, 4)
    plain.fp32_score(model.proto)
    assert base == plain.measure(int8, 0.99, True)
    assert all(m.high == float("inf") and m.low < m.value for m in (base, *replicas))
    shown, _ = scorer.measure(int8)
    assert shown.value == base.value and shown.low > base.low  # the 95 % two-sided bound is less strict


def test_the_source_is_read_once_and_every_look_runs_each_evaluator_once(tiny):
    model, data, int8, reads = tiny
    scorer = ReplicaScorer(data, CountingBackend(), TaskMetric.AGREEMENT, 4, replicas=3)
    scorer.fp32_score(model.proto)
    scorer.measure(int8)
    scorer.measure(int8, confidence=0.95)
    assert sorted(reads) == [(i, i + 1) for i in range(12)]  # one read per sample for 1 + 3 copies and 3 looks
    assert scorer.runs == 3 * 4 and scorer.base.runs == 3 and all(c.runs == 3 for c in scorer.copies)


def test_without_jitter_replicas_score_exactly_as_the_data_and_none_may_be_asked_for(tiny):
    model, data, int8, _ = tiny
    scorer = ReplicaScorer(data, CountingBackend(), TaskMetric.COSINE, 4, replicas=2, jitter=0.0)
    scorer.fp32_score(model.proto)
    base, replicas = scorer.measure(int8)
    assert replicas == [base, base]
    alone = ReplicaScorer(data, CountingBackend(), TaskMetric.COSINE, 4, replicas=0)
    assert alone.copies == [] and alone.fp32_score(model.proto) == pytest.approx(1.0)
    only, none = alone.measure(int8)
    assert none == [] and only == base and alone.runs == 2
