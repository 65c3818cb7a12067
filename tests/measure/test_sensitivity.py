import json

import numpy as np
import pytest

import builders
from fakes import CountingBackend, ReferenceBackend, StopAfter
from trt_mpq.artifacts import SENSITIVITY_SCHEMA as SCHEMA
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.measure.journal import Journal
from trt_mpq.measure.sensitivity import Settings, analyze, measure_naive
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision
from trt_mpq.quant.ranges import Ranges


def _setup(tmp_path, builder, samples=10):
    path = builders.save(builder(), tmp_path)
    model = load_model(path)
    return model, generated_dataset(model, samples=samples, seed=3)


@pytest.mark.parametrize("builder", [builders.conv_bn_relu_residual, builders.gates, builders.skip_produced_late,
                                     builders.attention_matmul])
@pytest.mark.parametrize("optimize", ["all", "none", "reference"])
def test_fast_path_equals_naive(tmp_path, builder, optimize):
    model, data = _setup(tmp_path, builder)
    # "reference": ONNX's own evaluator, in memory, no ONNX Runtime at all (tests/fakes.py)
    backend = ReferenceBackend() if optimize == "reference" else CountingBackend(optimize)
    doc = analyze(model, data, backend, tmp_path / "out", Settings(batch=4)).to_json()
    ranges = Ranges.from_json(json.loads(next((tmp_path / "out" / ".trt-mpq").glob("*/ranges.json")).read_text()))
    from trt_mpq.network.units import find_units

    units = find_units(model.proto).units
    pairs = [(u, p) for u in units for p in (Precision.INT8, Precision.FP16)]
    naive = measure_naive(model, units, pairs, ranges, backend, data, batch=4)
    for u in doc["units"]:
        for p, fast in u["results"].items():
            slow = naive[(u["name"], p)]
            for metric, value in fast.items():
                if isinstance(value, float) and optimize == "none":  # bit for bit, the choice's runs reused
                    assert value == slow[metric], (u["name"], p, metric)
                elif isinstance(value, float):
                    assert value == pytest.approx(slow[metric], rel=1e-5, abs=1e-12), (u["name"], p, metric)
    assert all(u["results"]["int8"]["nmse"] > u["results"]["fp16"]["nmse"] for u in doc["units"])
    assert naive == measure_naive(model, units, pairs, ranges, backend, data, batch=4, reference_once=True)


def test_document_schema_and_cleanup(tmp_path):
    model, data = _setup(tmp_path, builders.conv_bn_relu_residual)
    doc = analyze(model, data, CountingBackend(), tmp_path / "out").to_json()
    on_disk = json.loads((tmp_path / "out" / "sensitivity.json").read_text())
    assert on_disk == doc
    assert doc["schema"] == SCHEMA and doc["precisions"] == ["int8", "fp16"]
    assert doc["model"]["sha256"] == model.sha256
    assert doc["calibration"]["source"] == "generated" and doc["calibration"]["samples"] == 10
    u = doc["units"][0]
    assert set(u) >= {"name", "nodes", "op_types", "results"}
    assert set(u["results"]["int8"]) >= {"cosine", "sqnr_db", "nmse", "max_abs", "top1_agreement"}
    assert not list((tmp_path / "out" / ".trt-mpq").glob("*/activations"))  # the big cache is removed


def test_killed_run_resumes_without_recomputing(tmp_path):
    model, data = _setup(tmp_path, builders.conv_bn_relu_residual)
    out = tmp_path / "out"
    first = CountingBackend()
    with pytest.raises(KeyboardInterrupt):
        analyze(model, data, first, out, progress=StopAfter(4))
    assert not (out / "sensitivity.json").exists()  # nothing half-written
    journal = next(out.glob(".trt-mpq/*/results.jsonl"))
    assert len(journal.read_text().splitlines()) == 4
    with open(journal, "a") as f:
        f.write('{"unit": "conv2", "precis')  # a torn line from a kill mid-write
    second = CountingBackend()
    doc = analyze(model, data, second, out).to_json()
    assert second.compiled == 8 - 4  # 4 units x 2 precisions: only the unfinished pairs; no FP32 pass again
    third = CountingBackend()
    again = analyze(model, data, third, out).to_json()
    assert third.compiled == 0
    assert again["units"] == doc["units"]


def test_changed_settings_do_not_reuse_results(tmp_path):
    model, data = _setup(tmp_path, builders.conv_bn_relu_residual)
    analyze(model, data, CountingBackend(), tmp_path / "out", Settings(calibrator="max"))
    other = CountingBackend()
    analyze(model, data, other, tmp_path / "out", Settings(calibrator="percentile"))
    assert other.compiled == 1 + 8  # the FP32 pass, then 4 units x 2 precisions


def test_fp16_overflow_is_flagged(tmp_path):
    model, data = _setup(tmp_path, builders.fp16_overflow)
    doc = analyze(model, data, CountingBackend(), tmp_path / "out").to_json()
    fp16 = doc["units"][0]["results"]["fp16"]
    assert "w" in fp16["fp16_overflow"] and "y" in fp16["fp16_overflow"]
    assert fp16["nonfinite"] > 0 and fp16["nmse"] is None  # the overflow really produced Inf
    assert "fp16_overflow" not in doc["units"][0]["results"]["int8"]


def test_model_without_units_reports_skips(tmp_path):
    path = builders.save(builders.if_subgraph(), tmp_path)
    model = load_model(path)
    doc = analyze(model, generated_dataset(model, samples=2), CountingBackend(), tmp_path / "out").to_json()
    assert doc["units"] == [] and len(doc["skipped"]) == 2


def test_journal_ignores_garbage(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append("a", "int8", {"nmse": 0.5})
    (tmp_path / "j.jsonl").open("a").write("not json\n{\"unit\": 1}\n")
    assert j.load() == {("a", "int8"): {"nmse": 0.5}}


def test_emulated_int8_gemm_matches_hand_computed_quantization(tmp_path):
    """The backend's default setting computes exactly Q/DQ arithmetic: dq(q(x)) @ dq(q(W))^T."""
    from trt_mpq.network.units import find_units
    from trt_mpq.precision import Plan
    from trt_mpq.quant.lower import lower

    m = builders.fp16_overflow()
    units = find_units(m).units
    low = lower(m, units, Plan.of({"big": "int8"}), Ranges("max", {"x": 2.0}, {}))
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    w = np.asarray(__import__("onnx").numpy_helper.to_array(m.graph.initializer[0]))
    sx = np.float32(2.0 / 127)
    xq = np.clip(np.round(x / sx), -128, 127) * sx
    sw = (np.abs(w).max(axis=1) / 127).astype(np.float32)
    wq = np.clip(np.round(w / sw[:, None]), -128, 127) * sw[:, None]
    expected = xq @ wq.T
    for optimize in ("all", "none"):
        got = CountingBackend(optimize).compile(low).run({"x": x})["y"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-2)


def _outlier_data(tmp_path, model, scale=1.0):
    from trt_mpq.data.datasets import load_dataset

    x = np.random.default_rng(5).standard_normal((24, 3, 8, 8)).astype(np.float32)
    x[0, 0, 0, 0], x[7, 1, 3, 3] = 40.0 * scale, -35.0 * scale  # two outliers stretch the max range
    np.savez(tmp_path / "calib.npz", **{model.inputs[0].name: x})
    return load_dataset(model, tmp_path / "calib.npz")


def test_auto_calibrator_chooses_on_the_readers_outputs_and_beats_max(tmp_path):
    """An input channel the conv all but ignores holds outliers: max spends INT8's levels on them, and so
    would any threshold chosen on the tensor alone (MSE keeps the outliers). Auto tries every method's
    threshold with the unit that reads the tensor lowered, sees at the outputs that the outliers do not
    matter, and clips them."""
    from trt_mpq.data.datasets import load_dataset

    model = load_model(builders.save(builders.quiet_outlier_channel(), tmp_path))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((24, 2, 8, 8)).astype(np.float32)
    spikes = rng.random((24, 8, 8)) < 0.01
    x[:, 1][spikes] = 300.0 * np.sign(rng.standard_normal(int(spikes.sum())))
    np.savez(tmp_path / "calib.npz", x=x)
    data = load_dataset(model, tmp_path / "calib.npz")
    auto = analyze(model, data, CountingBackend(), tmp_path / "auto", Settings(calibrator="auto", batch=4))
    plain = analyze(model, data, CountingBackend(), tmp_path / "max", Settings(calibrator="max", batch=4))
    ranges = Ranges.from_json(json.loads((tmp_path / "auto" / "ranges.json").read_text()))
    first = auto.units[0].results[Precision.INT8]
    assert first.thresholds == {"x": ranges.methods["x"]} and ranges.methods["x"] not in ("max", "mse")
    assert ranges.amax["x"] < 0.1 * ranges.absmax["x"]
    assert first.nmse < 0.1 * plain.units[0].results[Precision.INT8].nmse  # and it pays end to end
    for u in auto.units:  # ranges.json holds exactly the thresholds each unit was measured with
        for tensor, method in u.results[Precision.INT8].thresholds.items():
            assert ranges.methods[tensor] == method and ranges.amax[tensor] == ranges.candidates[tensor][method]


@pytest.mark.parametrize("builder", [builders.conv_bn_relu_residual, builders.norm_fanout, builders.heavy_tailed])
def test_measurements_do_not_depend_on_their_order(tmp_path, builder):
    """Each (unit, precision) is a pure function of data: serial, reversed and shuffled orders give the same
    sensitivity.json and ranges.json (apart from the elapsed time), shared tensors one threshold."""
    import random

    model, _ = _setup(tmp_path, builder)
    from trt_mpq.data.datasets import generated_dataset

    data = generated_dataset(model, samples=12, seed=4)
    settings = Settings(calibrator="auto", batch=4, weight_scales="mse", bias_correction=True)
    orders = {"serial": None, "reversed": lambda us: us[::-1],
              "shuffled": lambda us: random.Random(7).sample(us, len(us))}
    docs, ranges = {}, {}
    for name, order in orders.items():
        doc = analyze(model, data, CountingBackend(), tmp_path / name, settings, order=order).to_json()
        doc.pop("elapsed_s", None)
        docs[name] = doc
        ranges[name] = (tmp_path / name / "ranges.json").read_text()
    assert docs["serial"] == docs["reversed"] == docs["shuffled"]
    assert ranges["serial"] == ranges["reversed"] == ranges["shuffled"]
    by_tensor = {}
    for u in docs["serial"]["units"]:
        for t, m in u["results"].get("int8", {}).get("thresholds", {}).items():
            by_tensor.setdefault(t, set()).add(m)
    assert by_tensor and all(len(ms) == 1 for ms in by_tensor.values())


def test_an_interrupted_auto_analysis_resumes_with_the_thresholds_it_had_chosen(tmp_path):
    model, _ = _setup(tmp_path, builders.conv_bn_relu_residual)
    data = _outlier_data(tmp_path, model)
    settings = Settings(calibrator="auto", batch=4)
    whole = analyze(model, data, CountingBackend(), tmp_path / "whole", settings).to_json()
    with pytest.raises(KeyboardInterrupt):
        analyze(model, data, CountingBackend(), tmp_path / "cut", settings, progress=StopAfter(5))
    resumed = analyze(model, data, CountingBackend(), tmp_path / "cut", settings).to_json()
    assert resumed["units"] == whole["units"]  # the same thresholds, so the same INT8 results
    ranges = [json.loads((tmp_path / d / "ranges.json").read_text()) for d in ("whole", "cut")]
    assert ranges[0]["amax"] == ranges[1]["amax"] and ranges[0]["methods"] == ranges[1]["methods"]


def test_auto_chooses_fp8_thresholds_too_kept_apart_from_int8(tmp_path):
    """Auto tries the same candidate thresholds for FP8 as for INT8 on the readers' outputs, and ranges.json
    holds the FP8 choice apart (its floating spacing favours other thresholds than INT8's)."""
    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    model = load_model(path, opset=Precision.FP8.opset)
    data = _outlier_data(tmp_path, model, scale=100.0)  # every method's candidate differs from max
    settings = Settings(precisions=(Precision.INT8, Precision.FP8), calibrator="auto", batch=4)
    analysis = analyze(model, data, CountingBackend(), tmp_path / "auto", settings)
    fp8 = [u.results[Precision.FP8] for u in analysis.units if Precision.FP8 in u.results]
    assert len(fp8) == 3 and all(r.thresholds for r in fp8)
    ranges = Ranges.from_json(json.loads((tmp_path / "auto" / "ranges.json").read_text()))
    first = analysis.units[0].results[Precision.FP8]
    (tensor, method), = first.thresholds.items()
    assert ranges.fp8_amax[tensor] == ranges.candidates[tensor][method] and ranges.fp8_methods[tensor] == method
    assert ranges.fp8_scale(tensor) == pytest.approx(ranges.candidates[tensor][method] / 448)


def test_rounding_batches_take_a_spread_quarter_of_16_to_32_samples():
    from trt_mpq.measure.sensitivity import rounding_batches

    assert rounding_batches([8] * 9, "auto") == [0, 8]  # a quarter of 9 batches, rounded: 2, 16 samples
    assert rounding_batches([8] * 5, "auto") == [0, 4]  # a quarter is 1 batch: the floor asks for 16 samples
    assert rounding_batches([8] * 32, "auto") == [0, 10, 21, 31]  # a quarter of 256 is 64: at most 32 taken
    assert rounding_batches([8, 8], "auto") == [0, 1]  # 16 samples: all of them
    assert rounding_batches([8] * 9, "all") == list(range(9))
    assert rounding_batches([8] * 9, 20) == [0, 4, 8]
    assert rounding_batches([8] * 9, 100) == list(range(9))
    assert rounding_batches([8, 8], "auto", floor=8) == [0]  # a dense prediction: 8 samples are enough
    assert rounding_batches([8] * 13, "auto", floor=8) == [0, 6, 12]  # a quarter is more than the floor


def test_the_floor_is_8_samples_only_for_dense_outputs(tmp_path):
    from trt_mpq.measure.sensitivity import DENSE_OUTPUTS, float_floor
    from trt_mpq.network.model import load_model

    def floor(m, name, shapes=None):
        return float_floor(load_model(builders.save(m, tmp_path, name), shapes))

    assert floor(builders.conv_bn_relu_residual(), "small.onnx") == 16  # logits [N, 5]
    relu = [builders.helper.make_node("Relu", ["x"], ["y"])]
    dense = builders.model(relu, [builders.fvi("x", ["N", 1, 400, 400])], [builders.fvi("y", ["N", 1, 400, 400])])
    assert 400 * 400 >= DENSE_OUTPUTS and floor(dense, "dense.onnx") == 8
    dynamic = builders.model(relu, [builders.fvi("x", ["N", 1, "H", "W"])], [builders.fvi("y", ["N", 1, "H", "W"])])
    assert floor(dynamic, "dynamic.onnx") == 16  # size unknown: the safe floor
    assert floor(dynamic, "fixed.onnx", {"x": (1, 1, 400, 400)}) == 8  # known once --shape fixes it


def test_fp16_on_fewer_samples_is_the_measurement_on_those_samples_and_says_so(tmp_path):
    from trt_mpq.data.datasets import load_dataset
    from trt_mpq.data.views import spread_batches
    from trt_mpq.measure.sensitivity import rounding_batches

    model, data = _setup(tmp_path, builders.conv_bn_relu_residual, samples=40)
    settings = Settings(calibrator="max", batch=4)
    part = analyze(model, data, CountingBackend(), tmp_path / "auto", settings).to_json()
    full = analyze(model, data, CountingBackend(), tmp_path / "all",
                   Settings(calibrator="max", batch=4, float_samples="all")).to_json()
    assert part["calibration"]["float_samples"] == 16 and "float_samples" not in full["calibration"]
    assert [u["results"]["int8"] for u in part["units"]] == [u["results"]["int8"] for u in full["units"]]
    assert [u["results"]["fp16"] for u in part["units"]] != [u["results"]["fp16"] for u in full["units"]]
    # the subset's FP16 figures are exactly an analysis of those 16 samples alone: the analysis's batches (each
    # of samples from all over the data) saved in the order that the same spreading turns back into them
    spread = spread_batches(data, 4)
    chosen = [spread.take(*spread.spans(4)[b]) for b in rounding_batches([4] * 10, "auto")]
    assert len(chosen) == 4
    arrays = {k: np.stack([c[k] for c in chosen]) for k in chosen[0]}  # (batch, sample in it, ...)
    np.savez(tmp_path / "subset.npz", **{k: a.swapaxes(0, 1).reshape(16, *a.shape[2:]) for k, a in arrays.items()})
    alone = analyze(model, load_dataset(model, tmp_path / "subset.npz"), CountingBackend(), tmp_path / "alone",
                    settings).to_json()
    assert [u["results"]["fp16"] for u in part["units"]] == [u["results"]["fp16"] for u in alone["units"]]


def test_the_threshold_choices_runs_are_the_measurement_of_a_single_input_unit(tmp_path):
    # one batch of data: the choice runs every candidate of conv1's input on it, so conv1's INT8 measurement
    # at the chosen threshold is already made; it is not compiled or run again, and equals the naive path's
    model, data = _setup(tmp_path, builders.conv_bn_relu_residual, samples=4)
    counting = CountingBackend("none")
    settings = Settings(precisions=(Precision.INT8,), calibrator="auto", batch=4)
    doc = analyze(model, data, counting, tmp_path / "out", settings).to_json()
    ranges = Ranges.from_json(json.loads((tmp_path / "out" / "ranges.json").read_text()))
    units = {u.name: u for u in find_units(model.proto).units}
    int8 = [u for u in units.values() if Precision.INT8 in u.allowed]
    naive = measure_naive(model, list(units.values()), [(u, Precision.INT8) for u in int8], ranges,
                          CountingBackend("none"), data, 4)
    assert {u["name"]: u["results"]["int8"]["nmse"] for u in doc["units"] if "int8" in u["results"]} == \
        {n: r["nmse"] for (n, _), r in naive.items()}
    tried = [t for t in dict.fromkeys(t for u in int8 for t in u.activations) if len(ranges.options([t])) > 1]
    first = {t: next(u for u in int8 if t in u.activations) for t in tried}
    single = [u for u in int8 if len(u.activations) == 1 and first.get(u.activations[0]) is u]
    assert single  # units that decide their one input's threshold alone (conv1 reads x alone)
    trials = sum(len(ranges.options([t])) for t in tried)
    # compiled: the FP32 probe, every trial, and one measurement per unit its trials did not measure
    assert counting.compiled == 1 + trials + len(int8) - len(single)
