import itertools
import json

import numpy as np
import pytest

import builders
from spaces import NOISE
from spaces import toy_space as _options
from trt_mpq import PlanOptions
from trt_mpq import plan as plan_from_analysis
from trt_mpq.artifacts import Budget
from trt_mpq.cli import main
from trt_mpq.errors import ConfigError
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision as P
from trt_mpq.search.cost import GPUS, cost_model
from trt_mpq.search.driver import search
from trt_mpq.search.milp import solve


def test_milp_matches_brute_force():
    opts = _options(NOISE)
    for budget in (0.0, 2e-6, 1e-4, 2e-4, 1e-2, 1.0):
        best = None
        for combo in itertools.product([P.FP32, P.FP16, P.INT8], repeat=3):
            plan = dict(zip(opts.units, combo, strict=True))
            if opts.predicted_noise(plan) <= budget + 1e-15:
                t = opts.seconds(plan)
                best = t if best is None or t < best else best
        got = solve(opts, noise_budget=budget)
        full = {u: got.get(u, P.FP32) for u in opts.units}
        assert opts.predicted_noise(full) <= budget + 1e-12
        assert opts.seconds(full) == pytest.approx(best, rel=1e-9)


def test_noise_far_below_solver_tolerance_is_respected():
    tiny = {k: v * 1e-4 for k, v in NOISE.items()}  # FP16-like noise of 1e-10..1e-6
    opts = _options(tiny)
    assert solve(opts, noise_budget=0.0) == {}
    plan = solve(opts, noise_budget=2e-10)
    assert opts.predicted_noise(plan) <= 2e-10


def test_latency_budget_minimises_noise_and_infeasible_is_none():
    opts = _options(NOISE)
    fastest = opts.seconds({u: P.INT8 for u in opts.units})
    plan = solve(opts, seconds_budget=fastest * 1.0000001, minimise="noise")
    assert opts.seconds({u: plan.get(u, P.FP32) for u in opts.units}) <= fastest * 1.0000001
    assert solve(opts, seconds_budget=fastest / 10) is None


def test_a_tie_never_hands_back_a_mix_slower_than_all_fp16():
    # INT8 a hair slower than FP16 (well within the 6 us resolution): smaller weights must not win over speed
    same = _options(NOISE, {P.FP32: 1e-3, P.FP16: 5e-4, P.INT8: 5e-4})
    borders = same.seconds(same.uniform(P.INT8)) - same.seconds(same.uniform(P.FP16))
    space = _options(NOISE, {P.FP32: 1e-3, P.FP16: 5e-4, P.INT8: 5e-4 + (2e-6 - borders) / 3})  # 2 us slower
    fp16 = space.seconds(space.uniform(P.FP16))
    chosen = solve(space, noise_budget=1.0)
    assert space.seconds(chosen) <= fp16 + 1e-12
    assert space.seconds(space.uniform(P.INT8)) > fp16  # the tie the old rule broke towards INT8


def test_cost_model_targets_and_boundaries():
    m = builders.conv_bn_relu_residual()
    units = find_units(m).units
    t4, h100 = cost_model(m, units, "t4", 64), cost_model(m, units, "h100", 64)
    plan = {u.name: P.INT8 for u in units}
    assert t4.plan_seconds(plan) != h100.plan_seconds(plan)
    assert t4.plan_seconds(plan) > h100.plan_seconds(plan)
    # a precision change between two units costs a reformat that an all-INT8 plan does not pay
    mixed = {"conv1": P.INT8, "conv2": P.FP16, "fc": P.INT8}
    uniform_units = sum(t4.unit_seconds(u, p) for u, p in mixed.items())
    assert t4.plan_seconds(mixed) > uniform_units
    assert set(GPUS) == {"h200", "h100", "b200", "a100", "l40s", "l4", "t4", "orin"}
    # what each runs (datasheets): no FP8 before Ada/Hopper, no BF16/TF32 on Turing
    assert GPUS["t4"].fp8_tflops is None and GPUS["t4"].bf16_tflops is None and GPUS["t4"].tf32_tflops is None
    assert GPUS["a100"].fp8_tflops is None and GPUS["a100"].tf32_tflops == 156.0
    assert all(GPUS[g].fp8_tflops for g in ("l4", "l40s", "h100", "h200", "b200"))
    with pytest.raises(ConfigError, match="--target"):
        cost_model(m, units, "v100")


def test_an_embedding_lookup_costs_the_rows_it_reads_not_its_table():
    m = builders.embedding_residual()
    units = find_units(m).units
    cost = cost_model(m, units, "t4", 1)
    lookup = cost.costs["embed"]
    assert lookup.weights_read == 2 * 4 * 8 and lookup.weight_elems == 50 * 8  # rows read; the table's size
    big = builders.embedding_residual()
    table = next(t for t in big.graph.initializer if t.name == "table")
    table.CopyFrom(builders.init("table", np.zeros((50_000, 8), np.float32)))
    big_cost = cost_model(big, find_units(big).units, "t4", 1)
    assert big_cost.unit_seconds("embed", P.FP16) == cost.unit_seconds("embed", P.FP16)  # time: the rows read
    assert big_cost.costs["embed"].weight_elems == 50_000 * 8  # size (--max-size-mb): the whole table


def test_search_returns_a_measured_passing_mix_and_logs_every_step():
    opts = _options(NOISE)

    def measure(plan):  # a fake task metric: drops with the predicted noise
        return 0.99 - 10 * opts.predicted_noise(plan)

    result = search(opts, Budget(max_drop=0.002), 0.99, measure)
    assert 0.99 - result.score <= 0.002
    assert result.plan == {"conv1": P.FP16, "conv2": P.INT8, "fc": P.INT8}  # conv1's INT8 noise breaks it
    assert not result.steps[0].passed and len(result.steps) > 1  # all-INT8 was tried, measured, and refused
    assert all(s.passed == (0.99 - s.score <= 0.002) for s in result.steps)
    assert result.steps[0].note == "fastest mix allowed"
    only_fp32 = search(opts, Budget(max_drop=0.0), 0.99, lambda plan: 0.99 - (0.5 if plan else 0.0))
    assert only_fp32.plan == {} and "only all-FP32" in only_fp32.message
    slow = _options(NOISE)
    slow = slow.with_cost(slow.cost.with_measured({(u, p): (1.0 if p is P.FP32 else 9.0) for u in slow.units
                                                   for p in P}, "test"))
    fastest_is_fp32 = search(slow, Budget(max_drop=0.5), 0.99, lambda plan: 0.99)
    assert fastest_is_fp32.plan == {} and "fastest mix" in fastest_is_fp32.message


@pytest.mark.parametrize("gap_us, lowered", [(4.0, True), (9.0, False)])
def test_latencies_within_the_resolution_are_ties_won_by_smaller_weights(gap_us, lowered):
    opts = _options(NOISE)
    fp32 = {u: P.FP32 for u in opts.units}
    measured = {(u, p): 1e-4 for u in opts.units for p in P}
    opts = opts.with_cost(opts.cost.with_measured(measured, "test"))
    boundaries = opts.seconds({u: P.INT8 for u in opts.units}) - opts.seconds(fp32)  # input/output reformats
    for u in opts.units:  # all-INT8 ends up gap_us slower than all-FP32; FP16 is slower still
        measured[(u, P.INT8)] = 1e-4 - (boundaries - gap_us * 1e-6) / len(opts.units)
        measured[(u, P.FP16)] = 2e-4
    opts = opts.with_cost(opts.cost.with_measured(measured, "test"))
    assert opts.cost.resolution == pytest.approx(6e-6)
    assert solve(opts, tie_break=False) == {}  # strictly fastest: all-FP32
    tied = solve(opts)
    assert (tied == {u: P.INT8 for u in opts.units}) == lowered
    assert opts.seconds({**fp32, **tied}) - opts.seconds(fp32) <= opts.cost.resolution + 1e-12
    result = search(opts, Budget(max_drop=1.0), 0.99, lambda plan: 0.99)
    assert result.plan == tied and "smaller weights won" in result.message


def test_mix_never_slower_than_all_fp16_for_a_speedup_budget():
    opts = _options(NOISE)
    fp16 = opts.seconds({u: P.FP16 for u in opts.units})
    result = search(opts, Budget(min_speedup=1.0, speedup_vs=P.FP16), 1.0, lambda plan: 1.0)
    assert opts.seconds({u: result.plan.get(u, P.FP32) for u in opts.units}) <= fp16 * (1 + 1e-9)


@pytest.mark.parametrize("budget, words", [
    (Budget(max_drop=-0.1), "zero or positive"),
    (Budget(max_drop=float("nan")), "finite"),
    (Budget(max_latency_ms=float("inf")), "finite"),
    (Budget(), "give a budget"),
    (Budget(relative=True), "--relative"),
    (Budget(max_latency_ms=1, min_speedup=2), "not both"),
    (Budget(max_size_mb=0), "--max-size-mb"),
])
def test_bad_budgets(budget, words):
    with pytest.raises(ConfigError, match=words):
        budget.check()


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


def _plan_cli(capsys, *argv):
    code = main(["plan", *map(str, argv)])
    return code, capsys.readouterr()


def test_plan_cli_bad_inputs(analysed, capsys):
    run = analysed / "run"
    cases = [
        (["--eval", analysed / "eval.npz", "--max-drop", "-1"], "zero or positive"),
        (["--eval", analysed / "calib.npz", "--max-drop", "0.01"], "calibration data"),
        (["--eval", analysed / "eval.npz", "--metric", "accuracy", "--max-drop", "0.01"], "labels"),
        (["--eval", analysed / "eval.npz", "--metric-fn", "metric_fns:broken", "--max-drop", "0.01"], "raised"),
        (["--eval", analysed / "eval.npz", "--metric-fn", "nope.nothing:fn", "--max-drop", "0.01"], "could not"),
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


def test_pareto_sweep_is_measured_and_marks_the_front():
    from trt_mpq.search.driver import pareto

    opts = _options(NOISE)
    calls = []

    def measure(plan):
        calls.append(plan)
        return 1.0 - 10 * opts.predicted_noise(plan)

    points = pareto(opts, measure, points=8)
    assert len(calls) == len(points)  # every point measured once
    assert points[-1].plan == {} and points[-1].score == 1.0  # all-FP32 is the slowest point
    front = [q for q in points if q.on_front]
    assert front[0] is points[0]  # the fastest point is always on the front
    assert all(a.score < b.score for a, b in zip(front, front[1:], strict=False))  # slower: scores higher
    times = [q.estimated_ms for q in points]
    assert times == sorted(times)


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
