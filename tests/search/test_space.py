"""The decision space (search/space.py): what each unit may choose, from an analysis and a target GPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import builders
from trt_mpq.artifacts import AnalysedUnit, UnitResult
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision as P
from trt_mpq.search.cost import cost_model
from trt_mpq.search.space import DecisionSpace


def _result(nmse: float, nonfinite: int = 0) -> UnitResult:
    return UnitResult(cosine=1.0, sqnr_db=30.0, nmse=nmse, max_abs=0.1, nonfinite=nonfinite)


def _space(target: str, skipped=()):
    m = builders.conv_bn_relu_residual()
    units = [u for u in find_units(m).units if u.kind == "gemm"]
    results = {"conv1": {P.INT8: _result(1e-2), P.FP16: _result(1e-6), P.BF16: _result(1e-5), P.TF32: _result(1e-7)},
               "conv2": {P.INT8: _result(0.0, nonfinite=3), P.FP16: _result(2e-6)},
               "fc": {P.INT8: _result(1e-4), P.FP16: _result(1e-7)}}
    analysed = [AnalysedUnit(u.name, u.main_op, u.nodes, u.op_types, results[u.name]) for u in units]
    analysis = SimpleNamespace(units=analysed, skipped=tuple(skipped))
    return DecisionSpace.from_analysis(analysis, cost_model(m, units, target, batch=8))


def test_choices_are_the_finite_results_the_gpu_runs():
    t4 = _space("t4")
    assert t4.choices["conv1"] == [P.FP32, P.INT8, P.FP16]  # a T4 runs neither BF16 nor TF32
    assert t4.choices["conv2"] == [P.FP32, P.FP16]  # its INT8 made NaN/Inf outputs: never a choice
    a100 = _space("a100")
    assert set(a100.choices["conv1"]) == {P.FP32, P.INT8, P.FP16, P.BF16, P.TF32}
    assert a100.noise[("conv1", P.FP32)] == 0.0 and a100.noise[("conv1", P.BF16)] == 1e-5


def test_tf32_is_one_flag_for_every_gemm():
    a100 = _space("a100")
    assert a100.tf32({"conv1": P.TF32, "conv2": P.FP16, "fc": P.FP16}) is True
    assert a100.tf32({"conv1": P.FP16, "conv2": P.FP16, "fc": P.FP16}) is None  # nothing stays FP32: no matter
    assert a100.tf32({"conv1": P.FP16, "fc": P.FP16}) is False  # conv2 stays true FP32
    assert not a100.feasible({"conv1": P.TF32, "fc": P.FP16})  # conv2 in FP32 beside a TF32 unit
    assert a100.feasible({"conv1": P.TF32, "conv2": P.FP16, "fc": P.FP16})
    outside = _space("a100", [SimpleNamespace(op_type="MatMul")])  # a GEMM no unit covers stays true FP32
    assert P.TF32 not in outside.choices["conv1"]
    assert outside.tf32({"conv1": P.FP16, "conv2": P.FP16, "fc": P.FP16}) is False


def test_predicted_noise_and_size_add_up_over_units():
    t4 = _space("t4")
    plan = {"conv1": P.FP16, "fc": P.INT8}
    assert t4.predicted_noise(plan) == pytest.approx(1e-6 + 0.0 + 1e-4)
    elems = t4.weight_elems
    assert t4.size_mb(plan) == pytest.approx((elems["conv1"] * 2 + elems["conv2"] * 4 + elems["fc"] * 1) / 1e6)
    assert t4.uniform(P.INT8) == {"conv1": P.INT8, "fc": P.INT8}
