import numpy as np
import pytest

import builders
from fakes import CountingBackend
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.executors import Serial
from trt_mpq.measure.fp32_pass import fp32_pass
from trt_mpq.measure.sensitivity import Settings, downstream_model, unit_regions
from trt_mpq.measure.store import ActivationStore
from trt_mpq.measure.thresholds import (
    REFINE_ROUNDS,
    _Reference,
    candidate_errors,
    choice_batches,
    choose_thresholds,
    refined_threshold,
    spread,
)
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.network.weights import split_weights
from trt_mpq.precision import Precision
from trt_mpq.progress import Progress
from trt_mpq.quant.ranges import REFINED


def test_reference_errors_count_each_sample_alike():
    ref = _Reference({"y": np.array([[1.0, 0.0], [100.0, 0.0], [0.0, 0.0]], np.float32)})
    got = {"y": np.array([[1.5, 0.0], [100.0, 10.0], [0.0, 0.0]], np.float32)}
    np.testing.assert_allclose(ref.errors(got), [0.25, 0.01, 0.0])
    got["y"][2, 0] = 1.0  # error on a zero reference, and a non-finite output
    got["y"][0, 1] = np.nan
    assert np.isinf(ref.errors(got)).tolist() == [True, False, True]


def test_batches_are_spread_over_the_data():
    assert spread(9, 2) == [0, 8] and spread(9, 3) == [0, 4, 8] and spread(2, 4) == [0, 1] and spread(5, 1) == [0]
    assert choice_batches(32) == choice_batches(9) == choice_batches(2) == [0]  # each batch holds samples from all over


@pytest.fixture
def fanout(tmp_path):
    """A LayerNorm whose output two MatMul units and a residual Add read, after an FP32 pass."""
    model = load_model(builders.save(builders.norm_fanout(), tmp_path))
    data = generated_dataset(model, samples=16, seed=2)
    table = find_units(model.proto, model.tensors)
    settings = Settings(calibrator="auto", batch=4)
    store = ActivationStore(tmp_path / "store")
    backend = CountingBackend("none")
    regions = {r.unit.name: r for r in unit_regions(model.proto, table.units, table.units)}
    skeleton, weights = split_weights(model.proto, min_bytes=64)
    outputs = [o.name for o in model.proto.graph.output]
    kept = list(dict.fromkeys([n for r in regions.values() for n in r.frontier] + outputs))
    executor = Serial()
    ranges, layout = fp32_pass(model, skeleton, weights, table, kept, data, backend, settings, store, executor,
                               Progress())
    return (executor, weights, table.units, lambda u: downstream_model(skeleton, regions[u.name], layout), ranges,
            store, backend, len(data.spans(4)), outputs)


def test_a_shared_tensor_gets_the_threshold_its_first_reader_measures_least_harmful(fanout):
    executor, weights, units, downstream, ranges, store, backend, batches, outputs = fanout
    chosen, measured = choose_thresholds(units, downstream, ranges, (Precision.INT8,), batches, outputs, executor,
                                         [backend, weights])
    readers = {}
    for u in units:
        for t in u.activations:
            readers.setdefault(t, []).append(u)
    shared = [t for t, us in readers.items() if len(us) > 1 and len(ranges.options([t])) > 1]
    assert shared, "the model should have a tensor several units read, with distinct candidates"
    for t in shared:  # recomputed independently, on the first reader in graph order
        first = readers[t][0]
        errors = candidate_errors(downstream(first), weights, first, Precision.INT8, ranges,
                                  {t: list(ranges.options([t]))}, backend, store, choice_batches(batches),
                                  outputs).errors[t]
        assert len(set(errors.values())) > 1
        assert chosen.methods[t] == min(errors, key=errors.get)
        assert chosen.amax[t] == ranges.candidates[t][chosen.methods[t]]
    assert all(chosen.methods[t] for t in readers)
    # only a unit with one quantized input has its trials kept as its measurement (here: none decides alone)
    assert not any(len(u.activations) > 1 for u in units if (u.name, Precision.INT8) in measured)


def test_tensors_whose_candidates_agree_take_max_without_running_anything(fanout):
    executor, weights, units, downstream, ranges, store, _, batches, outputs = fanout
    flat = {t: {m: 1.0 for m in c} for t, c in ranges.candidates.items()}  # every method the same threshold
    counting = CountingBackend("none")
    chosen, measured = choose_thresholds(units, downstream, type(ranges)(**{**ranges.__dict__, "candidates": flat}),
                                         (Precision.INT8,), batches, outputs, executor, [counting, weights])
    assert counting.compiled == 0 and set(chosen.methods.values()) == {"max"} and measured == {}


def test_a_refined_threshold_lies_next_to_the_best_at_the_least_of_a_parabola():
    # log-error a parabola in log-threshold with its least at 8: three points around it find it
    tried = {t: float(np.exp((np.log(t) - np.log(8.0)) ** 2)) for t in (2.0, 4.0, 20.0, 25.0)}
    x = refined_threshold(tried, 4.0)
    assert x is not None and np.sqrt(4.0 * 2.0) <= x <= np.sqrt(4.0 * 20.0)
    assert abs(np.log(x) - np.log(8.0)) < abs(np.log(4.0) - np.log(8.0))  # nearer the least than the best was
    # the best at an end of the range: the geometric midpoint toward its one neighbour
    assert refined_threshold({2.0: 1.0, 8.0: 0.5}, 8.0) == pytest.approx(4.0)
    # neighbours too close to gain anything between them, or a best that was not tried
    assert refined_threshold({2.0: 1.0, 2.1: 0.5}, 2.1) is None
    assert refined_threshold({2.0: 1.0, 8.0: 0.5}, 3.0) is None
    # non-finite errors are no evidence: the one finite point has no neighbour
    assert refined_threshold({2.0: np.inf, 8.0: 0.5}, 8.0) is None


def _spread(ranges, tensor, ratio):
    """``ranges`` with ``tensor``'s candidates two thresholds ``ratio`` apart (max and percentile) around its
    largest |x| (clipping at a third of it and a range three times too wide both cost more than between)."""
    top = ranges.candidates[tensor]["max"]
    candidates = {**ranges.candidates, tensor: {"max": top * np.sqrt(ratio), "percentile": top / np.sqrt(ratio)}}
    return type(ranges)(**{**ranges.__dict__, "candidates": candidates})


def test_wide_candidates_are_searched_between_and_the_least_error_wins(fanout):
    executor, weights, units, downstream, ranges, store, _, batches, outputs = fanout
    first = next(u for u in units if u.activations)
    t = first.activations[0]
    compiled = {}
    for ratio in (2.0, 10.0):  # 2: both candidates near the best; 10: a better one between
        counting = CountingBackend("none")
        chosen, _ = choose_thresholds(units, downstream, _spread(ranges, t, ratio), (Precision.INT8,), batches,
                                      outputs, executor, [counting, weights])
        compiled[ratio] = counting.compiled
    assert 1 <= compiled[10.0] - compiled[2.0] <= REFINE_ROUNDS  # only the wide tensor, once a round at most
    wide = _spread(ranges, t, 10.0)
    method, amax = chosen.methods[t], chosen.amax[t]
    assert chosen.candidates[t][method] == amax
    assert method == REFINED and wide.candidates[t]["percentile"] < amax < wide.candidates[t]["max"]
    # recomputed independently: the chosen threshold's error is the least of the two methods' and its own
    errors = candidate_errors(downstream(first), weights, first, Precision.INT8, wide.with_candidate("x", {t: amax}),
                              {t: ("max", "percentile", "x")}, CountingBackend("none"), store,
                              choice_batches(batches), outputs).errors[t]
    assert errors["x"] <= min(errors["max"], errors["percentile"])
