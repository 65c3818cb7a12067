"""Precision borders (search.borders): what each tensor costs, and the integer program's exact agreement."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import builders
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision as P
from trt_mpq.search.borders import crossing_seconds
from trt_mpq.search.cost import cost_model
from trt_mpq.search.milp import solve
from trt_mpq.search.space import DecisionSpace


@pytest.fixture(scope="module")
def fanout():
    m = builders.norm_fanout()
    units = find_units(m).units
    return units, cost_model(m, units, "t4", 16)


def _cost(cost, tensor, plan):
    c = next(c for c in cost.crossings if c.tensor == tensor)
    return crossing_seconds(c, plan, cost.reformat_seconds)


def test_what_a_writer_can_store_decides_the_reformats(fanout):
    units, cost = fanout
    assert {u.name: u.kind for u in units} == {"norm": "norm", "proj_a": "gemm", "proj_b": "gemm", "skip": "region"}
    q = cost.reformat_seconds(16 * 64, P.FP16, P.INT8)
    # an INT8 GEMM writes its float reader's format itself (its dequantize fused): free
    assert _cost(cost, "bb", {"proj_b": P.INT8, "proj_a": P.FP16}) == 0
    assert _cost(cost, "bb", {"proj_b": P.FP16, "proj_a": P.INT8}) == pytest.approx(q)  # a float GEMM cannot quantize
    # a LayerNorm whose readers are all INT8 ends in the quantize; one FP16 reader keeps it FP16 plus one Q kernel
    every = {"norm": P.FP16, "proj_a": P.INT8, "proj_b": P.INT8, "skip": P.INT8}
    assert _cost(cost, "n", every) == 0
    assert _cost(cost, "n", {**every, "skip": P.FP16}) == pytest.approx(q)  # one kernel, however many INT8 readers
    # a graph input is FP32: an FP16 reader pays one cast, an INT8 reader one quantize; the output is read FP32
    assert _cost(cost, "x", {"norm": P.FP16}) == pytest.approx(cost.reformat_seconds(16 * 64, P.FP32, P.FP16))
    assert _cost(cost, "y", {"skip": P.INT8}) == 0
    assert _cost(cost, "y", {"skip": P.FP16}) == pytest.approx(cost.reformat_seconds(16 * 64, P.FP16, P.FP32))
    assert cost.reformat_seconds(1, P.FP16, P.INT8) == pytest.approx(8e-6, rel=1e-3)  # the fitted fixed cost


@pytest.mark.parametrize("seed", range(6))
def test_the_integer_program_finds_the_brute_force_optimum_with_borders(fanout, seed):
    """Random unit times make borders decide: the program's optimum equals the exhaustive one, with and
    without a noise budget, including the quantize a LayerNorm absorbs and the dequantize an INT8 GEMM does."""
    units, base = fanout
    rng = np.random.default_rng(seed)
    choices = {u.name: [P.FP32, *u.allowed] for u in units}
    measured = {(u, p): float(rng.uniform(2e-6, 30e-6)) for u in choices for p in choices[u]}
    noise = {(u, p): (0.0 if p is P.FP32 else float(rng.uniform(1e-6, 1e-3))) for u in choices for p in choices[u]}
    space = DecisionSpace([u.name for u in units], choices, noise, base.with_measured(measured, "test"),
                          {u: base.costs[u].weight_elems for u in choices})
    for budget in (None, 1e-3, 3e-4):
        best = min((space.seconds(dict(zip(choices, combo, strict=True))), combo)
                   for combo in itertools.product(*choices.values())
                   if budget is None or space.predicted_noise(dict(zip(choices, combo, strict=True))) <= budget)
        got = solve(space, noise_budget=budget, tie_break=False)
        assert space.seconds(got) == pytest.approx(best[0], rel=1e-9, abs=1e-12)


def test_a_shape_read_needs_no_format():
    """An embedding's output read by Shape (index arithmetic) and a unit: Shape reads dimensions, not data."""
    m = builders.embedding_residual()
    cost = cost_model(m, find_units(m).units, "t4", 1)
    emb = next(c for c in cost.crossings if c.tensor == "emb")
    assert emb.writer == "embed" and not emb.fp32_reader


def test_each_gpu_runs_what_its_datasheet_says_and_int4_weights_cost_half_a_byte():
    from trt_mpq.search.cost import GPUS, WEIGHT_BYTES

    assert not GPUS["t4"].runs(P.FP8) and not GPUS["t4"].runs(P.BF16) and not GPUS["t4"].runs(P.INT4)
    assert GPUS["a100"].runs(P.BF16) and GPUS["a100"].runs(P.INT4) and not GPUS["a100"].runs(P.FP8)
    assert all(GPUS[g].runs(p) for g in ("l4", "l40s", "h100", "h200", "b200") for p in P)
    assert GPUS["orin"].runs(P.BF16) and not GPUS["orin"].runs(P.FP8)
    with pytest.raises(Exception, match="cannot run fp8"):
        GPUS["t4"].peak(P.FP8)
    assert WEIGHT_BYTES[P.INT4] < 0.52 and WEIGHT_BYTES[P.FP8] == 1
    m = builders.norm_fanout()
    cost = cost_model(m, find_units(m).units, "h100", 1)
    assert cost.unit_seconds("proj_a", P.FP8) <= cost.unit_seconds("proj_a", P.FP16)  # twice the rate, half the bytes


def _measured_everywhere(units, skipped=()):
    """An analysis stand-in: every unit measured (the same small noise) at every precision it allows."""
    from types import SimpleNamespace

    from trt_mpq.artifacts import AnalysedUnit, UnitResult

    result = UnitResult(cosine=0.9999, sqnr_db=60.0, nmse=1e-6, max_abs=1e-3)
    return SimpleNamespace(units=[AnalysedUnit(u.name, u.main_op, u.nodes, u.op_types,
                                               dict.fromkeys(u.allowed, result), u.kind) for u in units],
                           skipped=skipped)


def test_a_plan_for_a_gpu_without_fp8_or_bf16_never_uses_them():
    """The decision space drops results the target cannot run: a T4 keeps FP16/INT8, an H100 keeps them all."""
    m = builders.norm_fanout()
    units = find_units(m).units
    t4 = DecisionSpace.from_analysis(_measured_everywhere(units), cost_model(m, units, "t4", 1))
    h100 = DecisionSpace.from_analysis(_measured_everywhere(units), cost_model(m, units, "h100", 1))
    assert not any(p in (P.FP8, P.BF16, P.INT4) for c in t4.choices.values() for p in c)
    assert P.FP8 in h100.choices["proj_a"] and P.INT4 in h100.choices["proj_a"] and P.BF16 in h100.choices["norm"]
    chosen = solve(t4, noise_budget=1.0)
    assert set(chosen.values()) <= {P.FP16, P.INT8}


@pytest.mark.parametrize("seed", range(4))
def test_tf32_is_one_flag_for_every_gemm_unit(fanout, seed):
    """On an A100 a GEMM unit may run TF32 only if no other GEMM unit needs true FP32 (--noTF32 is global):
    the program's optimum equals the exhaustive one over the feasible plans, and is feasible."""
    units, _ = fanout
    m = builders.norm_fanout()
    base = cost_model(m, units, "a100", 16)
    rng = np.random.default_rng(seed)
    choices = {u.name: [P.FP32, *(p for p in u.allowed if p in (P.FP16, P.INT8, P.TF32))] for u in units}
    measured = {(u, p): float(rng.uniform(2e-6, 30e-6)) for u in choices for p in choices[u]}
    noise = {(u, p): (0.0 if p is P.FP32 else float(rng.uniform(1e-6, 1e-3)) / (100 if p is P.TF32 else 1))
             for u in choices for p in choices[u]}
    space = DecisionSpace([u.name for u in units], choices, noise, base.with_measured(measured, "test"),
                          {u: base.costs[u].weight_elems for u in choices},
                          frozenset(u.name for u in units if u.kind == "gemm"))
    assert not space.feasible({"proj_a": P.TF32}) and space.feasible({"proj_a": P.TF32, "proj_b": P.TF32})
    for budget in (None, 1e-3, 1e-5):
        plans = [dict(zip(choices, combo, strict=True)) for combo in itertools.product(*choices.values())]
        ok = [p for p in plans if space.feasible(p) and (budget is None or space.predicted_noise(p) <= budget)]
        got = solve(space, noise_budget=budget, tie_break=False)
        assert space.feasible(got)
        assert space.seconds(got) == pytest.approx(min(space.seconds(p) for p in ok), rel=1e-9, abs=1e-12)


def test_a_gemm_outside_every_unit_keeps_tf32_off():
    """A Conv no unit covers (its weight computed at run time) was verified in true FP32: --noTF32 stays."""
    from trt_mpq.artifacts import SkippedLayer
    from trt_mpq.commands.trtexec import trtexec_text

    m = builders.norm_fanout()
    units = find_units(m).units
    cost = cost_model(m, units, "a100", 1)
    free = DecisionSpace.from_analysis(_measured_everywhere(units), cost)
    skipped = (SkippedLayer("conv_dyn", "Conv", "weight at run time"),)
    tied = DecisionSpace.from_analysis(_measured_everywhere(units, skipped), cost)
    every_tf32 = {"proj_a": P.TF32, "proj_b": P.TF32}
    assert free.tf32(every_tf32) is True and free.tf32({"proj_a": P.FP16, "proj_b": P.FP16}) is None
    assert P.TF32 not in tied.choices["proj_a"] and tied.tf32({"proj_a": P.FP16, "proj_b": P.FP16}) is False
    x = [s for s in builders.norm_fanout().graph.input][0]
    spec = __import__("trt_mpq.network.model", fromlist=["tensor_spec"]).tensor_spec(x)
    line = trtexec_text("m.onnx", "w.onnx", [spec], {"x": np.zeros((2, 4, 8), np.float32)}, 1, units,
                        __import__("trt_mpq.precision", fromlist=["Plan"]).Plan.of({}), tied.tf32({}))
    assert "--noTF32" in line
