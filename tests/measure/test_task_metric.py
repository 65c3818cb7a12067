"""Task metrics on held-out data (measure/task_metric.py) and replicas (measure/robust.py), scored in one
session or as batch jobs (``Fanout``): the same numbers either way."""

from pathlib import Path

import numpy as np
import pytest

from trt_mpq.backends.onnxrt import OnnxRuntimeBackend, OnnxRuntimeOptions
from trt_mpq.data.datasets import load_dataset
from trt_mpq.errors import ConfigError
from trt_mpq.executors import Serial
from trt_mpq.measure.robust import ReplicaScorer
from trt_mpq.measure.task_metric import Evaluator, Fanout, TaskMetric, outputs_on
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan, Precision
from trt_mpq.quant.lower import lower
from trt_mpq.quant.ranges import Ranges

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


class Wide(Serial):
    """One process that says it has 4 workers: evaluations are cut into batch jobs (``outputs_on``)."""

    workers = 4


@pytest.fixture(scope="module")
def digits():
    model = load_model(EXAMPLE / "digits_cnn.onnx")
    data = load_dataset(model, str(EXAMPLE / "eval.npz"))
    units = find_units(model.proto).units
    amax = {t: 4.0 for u in units for t in u.activations}  # coarse thresholds: INT8 visibly changes things
    int8 = lower(model.proto, units, Plan.of({u.name: Precision.INT8 for u in units}), Ranges("max", amax))
    return model, data, int8


def _evaluator(data, metric, fanout=None, batch=16):
    return Evaluator(data, OnnxRuntimeBackend(OnnxRuntimeOptions(threads=1)), metric, batch, fanout=fanout)


@pytest.mark.parametrize("metric", list(TaskMetric))
def test_fp32_scores_its_best_and_int8_is_scored_against_it(digits, metric):
    model, data, int8 = digits
    e = _evaluator(data, metric)
    best = e.fp32_score(model.proto)
    if metric is TaskMetric.ACCURACY:
        assert 0.9 < best <= 1.0  # the trained example on its held-out digits
    else:
        assert best == pytest.approx({"agreement": 1.0, "cosine": 1.0, "sqnr": 100.0}[metric.value])
    assert e.score(int8) <= best + 1e-12
    measured = e.measure(int8)
    assert measured.low <= measured.value <= measured.high


def test_batch_jobs_give_the_outputs_of_one_session(digits):
    model, data, int8 = digits
    backend = OnnxRuntimeBackend(OnnxRuntimeOptions(threads=1))
    alone = _evaluator(data, TaskMetric.AGREEMENT)
    spread = _evaluator(data, TaskMetric.AGREEMENT, Fanout(Wide(), backend, None))
    a, b = outputs_on([alone], int8)[0], outputs_on([spread], int8)[0]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert alone.fp32_score(model.proto) == spread.fp32_score(model.proto)
    assert alone.measure(int8) == spread.measure(int8)


def test_replicas_have_their_own_references_and_hold_fp32_at_its_best(digits):
    model, data, int8 = digits
    for fanout in (None, Fanout(Wide(), OnnxRuntimeBackend(OnnxRuntimeOptions(threads=1)), None)):
        scorer = ReplicaScorer(data, OnnxRuntimeBackend(OnnxRuntimeOptions(threads=1)), TaskMetric.AGREEMENT, 16,
                               replicas=3, fanout=fanout)
        assert scorer.fp32_score(model.proto) == 1.0
        base, replicas = scorer.measure(model.proto)
        assert base.value == 1.0 and [r.value for r in replicas] == [1.0] * 3  # FP32 on its own replicas
        base, replicas = scorer.measure(int8)
        assert len(replicas) == 3 and all(0 <= r.value <= 1 for r in replicas)
        if fanout is None:
            expected = (base, replicas)
        else:
            assert (base, replicas) == expected


def test_accuracy_without_labels_says_what_to_do(digits):
    model, _, _ = digits
    unlabelled = load_dataset(model, f"{EXAMPLE / 'eval.npz'}:input=input")
    with pytest.raises(ConfigError, match="labels"):
        _evaluator(unlabelled, TaskMetric.ACCURACY)
