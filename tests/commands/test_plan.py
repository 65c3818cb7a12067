"""The plan command (commands/plan.py) and its command line: artifacts, bad inputs, options."""

import json

import numpy as np

import builders
from trt_mpq import PlanOptions
from trt_mpq import plan as plan_from_analysis
from trt_mpq.artifacts import Budget
from trt_mpq.cli import main
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision as P


def _plan_cli(capsys, *argv):
    code = main(["plan", *map(str, argv)])
    return code, capsys.readouterr()


def test_plan_writes_verified_artifacts(analysed):
    report = plan_from_analysis(analysed / "run", PlanOptions(eval=str(analysed / "eval_labels.npz"),
                                metric="accuracy", budget=Budget(max_drop=0.05), latency_batch=64)).to_json()
    run = analysed / "run"
    plan = json.loads((run / "plan.json").read_text())
    assert plan["result"]["drop"] <= 0.05 and plan["result"]["fp32_score"] == 1.0
    assert [u["name"] for u in plan["units"]] == ["conv1", "conv2", "gap", "fc"] and plan["units"][0]["nodes"]
    assert plan["verification"] and report["latency"]["kind"] == "estimated"
    import onnx

    m = onnx.load(str(run / "model.mixed.onnx"))
    lowered = {u["name"]: u["precision"] for u in plan["units"]}
    assert sum(n.op_type == "QuantizeLinear" for n in m.graph.node) >= (1 if "int8" in lowered.values() else 0)
    text = (run / "trtexec.txt").read_text()
    assert "trtexec --onnx=model.mixed.onnx" in text
    assert plan["deployment"]["batch"] == 64 and plan["deployment"]["target"] == "NVIDIA T4"  # what build builds for
    # a dynamic batch: trtexec builds batch 1 unless told, so the lines carry the deployment batch
    assert "--minShapes=x:1x3x8x8 --optShapes=x:64x3x8x8 --maxShapes=x:64x3x8x8" in text
    weak = text[text.index("weakly typed"):]
    assert "--onnx=model.weak.onnx" in weak and "--precisionConstraints=obey" in weak
    pinned = [f"{n}:{u['precision']}" for u in plan["units"] if u["precision"] != "int8" for n in u["nodes"]]
    assert pinned  # FP32 units are pinned too: the builder must not lower them
    assert f"--layerPrecisions={','.join(pinned)}" in weak and f"--layerOutputTypes={','.join(pinned)}" in weak
    w = onnx.load(str(run / "model.weak.onnx"))  # Q/DQ of the INT8 units stay, FP16 Casts do not
    assert not [n for n in w.graph.node if n.op_type == "Cast"]
    assert sum(n.op_type == "QuantizeLinear" for n in w.graph.node) == sum(
        n.op_type == "QuantizeLinear" for n in m.graph.node)


def test_trtexec_lines_pin_fp16_and_fp32_units_and_leave_int8_to_its_qdq():
    from trt_mpq.commands.trtexec import trtexec_text
    from trt_mpq.network.model import TensorSpec
    from trt_mpq.precision import Plan

    units = find_units(builders.conv_bn_relu_residual()).units
    plan = Plan.of({"conv1": P.INT8, "conv2": P.FP16})
    x = TensorSpec("x", np.dtype(np.float32), ("N", 3, 8, 8))
    text = trtexec_text("m.onnx", "w.onnx", [x], {"x": np.zeros((1, 3, 8, 8), np.float32)}, 8, units, plan)
    pins = "conv2:fp16,relu2:fp16,add:fp16,relu3:fp16,gap:fp32,fc:fp32"  # conv1 (INT8): its Q/DQ decide
    assert f"--layerPrecisions={pins} " in text and f"--layerOutputTypes={pins} " in text
    assert text.count("--optShapes=x:8x3x8x8") == 2 and "--fp16 --int8" in text
    everything_int8 = Plan.of({u.name: P.INT8 for u in units})
    text = trtexec_text("m.onnx", "w.onnx", [x], {"x": np.zeros((1, 3, 8, 8), np.float32)}, 8, units, everything_int8)
    assert "--layerPrecisions" not in text and "--precisionConstraints=obey" in text  # no empty pin lists
    static = TensorSpec("x", np.dtype(np.float32), (1, 3, 8, 8))
    assert "Shapes=" not in trtexec_text("m.onnx", "w.onnx", [static], {"x": np.zeros((1, 3, 8, 8))}, 8, units,
                                         plan)


def test_plan_cli_bad_inputs(analysed, capsys):
    run = analysed / "run"
    cases = [
        (["--eval", analysed / "eval.npz", "--max-drop", "-1"], "zero or positive"),
        (["--eval", analysed / "calib.npz", "--max-drop", "0.01"], "calibration data"),
        (["--eval", analysed / "eval.npz", "--metric", "accuracy", "--max-drop", "0.01"], "labels"),
        (["--eval", analysed / "eval.npz", "--metric-fn", "metric_fns:broken", "--max-drop", "0.01"], "raised"),
        (["--eval", analysed / "eval.npz", "--metric-fn", "nope.nothing:fn", "--max-drop", "0.01"], "could not"),
        (["--eval", analysed / "eval.npz", "--metric-fn", "metric_fns:wrong_length", "--max-drop", "0.01",
          "--quiet"],
         "shape (3,)"),
        (["--eval", analysed / "eval.npz"], "give a budget"),
    ]
    for argv, words in cases:
        code, out = _plan_cli(capsys, run, *argv)
        lines = out.err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and words in lines[0], (argv, out.err)
    code, out = _plan_cli(capsys, analysed / "nowhere", "--eval", analysed / "eval.npz", "--max-drop", "0.1")
    assert code != 0 and "run 'trt-mpq analyze" in out.err


def test_plan_cli_custom_metric_and_summary(analysed, capsys):
    code, out = _plan_cli(capsys, analysed / "run", "--eval", analysed / "eval.npz", "--metric-fn",
                          "metric_fns:mean_max", "--max-drop", "0.5", "--relative", "--quiet")
    assert code == 0, out.err
    assert "units:" in out.out and "latency on NVIDIA T4 at batch 1 (estimated)" in out.out


def test_plan_with_pareto_writes_points(analysed):
    report = plan_from_analysis(analysed / "run", PlanOptions(eval=str(analysed / "eval.npz"), metric="agreement",
                                budget=Budget(max_drop=0.1), latency_batch=64, pareto=True)).to_json()
    points = report["pareto"]  # on this memory-bound toy, lowering never pays: the front can be one point
    assert points and points[0]["on_front"] and any(q["plan"] == {} for q in points)
    assert all(set(q["plan"].values()) <= {"int8", "fp16"} for q in points)
    assert "Pareto front" in (analysed / "run" / "report.html").read_text()


def test_summary_explains_an_all_fp32_plan(analysed, monkeypatch):
    # At batch 1 one toy unit can be lowered within the default resolution (3 us); with a finer one (the same
    # shift on every unit and precision, so no ranking changes) every lowering is a measurable loss.
    monkeypatch.setattr("trt_mpq.search.cost.KERNEL_US", 0.5)
    report = plan_from_analysis(analysed / "run", PlanOptions(eval=str(analysed / "eval.npz"), metric="agreement",
                                budget=Budget(max_drop=0.5), latency_batch=1)).to_json()
    assert report["result"]["units"]["fp32"] == 4  # the memory-bound toy: lowering never pays at batch 1
    assert "--latency-batch" in report["result"]["message"]


def test_plan_cli_replicas_and_confidence(analysed, capsys):
    code, out = _plan_cli(capsys, analysed / "run", "--eval", analysed / "eval.npz", "--max-drop", "0.5",
                          "--replicas", "0")
    assert code == 0 and "confirm samples" in out.out and "replicas" not in out.out.split("confirm samples")[1][:60]
    report = json.loads((analysed / "run" / "report.json").read_text())
    assert report["result"]["confirmation"]["replicas"] == 0
    code, out = _plan_cli(capsys, analysed / "run", "--eval", analysed / "eval.npz", "--max-drop", "0.01",
                          "--confidence", "0.9")
    assert code == 0 and "nothing will be lowered" in out.out + out.err  # 20 confirm samples cannot bound 1 %
    assert json.loads((analysed / "run" / "plan.json").read_text())["result"]["units"]["fp32"] == 4
    for bad, words in ((["--confidence", "1.5"], "between 0 and 1"), (["--replicas", "-1"], "zero or more")):
        code, out = _plan_cli(capsys, analysed / "run", "--eval", analysed / "eval.npz", "--max-drop", "0.1", *bad)
        assert code == 2 and words in out.err


def test_plan_takes_shapes_from_the_data_when_static_inference_cannot(tmp_path):
    """x [batch, seq, 4] with seq dynamic and no --shape: the cost model takes the shapes the FP32 pass saw."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import trt_mpq

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 6])], [w])
    path = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(16, 8, 4)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=rng.normal(size=(20, 8, 4)).astype(np.float32))
    trt_mpq.analyze(path, tmp_path / "run", trt_mpq.AnalyzeOptions(calib=str(tmp_path / "calib.npz")))
    ranges = json.loads((tmp_path / "run" / "ranges.json").read_text())
    assert ranges["shapes"]["x"] == [1, 8, 4] and ranges["shapes"]["y"] == [1, 8, 6]  # per sample, as run
    report = trt_mpq.plan(tmp_path / "run", trt_mpq.PlanOptions(eval=str(tmp_path / "eval.npz"), metric="cosine",
                                                               budget=Budget(max_drop=0.01)))
    assert report.latency.all_ms[P.FP32] > 0 and report.units[0].latency_ms[P.INT8] > 0
