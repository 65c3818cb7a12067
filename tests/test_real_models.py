"""Integration on the real, trained models of ../shared/models (skipped when that folder is absent)."""

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from trt_mpq import AnalyzeOptions
from trt_mpq import analyze as analyze_model
from trt_mpq.backends import open_backend
from trt_mpq.data.datasets import generated_dataset, load_dataset
from trt_mpq.data.images import load_preprocess
from trt_mpq.errors import DataError
from trt_mpq.measure.sensitivity import measure_naive
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan
from trt_mpq.quant.lower import lower, trt_rule_violations
from trt_mpq.quant.ranges import Ranges

pytestmark = pytest.mark.slow
MNV2_PRE = "examples/preprocess/mobilenetv2_imagenet.json"


def _session(m):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m if isinstance(m, str) else m.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def test_mobilenetv2_units_and_lowering(shared_models):
    model = load_model(shared_models / "mobilenetv2_imagenet.onnx")
    table = find_units(model.proto)
    assert Counter(u.main_op for u in table.units if u.kind == "gemm") == {"Conv": 52, "Gemm": 1}
    head = [u for u in table.units if u.kind != "gemm"]  # global average pooling, written as ReduceMean
    assert [(u.kind, u.op_types) for u in head] == [("region", ("ReduceMean",))]
    assert sum("Add" in u.op_types for u in table.units) == 10  # every residual Add fused into a projection conv
    assert sum(len(u.activations) == 2 for u in table.units) == 10  # ... with its skip input quantized
    assert table.skipped == []
    ranges = Ranges("max", {a: 6.0 for u in table.units for a in u.activations}, {})
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ref = _session(model.proto).run(None, {"input": x})[0]
    for p in ("int8", "fp16"):
        low = lower(model.proto, table.units, Plan.of({u.name: p for u in table.units if p in u.allowed}), ranges)
        onnx.checker.check_model(low)
        assert trt_rule_violations(low) == []
        y = _session(low).run(None, {"input": x})[0]
        assert np.all(np.isfinite(y)) and y.shape == ref.shape
    ops = Counter(n.op_type for n in low.graph.node)
    # One Cast in per distinct unit input (a residual skip shares the Cast of the next block's first conv) and
    # one Cast back per unit output: 53 GEMM units and the pooling head.
    assert ops["Cast"] == 54 + 54


def test_mobilenetv2_analysis_on_photos(shared_models, tmp_path):
    opts = AnalyzeOptions(calib=str(shared_models / "photos" / "calib"), preprocess=MNV2_PRE, samples=8)
    doc = analyze_model(shared_models / "mobilenetv2_imagenet.onnx", tmp_path, opts).to_json()
    assert len(doc["units"]) == 54 and sum(u["kind"] == "gemm" for u in doc["units"]) == 53
    gemms = [u for u in doc["units"] if u["kind"] == "gemm"]
    int8 = np.array([u["results"]["int8"]["nmse"] for u in gemms])
    fp16 = np.array([u["results"]["fp16"]["nmse"] for u in gemms])
    (head,) = [u for u in doc["units"] if u["kind"] != "gemm"]
    assert set(head["results"]) == {"fp16"} and head["results"]["fp16"]["cosine"] > 0.9999
    assert np.all(np.isfinite(int8)) and np.all(np.isfinite(fp16)) and np.all(int8 > 0)
    assert int8.max() / int8.min() > 10  # sensitivities spread over at least an order of magnitude
    assert np.median(int8 / np.maximum(fp16, 1e-30)) > 100  # FP16 deltas far smaller than INT8 deltas
    assert all(0 <= u["results"]["int8"]["top1_agreement"] <= 1 for u in gemms)
    assert json.loads((tmp_path / "sensitivity.json").read_text())["calibration"]["kind"] == "images"


def test_mobilenetv2_fast_path_equals_naive_on_real_photos(shared_models, tmp_path):
    model = load_model(shared_models / "mobilenetv2_imagenet.onnx")
    data = load_dataset(model, shared_models / "photos" / "calib", load_preprocess(MNV2_PRE), limit=4)
    backend = open_backend().backend
    from trt_mpq.measure.sensitivity import Settings, analyze

    doc = analyze(model, data, backend, tmp_path, Settings(batch=2)).to_json()
    ranges = Ranges.from_json(json.loads(next(tmp_path.glob(".trt-mpq/*/ranges.json")).read_text()))
    table = find_units(model.proto)
    chosen = [table.units[i] for i in (0, 9, 30, 52, 53)]  # 53: the pooling head, FP16 only
    naive = measure_naive(model, table.units, [(u, p) for u in chosen for p in u.allowed if p in Settings().precisions],
                          ranges, backend, data, batch=2, reference_once=True)
    fast = {u["name"]: u["results"] for u in doc["units"]}
    for (name, p), slow in naive.items():
        for metric in ("cosine", "sqnr_db", "nmse", "max_abs", "top1_agreement"):
            want = slow[metric]
            assert fast[name][p][metric] == (None if want is None else pytest.approx(want, rel=1e-5)), (name, p)


def test_image_preprocessing_matches_the_manifest(shared_models):
    model = load_model(shared_models / "mobilenetv2_imagenet.onnx")
    data = load_dataset(model, shared_models / "photos" / "calib", load_preprocess(MNV2_PRE))
    assert data.num_samples == 72
    x = data.take(0, 4)["input"]
    assert x.shape == (4, 3, 224, 224) and x.dtype == np.float32
    assert -3 < x.mean() < 3 and 0.3 < x.std() < 3  # normalised pixels, not 0..255
    logits = _session(model.proto).run(None, {"input": x})[0]
    assert logits.shape == (4, 1000) and np.all(np.isfinite(logits))


def test_ppocr_normalisation_keeps_outputs(shared_models):
    path = shared_models / "ppocrv4_det.onnx"
    model = load_model(path, {"x": (1, 3, 64, 64)})
    assert any("342 Constant" in n for n in model.notes) and any("opset 12" in n for n in model.notes)
    assert not any(n.op_type == "Constant" for n in model.proto.graph.node)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    before = _session(str(path)).run(None, {"x": x})[0]
    after = _session(model.proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    table = find_units(model.proto)
    assert Counter(u.main_op for u in table.units if u.kind == "gemm") == {"Conv": 62, "ConvTranspose": 2}
    # SE blocks' pooling, their gates and the neck's upsampling are units too (every float op has a precision)
    assert Counter(u.kind for u in table.units if u.kind != "gemm") == {"pool": 10, "region": 10, "resize": 6}
    hswish = [u for u in table.units if {"Clip", "Div"} <= set(u.op_types)]
    assert len(hswish) >= 20  # HardSwish written as x*clip(x+3,0,6)/6 stays inside its unit


def test_ppocr_generated_data_analysis_flags_fp16_bn(shared_models, tmp_path):
    opts = AnalyzeOptions(shapes=("x:1x3x64x64",), samples=2, batch=2)
    doc = analyze_model(shared_models / "ppocrv4_det.onnx", tmp_path, opts).to_json()
    assert len(doc["units"]) == 90 and doc["calibration"]["kind"] == "generated"
    for u in doc["units"]:  # INT8 where TensorRT runs it (GEMMs, pooling, a lone Add/Mul), FP16 everywhere
        int8 = u["kind"] in ("gemm", "pool") or u["op_types"] in (["Add"], ["Mul"])
        assert set(u["results"]) == ({"int8", "fp16"} if int8 else {"fp16"})
    assert any(u["kind"] == "region" and "int8" in u["results"] for u in doc["units"])  # SE gates / adds
    flagged = [u["name"] for u in doc["units"] if u["results"]["fp16"].get("fp16_overflow")]
    assert "p2o.Conv.61" in flagged  # its BatchNormalization variance (4.8e7) does not fit FP16


def test_silero_finishes_and_reports_skipped_branches(shared_models, tmp_path):
    model = load_model(shared_models / "silero_vad_ifless.onnx", {"input": (1, 576)})
    data = generated_dataset(model, samples=2)
    assert set(data.take(0, 1)["sr"].ravel()) <= {0, 1} and data.take(0, 1)["sr"].shape == ()
    doc = analyze_model(shared_models / "silero_vad_ifless.onnx", tmp_path,
                        AnalyzeOptions(shapes=("input:1x576",), samples=2)).to_json()
    assert doc["units"] == []
    assert len(doc["skipped"]) == 16 and all("If" in s["reason"] for s in doc["skipped"])
    # told the sample rate the deployment feeds, the model is specialised and its layers become units
    fixed = AnalyzeOptions(shapes=("input:1x576",), fixed=("sr=16000",), samples=2)
    doc = analyze_model(shared_models / "silero_vad_ifless.onnx", tmp_path / "fixed", fixed).to_json()
    assert len(doc["units"]) == 13 and not doc["skipped"] and doc["model"]["fixed"] == {"sr": 16000}
    assert sum(u["kind"] == "gemm" for u in doc["units"]) == 8
    spec = load_model(shared_models / "silero_vad_ifless.onnx", {"input": (1, 576)}, {"sr": 16000})
    feeds = {"input": np.random.default_rng(1).standard_normal((1, 576)).astype(np.float32) * 0.1,
             "state": np.zeros((2, 1, 128), np.float32)}
    want = _session(str(shared_models / "silero_vad_ifless.onnx")).run(None, {**feeds, "sr": np.array(16000)})
    got = _session(spec.proto).run(None, feeds)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_digits_npz_with_other_names_says_which(shared_models):
    model = load_model(shared_models / "digits_cnn.onnx")
    with pytest.raises(DataError, match="no array for input 'input'.*x_train"):
        load_dataset(model, shared_models / "digits.npz")


def test_digits_plan_meets_accuracy_budget(shared_models, tmp_path):
    from trt_mpq import PlanOptions
    from trt_mpq import plan as plan_from_analysis
    from trt_mpq.artifacts import Budget

    npz = shared_models / "digits.npz"  # the issue's own split, picked from the one file, default flags
    analyze_model(shared_models / "digits_cnn.onnx", tmp_path / "run", AnalyzeOptions(calib=f"{npz}:input=x_train"))
    report = plan_from_analysis(tmp_path / "run", PlanOptions(f"{npz}:input=x_test,labels=y_test",
                                metric="accuracy", budget=Budget(max_drop=0.005))).to_json()
    assert report["result"]["fp32_score"] == pytest.approx(0.9956, abs=1e-4)  # the MANIFEST's 99.56 %
    assert report["result"]["drop"] <= 0.005
    assert report["result"]["units"]["int8"] >= 3  # most of the 5 weighted units


def test_mobilenetv2_plan_keeps_agreement_on_held_out_photos(shared_models, tmp_path):
    from trt_mpq import PlanOptions
    from trt_mpq import plan as plan_from_analysis
    from trt_mpq.artifacts import Budget

    # 32 samples: with 24 the fastest mixes that pass on the search part sit on the budget's edge, and the
    # confirm check's replicas may reject them all (a right answer, all-FP16, but not the mix this test is for)
    analyze_model(shared_models / "mobilenetv2_imagenet.onnx", tmp_path,
                  AnalyzeOptions(calib=str(shared_models / "photos" / "calib"), preprocess=MNV2_PRE, samples=32))
    report = plan_from_analysis(tmp_path, PlanOptions(str(shared_models / "photos" / "eval"), MNV2_PRE,
                                metric="agreement", budget=Budget(max_drop=0.02))).to_json()
    res = report["result"]
    assert res["score"] >= 0.98 and report["evaluation"]["samples"] == 135
    assert res["units"]["int8"] > 0 and res["units"]["fp16"] > 0  # a real mix
    lat = report["latency"]
    assert lat["mix_ms"] <= lat["all_ms"]["fp16"]  # never slower than all-FP16 under the cost model
    assert all(step["passed"] == (1.0 - step["score"] <= 0.02 + 1e-12) for step in report["verification"])


def test_mobilenetv2_quantized_by_quantize_static_runs_and_is_compared(shared_models, tmp_path, capsys):
    """The Q/DQ file a user gets from ONNX Runtime's quantize_static (photos as calibration): the float graph
    is recovered, its scales are candidates, and the plan is set beside the file as shipped and all-FP16."""
    import builders
    from trt_mpq.cli import main

    model = load_model(shared_models / "mobilenetv2_imagenet.onnx")
    photos = load_dataset(model, str(shared_models / "photos" / "calib"), load_preprocess(MNV2_PRE))
    qdq = builders.quantize_static_qdq(shared_models / "mobilenetv2_imagenet.onnx",
                                       photos.take(0, photos.num_samples)["input"], tmp_path / "mnv2_qdq.onnx")
    evals = load_dataset(model, str(shared_models / "photos" / "eval"), load_preprocess(MNV2_PRE))
    np.savez(tmp_path / "eval.npz", **evals.take(0, 48))
    run = tmp_path / "run"
    assert main(["run", str(qdq), "--out", str(run), "--calib", str(shared_models / "photos" / "calib"),
                 "--preprocess", MNV2_PRE, "--samples", "24", "--eval", str(tmp_path / "eval.npz"), "--metric",
                 "agreement", "--max-drop", "0.05", "--quiet"]) == 0
    report = json.loads((run / "report.json").read_text())
    shipped, chosen, fp16 = report["compared"]
    assert shipped["name"] == "as shipped" and shipped["what"].startswith("53 INT8 units")
    assert shipped["ms"] == pytest.approx(report["latency"]["all_ms"]["int8"], rel=1e-3)  # every GEMM in INT8
    assert chosen["score"] >= 1 - 0.05 - 1e-9 and chosen["ms"] <= fp16["ms"] + 1e-9
    assert 0 < shipped["score"] <= 1 and fp16["score"] >= 0.9
    capsys.readouterr()
