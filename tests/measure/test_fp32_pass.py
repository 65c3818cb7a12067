"""The FP32 pass (measure/fp32_pass.py): the layout of kept tensors, which tensors are observed, and the pass
itself: the batches it keeps are what ONNX Runtime computes directly, its ranges are the maxima of those
activations and, for the quantized tensors, the very ranges ``calibrate`` finds on the same data."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import builders
from fakes import CountingBackend, CountingProgress
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.executors import Serial
from trt_mpq.measure.calibration import calibrate
from trt_mpq.measure.fp32_pass import Layout, fp32_pass, observed_tensors
from trt_mpq.measure.sensitivity import Settings, unit_regions
from trt_mpq.measure.store import ActivationStore
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.network.weights import split_weights
from trt_mpq.precision import Precision

P = Precision
OBSERVED = ["x", "r1", "r3", "p", "f", "y"]  # what the units of the residual CNN read and hand on


@pytest.fixture
def tiny(tmp_path):
    """The residual CNN and 10 generated samples: batches of 4, 4 and 2."""
    model = load_model(builders.save(builders.conv_bn_relu_residual(), tmp_path))
    return model, find_units(model.proto, model.tensors), generated_dataset(model, samples=10, seed=5)


def _run(tmp_path, model, table, data, settings, name="store"):
    """The pass as the analysis runs it: keeping every unit's frontier (the quantized tensors among them) and
    the outputs, which the histograms and the measurements read back."""
    regions = unit_regions(model.proto, table.units, table.units)
    kept = list(dict.fromkeys([n for r in regions for n in r.frontier] + ["y"]))
    assert kept == ["x", "r1", "r3", "f", "y"]
    skeleton, weights = split_weights(model.proto, min_bytes=64)
    store, backend, progress = ActivationStore(tmp_path / name), CountingBackend("none"), CountingProgress()
    ranges, layout = fp32_pass(model, skeleton, weights, table, kept, data, backend, settings, store,
                               Serial(), progress)
    return ranges, layout, store, backend, progress


def _by_hand(model: onnx.ModelProto, feeds: dict, names: list[str]) -> dict[str, np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                          for n in names if n != "y")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return {**feeds, **dict(zip(names, session.run(names, feeds), strict=True))}


def test_a_layout_leaves_free_the_dims_that_differ_between_batches():
    layout = Layout.of([{"a": ("<f4", (8, 3, 5)), "m": ("|b1", (2, 7))},
                        {"a": ("<f4", (8, 4, 5)), "m": ("|b1", (2, 7))},
                        {"a": ("<f4", (2, 3, 5)), "m": ("|b1", (2, 7))}])
    assert layout.dtype_shape("a") == (np.dtype(np.float32), [None, None, 5])  # a middle dim moved too
    assert layout.dtype_shape("m") == (np.dtype(bool), [2, 7])
    half = Layout.of([{"h": ("<f2", (1, 16))}])
    assert half.dtype_shape("h") == (np.dtype(np.float16), [1, 16])  # one batch: every dim fixed
    with pytest.raises(KeyError):
        half.dtype_shape("a")


def test_observed_tensors_are_what_units_read_and_hand_on_once_without_constants(tiny):
    model, table, _ = tiny
    assert observed_tensors(model.proto, table.units) == OBSERVED
    reading_a_weight = dataclasses.replace(table.units[0], inputs=("x", "w1"), outputs=("r1",))
    assert observed_tensors(model.proto, [reading_a_weight]) == ["x", "r1"]
    assert observed_tensors(model.proto, []) == []


def test_the_pass_keeps_what_onnx_runtime_computes_batch_by_batch_and_the_maxima_of_it(tmp_path, tiny):
    model, table, data = tiny
    ranges, layout, store, backend, progress = _run(tmp_path, model, table, data, Settings(batch=4))
    assert backend.compiled == 1 and store.complete
    assert progress.started == [("FP32 reference and ranges", 3)] and progress.advanced == 3
    whole = _by_hand(model.proto, data.take(0, 10), OBSERVED[1:])
    for b, (lo, hi) in enumerate(data.spans(4)):
        hand = _by_hand(model.proto, data.take(lo, hi), ["r1", "r3", "f", "y"])
        kept = store.read(b, ["x", "r1", "r3", "f", "y"])
        assert all(np.array_equal(kept[n], hand[n]) for n in kept) and len(kept["x"]) == hi - lo
    assert layout.dtype_shape("r1") == (np.dtype(np.float32), [None, 4, 8, 8])  # the last batch holds 2
    assert layout.dtype_shape("y") == (np.dtype(np.float32), [None, 5])
    assert ranges.absmax == pytest.approx({n: float(np.abs(whole[n]).max()) for n in OBSERVED}, rel=1e-6)
    assert ranges.shapes == {"x": (1, 3, 8, 8), "r1": (1, 4, 8, 8), "r3": (1, 4, 8, 8), "p": (1, 4, 1, 1),
                             "f": (1, 4), "y": (1, 5)}  # per sample
    assert set(ranges.amax) == {"x", "r1", "r3", "f"} and all(ranges.amax[n] == ranges.absmax[n] for n in ranges.amax)
    assert ranges.candidates == {} and ranges.int4_block == Settings().int4_block


@pytest.mark.parametrize("settings", [
    Settings(calibrator="percentile", batch=4),
    Settings(calibrator="auto", batch=4, weight_scales="mse", bias_correction=True),
], ids=["percentile", "auto-mse-bias"])
def test_the_ranges_of_quantized_tensors_are_those_calibrate_finds(tmp_path, tiny, settings):
    model, table, data = tiny
    ranges, _, _, backend, progress = _run(tmp_path, model, table, data, settings)
    alone = calibrate(model, table.units, data, CountingBackend("none"), settings.calibrator, settings.batch,
                      settings.weight_scales, settings.bias_correction)
    assert progress.started == [("FP32 reference and ranges", 2 * 3)] and progress.advanced == 6
    assert backend.compiled == 1  # the histograms read the kept batches: the model does not run again
    for field in ("amax", "candidates", "methods", "means", "weight_amax"):
        assert getattr(ranges, field) == getattr(alone, field), field
    assert {n: ranges.absmax[n] for n in alone.absmax} == alone.absmax
    if settings.weight_scales == "mse":
        assert set(ranges.weight_amax) == {"w1", "w2", "wf"} and set(ranges.means) == {"x", "r1", "f"}


def test_only_the_inputs_of_units_a_quantized_precision_is_measured_on_get_thresholds(tmp_path, tiny):
    model, table, data = tiny
    fp8 = Settings(precisions=(P.FP8,), calibrator="percentile", batch=4, int4_block=32)
    ranges, *_ = _run(tmp_path, model, table, data, fp8, name="fp8")
    assert set(ranges.amax) == set(ranges.candidates) == {"x", "r1", "f"}  # the pool cannot run in FP8
    assert ranges.int4_block == 32
    half = Settings(precisions=(P.FP16,), calibrator="auto", batch=4)
    ranges, *_ = _run(tmp_path, model, table, data, half, name="fp16")
    assert ranges.amax == {} and ranges.candidates == {}  # nothing quantized: no thresholds
    assert set(ranges.absmax) == set(OBSERVED)  # the maxima are recorded all the same (FP16 overflow)
