"""Calibration on its own (measure/calibration.py): which inputs and weights INT8 covers, the probe model that
exposes them, and the ranges ``calibrate`` finds, checked against activations computed with ONNX Runtime directly
(maxima, a percentile of the |x| histogram binned by hand, per-channel means)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import builders
from fakes import CountingBackend, CountingProgress
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.measure.calibration import calibrate, channel_axes, int8_weights, probe_model
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision

QUANTIZED = ["x", "r1", "r3", "f"]  # the INT8 inputs of conv1, conv2, gap and fc


@pytest.fixture
def tiny(tmp_path):
    model = load_model(builders.save(builders.conv_bn_relu_residual(), tmp_path))
    units = find_units(model.proto, model.tensors).units
    data = generated_dataset(model, samples=10, seed=3)
    return model, units, data


def _activations(model: onnx.ModelProto, feeds: dict, names: list[str]) -> dict[str, np.ndarray]:
    """Intermediate tensors of ``model`` from ONNX Runtime itself (its own session, every name an output)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.fixture
def activations(tiny):
    model, _, data = tiny
    feeds = data.take(0, data.num_samples)
    return {"x": feeds["x"], **_activations(model.proto, feeds, QUANTIZED[1:])}


def test_channel_axes_name_each_weight_units_input_and_the_axis_its_weight_contracts(tiny):
    _, units, _ = tiny
    assert channel_axes(units) == {"x": 1, "r1": 1, "f": -1}  # Conv: channels on axis 1, Gemm: the last axis
    conv = units[0]
    others = [dataclasses.replace(conv, main_op="ConvTranspose"), dataclasses.replace(conv, weight=None),
              dataclasses.replace(conv, activations=())]
    assert channel_axes(others) == {}  # not covered by bias correction, no weight, nothing quantized
    fanout = find_units(builders.norm_fanout()).units
    assert channel_axes(fanout) == {"n": -1}  # both MatMuls read the norm's output


def test_int8_weights_are_the_initializers_of_units_int8_may_run_with_their_axes(tiny):
    model, units, _ = tiny
    inits = {t.name: numpy_helper.to_array(t) for t in model.proto.graph.initializer}
    found = int8_weights(model.proto, units)
    assert set(found) == {"w1", "w2", "wf"}
    for u in units:
        if u.weight is not None:
            array, axis = found[u.weight]
            assert np.array_equal(array, inits[u.weight]) and axis == u.weight_axis == 0
    half_only = dataclasses.replace(units[0], allowed=(Precision.FP16,))
    elsewhere = dataclasses.replace(units[1], weight="not_an_initializer")
    (name, (array, axis)), = int8_weights(model.proto, [half_only, elsewhere, units[3]]).items()
    assert name == "wf" and np.array_equal(array, inits["wf"]) and axis == 0


def test_the_probe_returns_every_name_asked_once_typed_and_leaves_the_model_alone(tiny):
    model, _, _ = tiny
    before = model.proto.SerializeToString()
    probe, fetch = probe_model(model, ["r1", "x", "y", "r1", "f", "nowhere"])
    assert fetch == ["r1", "y", "f", "nowhere"]  # graph inputs are fed, not fetched; duplicates once
    outputs = [o.name for o in probe.graph.output]
    assert outputs == ["y", "r1", "f", "nowhere"]  # the model's own output is not added twice
    types = {o.name: o.type.tensor_type.elem_type for o in probe.graph.output}
    assert types["r1"] == types["f"] == onnx.TensorProto.FLOAT and not probe.graph.output[3].HasField("type")
    assert model.proto.SerializeToString() == before
    other = onnx.ModelProto()
    other.CopyFrom(model.proto)
    other.graph.doc_string = "the skeleton"
    probe, _ = probe_model(model, ["r3"], other)
    assert probe.graph.doc_string == "the skeleton" and [o.name for o in probe.graph.output] == ["y", "r3"]


def test_max_ranges_are_the_largest_absolute_activations_whatever_the_batch(tiny, activations):
    model, units, data = tiny
    expected = {n: float(np.abs(activations[n]).max()) for n in QUANTIZED}
    for batch in (4, 10, 1):
        ranges = calibrate(model, units, data, CountingBackend(), calibrator="max", batch=batch)
        assert ranges.calibrator == "max" and ranges.candidates == {}
        assert ranges.amax == pytest.approx(expected, rel=1e-6) and ranges.absmax == ranges.amax
        assert ranges.methods == dict.fromkeys(QUANTIZED, "max")
        assert ranges.weight_amax == {} and ranges.means == {}  # weight scales "max", no bias correction


def _percentile_by_hand(a: np.ndarray, amax: float, percentile: float = 99.99) -> float:
    """The 2048-bin |x| histogram over [0, amax] (float32 binning, as the collector bins float32 data), and the
    smallest upper bin edge below which ``percentile`` % of the values fall."""
    idx = np.minimum((np.abs(a).ravel() * np.float32(2048 / amax)).astype(np.int32), 2047)
    cdf = np.cumsum(np.bincount(idx, minlength=2048)) / idx.size
    return float(np.linspace(0.0, amax, 2049)[int(np.searchsorted(cdf, percentile / 100)) + 1])


def test_percentile_ranges_come_from_a_second_pass_over_the_whole_data(tiny):
    model, units, _ = tiny
    data = generated_dataset(model, samples=64, seed=3)  # 12,288 values of x: 99.99 % leaves out the largest
    feeds = data.take(0, 64)
    activations = {"x": feeds["x"], **_activations(model.proto, feeds, QUANTIZED[1:])}
    progress = CountingProgress()
    backend = CountingBackend()
    ranges = calibrate(model, units, data, backend, calibrator="percentile", batch=16, progress=progress)
    assert backend.compiled == 1  # one probe, run twice over the data
    assert progress.started == [("calibration", 2 * 4)] and progress.advanced == 8  # two passes of 4 batches
    for n in QUANTIZED:
        absmax = ranges.absmax[n]
        assert absmax == pytest.approx(float(np.abs(activations[n]).max()), rel=1e-6)
        assert ranges.amax[n] == pytest.approx(_percentile_by_hand(activations[n], absmax), rel=1e-9)
        assert ranges.candidates[n] == {"max": absmax, "percentile": ranges.amax[n]}
        assert ranges.methods[n] == "percentile"
    assert ranges.amax["x"] < ranges.absmax["x"] and ranges.amax["r1"] < ranges.absmax["r1"]
    again = calibrate(model, units, data, CountingBackend(), calibrator="percentile", batch=5)
    assert again.amax == ranges.amax  # the histogram's integer counts do not depend on the batching


def test_auto_keeps_every_methods_candidate_and_starts_from_mse(tiny):
    model, units, data = tiny
    progress = CountingProgress()
    ranges = calibrate(model, units, data, CountingBackend(), calibrator="auto", batch=4, progress=progress)
    assert progress.advanced == 6
    for n in QUANTIZED:
        assert set(ranges.candidates[n]) == {"max", "percentile", "entropy", "mse"}
        assert ranges.amax[n] == ranges.candidates[n]["mse"] and ranges.methods[n] == "mse"
        assert all(0 < t <= ranges.absmax[n] for t in ranges.candidates[n].values())


def test_one_pass_and_one_advance_per_batch_for_max(tiny):
    model, units, data = tiny
    progress = CountingProgress()
    calibrate(model, units, data, CountingBackend(), calibrator="max", batch=4, progress=progress)
    assert progress.started == [("calibration", 3)] and progress.advanced == 3


def test_bias_correction_records_each_weight_inputs_channel_means(tiny, activations):
    model, units, data = tiny
    ranges = calibrate(model, units, data, CountingBackend(), calibrator="max", batch=4, bias_correction=True)
    assert ranges.bias_correction and set(ranges.means) == {"x", "r1", "f"}
    for n, axes in (("x", (0, 2, 3)), ("r1", (0, 2, 3)), ("f", (0,))):
        by_hand = activations[n].astype(np.float64).mean(axis=axes)
        assert ranges.means[n] == pytest.approx(tuple(by_hand), rel=1e-6, abs=1e-9)


def test_mse_weight_scales_decide_each_int8_weights_clip_per_channel(tiny):
    model, units, data = tiny
    ranges = calibrate(model, units, data, CountingBackend(), calibrator="max", batch=4, weight_scales="mse")
    assert ranges.weight_scales == "mse" and set(ranges.weight_amax) == {"w1", "w2", "wf"}
    for name, (w, axis) in int8_weights(model.proto, units).items():
        top = np.abs(w).max(axis=tuple(k for k in range(w.ndim) if k != axis))
        clip = np.asarray(ranges.weight_amax[name])
        assert clip.shape == (w.shape[axis],)
        assert np.all(clip <= top + 1e-6) and np.all(clip >= 0.5 * top - 1e-6)
