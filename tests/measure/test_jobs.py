"""The analysis's jobs (measure/jobs.py), each run on its own and checked against the same numbers computed by
hand: the FP32 probe's kept tensors, maxima and layout; one batch's |x| histograms; a tensor's candidate
thresholds; a weight's clip; a unit's per-batch output deltas, and which batches each precision runs on."""

from __future__ import annotations

import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import builders
from fakes import CountingBackend
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.errors import BackendError
from trt_mpq.executors import MemoryBatches
from trt_mpq.measure.calibration import calibrate, probe_model
from trt_mpq.measure.fp32_pass import Layout
from trt_mpq.measure.jobs import (
    ROUNDINGS,
    Fp32Job,
    Fp32Plan,
    HistogramJob,
    MeasureJob,
    ThresholdJob,
    WeightJob,
    fp32_batch,
    histogram_batch,
    measure_batches,
    thresholds_of,
    weight_clip,
)
from trt_mpq.measure.output_delta import BatchDelta
from trt_mpq.measure.sensitivity import downstream_model, unit_regions
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.network.weights import split_weights
from trt_mpq.precision import Plan, Precision
from trt_mpq.quant.collector import RangeCollector
from trt_mpq.quant.lower import lower

P = Precision


class Recording(MemoryBatches):
    """Batches in memory that remember what a job read."""

    def __init__(self, batches) -> None:
        super().__init__(batches)
        self.reads: list[tuple[int, list[str]]] = []

    def read(self, batch, names):
        names = list(names)
        self.reads.append((batch, names))
        return super().read(batch, names)


def _by_hand(model: onnx.ModelProto, feeds: dict, names: list[str]) -> dict[str, np.ndarray]:
    """``names`` of ``model`` on ``feeds``, straight from ONNX Runtime (graph as written), every name an output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                          for n in names if n not in present)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.fixture
def tiny(tmp_path):
    """The residual CNN split into a skeleton and a weight bank, 8 generated samples in two batches of 4."""
    model = load_model(builders.save(builders.conv_bn_relu_residual(), tmp_path))
    data = generated_dataset(model, samples=8, seed=2)
    skeleton, weights = split_weights(model.proto, min_bytes=64)
    units = find_units(model.proto, model.tensors).units
    return model, data, skeleton, weights, units


def _fp32_plan(model, skeleton, kept, observed) -> Fp32Plan:
    probe, fetch = probe_model(model, [*kept, *observed], skeleton)
    return Fp32Plan(probe, "probe", tuple(fetch), tuple(kept), RangeCollector("max", observed, observed))


def test_the_fp32_job_keeps_what_the_model_computes_with_its_layout_and_maxima(tiny):
    model, data, skeleton, weights, _ = tiny
    kept, observed = ["x", "r1", "y"], ["r1", "r3", "f"]
    plan = _fp32_plan(model, skeleton, kept, observed)
    backend = CountingBackend("none")
    for b, (lo, hi) in enumerate(data.spans(4)):
        feeds = data.take(lo, hi)
        result, tensors = fp32_batch(Fp32Job(b, feeds, hi - lo), plan, backend, weights)
        hand = _by_hand(model.proto, feeds, ["r1", "r3", "f", "y"])
        assert list(tensors) == kept and np.array_equal(tensors["x"], feeds["x"])
        for n in ("r1", "y"):
            np.testing.assert_array_equal(tensors[n], hand[n])
        assert result.layout == {"x": ("<f4", (4, 3, 8, 8)), "r1": ("<f4", (4, 4, 8, 8)), "y": ("<f4", (4, 5))}
        assert result.ranges.maxima == {n: (float(np.abs(hand[n]).max()), 0) for n in observed}
        assert result.ranges.shapes["r3"] == (1, 4, 8, 8) and result.ranges.shapes["y"] == (1, 5)  # per sample
    assert backend.compiled == 1  # the probe is compiled once for every batch it serves
    session = plan.sessions["probe"]
    plan.close()
    assert plan.sessions == {}
    with pytest.raises(BackendError):  # closed with the plan
        session.run(data.take(0, 1))


def test_an_fp32_plan_travels_without_its_compiled_session(tiny):
    model, data, skeleton, weights, _ = tiny
    plan = _fp32_plan(model, skeleton, ["y"], ["f"])
    backend = CountingBackend("none")
    job = Fp32Job(0, data.take(0, 4), 4)
    here, kept_here = fp32_batch(job, plan, backend, weights)
    moved = pickle.loads(pickle.dumps(plan))
    assert plan.sessions and moved.sessions == {} and moved.probe == plan.probe and moved.kept == plan.kept
    there, kept_there = fp32_batch(job, moved, backend, weights)
    assert backend.compiled == 2  # the copy compiles its own
    assert there == here and np.array_equal(kept_there["y"], kept_here["y"])
    plan.close()
    moved.close()


def test_a_histogram_job_bins_the_absolute_values_of_its_batch_only():
    a = np.array([[0.5, -1.5, 3.25], [-0.0, 5000.0, -2047.5]], np.float32)  # bins of width 1 over [0, 2048]
    reader = Recording({0: {"a": np.zeros(3, np.float32)},
                        2: {"a": a, "b": np.ones((2, 2), np.float32), "c": np.ones(4, np.float32)}})
    counts = histogram_batch(HistogramJob(2, {"a": 2048.0, "b": 0.0}), reader)
    assert reader.reads == [(2, ["a", "b"])]
    expected = np.zeros(2048, np.int64)
    for k in (0, 1, 3, 0, 2047, 2047):  # |5000| lies past the limit: the last bin
        expected[k] += 1
    assert set(counts) == {"a", "b"} and np.array_equal(counts["a"], expected)
    assert counts["b"][0] == 4 and counts["b"].sum() == 4  # no range: every value in the first bin
    assert HistogramJob(5, {}).batches == (5,)


def test_a_threshold_job_gives_max_and_each_asked_methods_threshold():
    counts = np.zeros(2048, np.int64)
    counts[9], counts[2047] = 10_000, 1  # 99.99 % of the values below the edge of bin 9: 10.0
    job = ThresholdJob("r1", absmax=2047.9, limit=2048.0, counts=counts.copy(), methods=("percentile",))
    assert thresholds_of(job) == {"max": 2047.9, "percentile": 10.0}
    every = thresholds_of(ThresholdJob("r1", 2047.9, 2048.0, counts.copy(), ("percentile", "entropy", "mse")))
    assert set(every) == {"max", "percentile", "entropy", "mse"} and every["percentile"] == 10.0
    assert all(0 < v <= 2048.0 for v in every.values())
    centers = (np.arange(2048) + 0.5) * (2048.0 / 2048)

    def error(t: float) -> float:  # expected squared INT8 error of the histogram's values at threshold t
        s = t / 127
        return float((counts * (centers - np.minimum(np.round(centers / s), 127) * s) ** 2).sum())

    assert error(every["mse"]) <= min(error(every["max"]), error(every["percentile"]), error(1024.0))
    assert np.array_equal(job.counts, counts)  # the job's counts are read, not changed


def _error(w: np.ndarray, clip: float) -> float:
    s = clip / 127
    return float(((w - np.clip(np.round(w / s), -128, 127) * s) ** 2).sum())


def test_a_weight_job_gives_each_channels_clip():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 40)).astype(np.float32)
    w[1, 7] = 25.0  # one outlier in channel 1
    maxima = weight_clip(WeightJob("w", w, 0, "max"))
    assert maxima == tuple(float(v) for v in np.abs(w).max(axis=1)) and all(type(v) is float for v in maxima)
    assert weight_clip(WeightJob("w", w, 1, "max")) == tuple(float(v) for v in np.abs(w).max(axis=0))
    assert weight_clip(WeightJob("w", w, None, "max")) == (25.0,)
    clips = weight_clip(WeightJob("w", w, 0, "mse"))
    grid = np.linspace(0.5, 1.0, 51)
    for row, clip, top in zip(w.astype(np.float64), clips, maxima, strict=True):
        assert 0.5 * top - 1e-6 <= clip <= top + 1e-6
        best = min(_error(row, r * top) for r in grid)
        assert _error(row, clip) == pytest.approx(best, rel=1e-5)  # the least error the grid of clips offers
    assert clips[1] == pytest.approx(25.0, rel=1e-6)  # clipping the outlier would cost more than it saves


@pytest.fixture
def measured(tiny):
    """conv2's downstream model, the kept FP32 batches (its frontier and the reference output), max ranges."""
    model, data, skeleton, weights, units = tiny
    backend = CountingBackend("none")
    ranges = calibrate(model, units, data, backend, calibrator="max", batch=4)
    region = {r.unit.name: r for r in unit_regions(model.proto, units, units)}["conv2"]
    kept = [*region.frontier, "y"]
    plan = _fp32_plan(model, skeleton, kept, [])
    batches, layouts = {}, []
    for b, (lo, hi) in enumerate(data.spans(4)):
        result, tensors = fp32_batch(Fp32Job(b, data.take(lo, hi), hi - lo), plan, backend, weights)
        batches[b] = tensors
        layouts.append(result.layout)
    plan.close()
    sub = downstream_model(skeleton, region, Layout.of(layouts))
    unit = next(u for u in units if u.name == "conv2")
    return model, data, weights, units, unit, sub, ranges, batches


def test_a_measure_job_gives_the_deltas_of_the_whole_lowered_model_batch_by_batch(measured):
    model, data, weights, units, unit, sub, ranges, batches = measured
    backend = CountingBackend("none")
    job = MeasureJob(sub, unit, (P.INT8, P.FP16), (0, 1), ("y",))
    deltas = measure_batches(job, backend, weights, ranges, MemoryBatches(batches))
    assert backend.compiled == 2  # one session per precision, whatever the number of batches
    assert set(deltas) == {P.INT8, P.FP16} and all(set(d) == {0, 1} for d in deltas.values())
    for p in (P.INT8, P.FP16):
        whole = lower(model.proto, units, Plan.of({"conv2": p}), ranges)
        for b, (lo, hi) in enumerate(data.spans(4)):
            feeds = data.take(lo, hi)
            ref, got = _by_hand(model.proto, feeds, ["y"])["y"], _by_hand(whole, feeds, ["y"])["y"]
            assert set(deltas[p][b]) == {"y"}
            assert deltas[p][b]["y"] == BatchDelta.of(ref, got)  # the cut-out region: bit for bit
    assert all(deltas[P.FP16][b]["y"].err2 < deltas[P.INT8][b]["y"].err2 for b in (0, 1))
    assert deltas[P.INT8][0]["y"].classified == 4  # [N, 5] class scores: top-1 counted per sample


def test_roundings_run_only_on_their_batches_and_known_runs_are_not_repeated(measured):
    _, _, weights, _, unit, sub, ranges, batches = measured
    assert ROUNDINGS == (P.FP16, P.BF16, P.TF32)
    whole = measure_batches(MeasureJob(sub, unit, (P.INT8, P.FP16), (0, 1), ("y",)), CountingBackend("none"),
                            weights, ranges, MemoryBatches(batches))
    reader = Recording(batches)
    job = MeasureJob(sub, unit, (P.INT8, P.FP16), (0, 1), ("y",), rounding=frozenset({1}), all_rounding=False)
    part = measure_batches(job, CountingBackend("none"), weights, ranges, reader)
    assert set(part[P.INT8]) == {0, 1} and set(part[P.FP16]) == {1}
    assert part[P.FP16][1] == whole[P.FP16][1] and part[P.INT8] == whole[P.INT8]
    assert [b for b, _ in reader.reads] == [0, 0, 1, 1]  # each batch read once for its frontier, once for "y"
    assert reader.reads[0] == (0, ["r1"]) and reader.reads[1] == (0, ["y"])
    reader = Recording(batches)
    known = frozenset({(P.INT8, 0)})  # the threshold choice measured it already
    job = MeasureJob(sub, unit, (P.INT8, P.FP16), (0, 1), ("y",), frozenset({1}), False, known)
    left = measure_batches(job, CountingBackend("none"), weights, ranges, reader)
    assert left == {P.INT8: {1: whole[P.INT8][1]}, P.FP16: {1: whole[P.FP16][1]}}
    assert {b for b, _ in reader.reads} == {1}  # nothing to run on batch 0: it is not even read
    assert MeasureJob(sub, unit, (P.INT8,), (3, 4, 5), ("y",)).parts == 3
