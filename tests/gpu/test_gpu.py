"""On an NVIDIA GPU with TensorRT: engines of the real models against ONNX Runtime, per-unit latencies from
TensorRT's profiler, realised precisions against the plan, and the whole 'trt-mpq run --backend tensorrt'.
Skipped with a reason elsewhere (see conftest.py); run them with scripts/gpu_selftest.sh."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trt_mpq import AnalyzeOptions
from trt_mpq import analyze as analyze_model
from trt_mpq.backends import BackendContext, open_backend
from trt_mpq.backends.trt_layers import FUSED, attribute, realized
from trt_mpq.cli import main
from trt_mpq.commands.opened import read_analysis as load_analysis
from trt_mpq.measure.output_delta import OutputDelta
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan
from trt_mpq.precision import Precision as P
from trt_mpq.quant.lower import lower

MNV2_PRE = '{"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}'


@pytest.fixture(params=["digits", "mobilenetv2"])
def case(request, shared_models, tmp_path):
    """(model, units, ranges, feeds): ranges from a short ONNX Runtime analysis of real data."""
    if request.param == "digits":
        path, calib, pre = shared_models / "digits_cnn.onnx", f"{shared_models / 'digits.npz'}:input=x_train", None
    else:
        pre = tmp_path / "pre.json"
        pre.write_text(MNV2_PRE)
        path, calib, pre = shared_models / "mobilenetv2_imagenet.onnx", str(shared_models / "photos/calib"), str(pre)
    analyze_model(path, tmp_path / "a", AnalyzeOptions(calib=calib, preprocess=pre, samples=16, backend="onnxruntime",
                                                       precisions="int8"))
    _, ranges = load_analysis(tmp_path / "a")
    model = load_model(path)
    units = find_units(model.proto).units
    from trt_mpq.commands.analyze import calibration_data

    feeds = calibration_data(model, AnalyzeOptions(calib=calib, preprocess=pre, samples=8)).take(0, 8)
    return model, units, ranges, feeds


@pytest.mark.parametrize("precision, min_cosine", [(P.FP32, 0.99999), (P.FP16, 0.999), (P.INT8, 0.99)])
def test_engine_matches_onnxruntime(case, precision, min_cosine):
    model, units, ranges, feeds = case
    lowered = lower(model.proto, units, Plan.of({u.name: precision for u in units}), ranges)
    with open_backend("onnxruntime").backend.compile(lowered) as session:
        ort = session.run(feeds)
    with open_backend("tensorrt", context=BackendContext(max_batch=8)).backend.compile(lowered) as session:
        trt = session.run(feeds)
    delta = OutputDelta()
    delta.update(ort, trt, len(next(iter(feeds.values()))))
    for name, ref in ort.items():
        assert trt[name].shape == ref.shape and np.all(np.isfinite(trt[name]))
    assert delta.result().cosine >= min_cosine, precision


def test_profile_gives_positive_latency_for_every_unit(case):
    model, units, ranges, feeds = case
    backend = open_backend("tensorrt").backend
    order = [n.name for n in model.proto.graph.node]
    for p in P:
        uniform = Plan.of({u.name: p for u in units if p in u.allowed or p is P.FP32})
        measured = backend.profile(lower(model.proto, units, uniform, ranges), feeds)
        # TensorRT reports zero-time layers (a reshape, a no-op reformat): only units must take time
        assert measured.ms and all(v >= 0 for v in measured.ms.values()) and sum(measured.ms.values()) > 0
        got = attribute({p: measured.ms}, {p: measured.nodes}, units, order)
        assert {u.name for u in units} == {u for u, _ in got.ms}, p
        assert all(v > 0 for v in got.ms.values())


def test_realised_precisions_match_a_uniform_plan(case):
    from trt_mpq.backends.tensorrt import BuildSettings

    model, units, ranges, feeds = case
    backend = open_backend("tensorrt").backend
    for p in (P.INT8, P.FP16):
        plan = Plan.of({u.name: p for u in units if p in u.allowed})
        lowered = lower(model.proto, units, plan, ranges)
        engine = backend.build(lowered, BuildSettings(3, None, True, 8))
        got = realized(backend.inspect(engine), units)
        assert all(got[u] in (q, FUSED) for u, q in plan.items()), (p, got)  # fused: not a unit's own type


def test_full_run_on_the_gpu(shared_models, tmp_path):
    npz = shared_models / "digits.npz"
    out = tmp_path / "run"
    code = main(["run", str(shared_models / "digits_cnn.onnx"), "--out", str(out), "--calib", f"{npz}:input=x_train",
                 "--eval", f"{npz}:input=x_test,labels=y_test", "--metric", "accuracy", "--max-drop", "0.005",
                 "--backend", "tensorrt", "--quiet"])
    assert code in (0, 3)  # 3: an engine realised some unit in another precision (the report says which)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["backend"].startswith("tensorrt") and plan["result"]["drop"] <= 0.005
    assert (out / "model.engine").stat().st_size > 0 and (out / "timing.cache").is_file()
    report = json.loads((out / "report.json").read_text())
    realized = json.loads((out / "build.json").read_text())
    assert report["latency"]["kind"].startswith("measured") and realized["units"]
    assert code == 0, [r for r in realized["units"] if not r["matches"]]


def test_downstream_engines_agree_with_whole_model_engines(shared_models, tmp_path):
    from trt_mpq.commands.analyze import calibration_data
    from trt_mpq.measure.sensitivity import measure_naive

    npz = f"{shared_models / 'digits.npz'}:input=x_train"
    opts = AnalyzeOptions(calib=npz, samples=64, backend="tensorrt")
    doc = analyze_model(shared_models / "digits_cnn.onnx", tmp_path, opts).to_json()
    _, ranges = load_analysis(tmp_path)
    model = load_model(shared_models / "digits_cnn.onnx")
    units = find_units(model.proto).units
    pairs = [(u, p) for u in units for p in (P.INT8, P.FP16)]
    naive = measure_naive(model, units, pairs, ranges, open_backend("tensorrt").backend, calibration_data(model, opts),
                          reference_once=True)
    for u in doc["units"]:
        for p, fast in u["results"].items():
            slow = naive[(u["name"], p)]
            assert fast["nmse"] == pytest.approx(slow["nmse"], rel=0.1, abs=1e-9), (u["name"], p)
