from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import builders
from trt_mpq.errors import ConfigError
from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan
from trt_mpq.quant.lower import lower, trt_rule_violations
from trt_mpq.quant.ranges import Ranges


def _run(m, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _ranges(units, amax=3.0):
    return Ranges("max", {a: amax for u in units for a in u.activations}, {})


@pytest.fixture
def res():
    m = builders.conv_bn_relu_residual()
    return m, find_units(m).units, np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)


def test_all_fp32_plan_reproduces_outputs_exactly(res):
    m, units, x = res
    low = lower(m, units, Plan.of({}), _ranges(units))
    assert np.array_equal(_run(low, x), _run(m, x))


def test_int8_unit_gets_qdq_on_inputs_and_per_channel_int8_weight(res):
    m, units, x = res
    before = m.SerializeToString()
    low = lower(m, units, Plan.of({"conv2": "int8"}), _ranges(units))
    assert m.SerializeToString() == before  # pure: the input model is untouched
    onnx.checker.check_model(low, full_check=True)
    ops = Counter(n.op_type for n in low.graph.node)
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 2  # r1 (conv + residual input) and weight
    inits = {t.name: numpy_helper.to_array(t) for t in low.graph.initializer}
    assert inits["w2_int8"].dtype == np.int8 and inits["w2_scale"].shape == (4,)
    dq_w = next(n for n in low.graph.node if n.name == "w2_DequantizeLinear")
    assert onnx.helper.get_attribute_value(dq_w.attribute[0]) == 0
    conv2 = next(n for n in low.graph.node if n.name == "conv2")
    add = next(n for n in low.graph.node if n.name == "add")
    assert conv2.input[0] == "r1_dequantized" and "r1_dequantized" in add.input
    assert "b2" in conv2.input  # bias stays FP32
    assert trt_rule_violations(low) == []
    y, ref = _run(low, x), _run(m, x)
    assert 0 < np.abs(y - ref).max() < 0.2 * np.abs(ref).max()


def test_int8_weight_dequantizes_to_within_half_a_step(res):
    m, units, _ = res
    low = lower(m, units, Plan.of({"conv1": "int8"}), _ranges(units))
    inits = {t.name: numpy_helper.to_array(t) for t in low.graph.initializer}
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}["w1"]
    back = inits["w1_int8"].astype(np.float32) * inits["w1_scale"][:, None, None, None]
    assert np.all(np.abs(back - w) <= inits["w1_scale"][:, None, None, None] / 2 + 1e-7)
    assert np.abs(inits["w1_int8"]).max() == 127


def test_fp16_unit_is_a_cast_island_with_fp16_constants(res):
    m, units, x = res
    low = lower(m, units, Plan.of({"conv1": "fp16"}), _ranges(units))
    onnx.checker.check_model(low, full_check=True)
    casts = [n for n in low.graph.node if n.op_type == "Cast"]
    assert [c.name for c in casts] == ["x_cast_fp16", "r1_cast_fp32"]
    types = {t.name: t.data_type for t in low.graph.initializer}
    assert all(types[f"{n}_fp16"] == onnx.TensorProto.FLOAT16 for n in ("w1", "g", "b", "m", "v"))
    y, ref = _run(low, x), _run(m, x)
    assert 0 < np.abs(y - ref).max() < 1e-2


def test_shared_tensor_gets_one_qdq_pair_and_order_stays_topological():
    m = builders.skip_produced_late()
    units = find_units(m).units
    low = lower(m, units, Plan.of({u.name: "int8" for u in units}), _ranges(units))
    onnx.checker.check_model(low, full_check=True)  # full_check verifies topological order
    q = [n for n in low.graph.node if n.op_type == "QuantizeLinear"]
    assert sorted(n.input[0] for n in q) == ["s", "x"]  # x feeds both convs: one pair
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)
    assert _run(low, x).shape == (1, 4, 6, 6)


def test_mixed_plan_with_gates_and_activation_matmul_runs():
    for m in (builders.gates(), builders.attention_matmul()):
        units = find_units(m).units
        plan = Plan.of({u.name: ("int8" if i % 2 == 0 else "fp16") for i, u in enumerate(units)})
        low = lower(m, units, plan, _ranges(units))
        onnx.checker.check_model(low, full_check=True)
        assert trt_rule_violations(low) == []
        shape = [2, 2, 4, 4] if m.graph.node[0].op_type == "Conv" else [2, 5, 8]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        assert np.all(np.isfinite(_run(low, x)))


def test_trt_rule_checker_finds_violations():
    m = builders.already_quantized()
    for t in m.graph.initializer:
        if t.name == "z":
            t.CopyFrom(numpy_helper.from_array(np.int8(3), "z"))
    assert any("zero point" in p for p in trt_rule_violations(m))


def test_unknown_unit_and_missing_ranges_are_config_errors(res):
    m, units, _ = res
    with pytest.raises(ConfigError, match="does not have"):
        lower(m, units, Plan.of({"nope": "int8"}), None)
    with pytest.raises(ConfigError, match="ranges"):
        lower(m, units, Plan.of({"conv1": "int8"}), None)
