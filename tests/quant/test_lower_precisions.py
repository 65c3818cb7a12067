"""FP8, BF16 and INT4 lowerings: the structure TensorRT's rules ask for, and what ONNX Runtime computes of it."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import builders
from trt_mpq.backends.onnxrt import OnnxRuntimeBackend
from trt_mpq.errors import ConfigError
from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan, needs_opset
from trt_mpq.precision import Precision as P
from trt_mpq.quant.lower import lower, trt_rule_violations
from trt_mpq.quant.ranges import Ranges


def _run(m, x):
    with OnnxRuntimeBackend().compile(m) as session:
        return session.run({m.graph.input[0].name: x})[m.graph.output[0].name]


def _nmse(y, ref):
    return float(((y - ref) ** 2).mean() / (ref ** 2).mean())


def _at(m, opset):
    return onnx.version_converter.convert_version(m, opset)


@pytest.fixture
def res():
    m = _at(builders.conv_bn_relu_residual(), 21)
    units = find_units(m).units
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    acts = [a for u in units for a in u.activations]
    ranges = Ranges("max", dict.fromkeys(acts, 3.0), dict.fromkeys(acts, 3.5))
    return m, units, x, ranges


def test_every_precision_has_its_opset():
    assert needs_opset([P.INT8, P.FP16]) == 13 and needs_opset([P.FP8]) == 19 and needs_opset([P.INT4, P.FP8]) == 21


def test_fp8_unit_gets_e4m3_qdq_per_tensor_activations_and_per_channel_weights(res):
    m, units, x, ranges = res
    low = lower(m, units, Plan.of({"conv1": P.FP8}), ranges)
    inits = {t.name: t for t in low.graph.initializer}
    q = [n for n in low.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in low.graph.node if n.op_type == "DequantizeLinear"]
    assert len(q) == 1 and len(dq) == 2  # the activation's pair, the weight's DQ
    assert inits[q[0].input[2]].data_type == TensorProto.FLOAT8E4M3FN
    assert float(numpy_helper.to_array(inits[q[0].input[1]])) == pytest.approx(3.5 / 448)  # max|x| / 448
    weight_dq = next(n for n in dq if n.input[0] in inits)
    assert inits[weight_dq.input[0]].data_type == TensorProto.FLOAT8E4M3FN
    assert next(a.i for a in weight_dq.attribute if a.name == "axis") == 0  # Conv: output channels
    w = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == units[0].weight))
    scales = numpy_helper.to_array(inits[weight_dq.input[1]])
    assert scales.shape == (w.shape[0],)
    np.testing.assert_allclose(scales, np.abs(w).reshape(w.shape[0], -1).max(1) / 448, rtol=1e-6)
    assert trt_rule_violations(low) == []
    ref = _run(m, x)
    assert 0 < _nmse(_run(low, x), ref) < 1e-2


def test_bf16_unit_is_a_bfloat16_island_emulated_on_cpu(res):
    m, units, x, ranges = res
    low = lower(m, units, Plan.of({"conv1": P.BF16}), ranges)
    casts = Counter(next(a.i for a in n.attribute if a.name == "to") for n in low.graph.node if n.op_type == "Cast")
    assert casts[TensorProto.BFLOAT16] == 1 and casts[TensorProto.FLOAT] == 1
    conv = next(n for n in low.graph.node if n.name == "conv1")
    inits = {t.name: t for t in low.graph.initializer}
    assert all(inits[i].data_type == TensorProto.BFLOAT16 for i in conv.input if i in inits)
    ref = _run(m, x)
    bf16, fp16 = _nmse(_run(low, x), ref), _nmse(_run(lower(m, units, Plan.of({"conv1": P.FP16}), ranges), x), ref)
    assert 0 < bf16 < 1e-3 and bf16 > fp16  # 8 bits of mantissa against 11


def _matmuls():
    r = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], "proj"),
             helper.make_node("Transpose", ["h"], ["ht"], "t", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["h", "ht"], ["y"], "scores")]
    w = (r.standard_normal((256, 32)) / 16).astype(np.float32)
    return builders.model(nodes, [builders.fvi("x", [2, 4, 256])], [builders.fvi("y", [2, 4, 4])],
                          [builders.init("w", w)], opset=21)


def test_int4_is_weight_only_blockwise_along_k_and_only_where_there_is_a_weight():
    m = _matmuls()
    units = {u.name: u for u in find_units(m).units}
    assert P.INT4 in units["proj"].allowed and P.INT4 not in units["scores"].allowed
    assert P.FP8 in units["scores"].allowed  # activation x activation: FP8 Q/DQ on both inputs
    low = lower(m, list(units.values()), Plan.of({"proj": P.INT4}), Ranges("max", {}, {}, int4_block=128))
    inits = {t.name: t for t in low.graph.initializer}
    dq = next(n for n in low.graph.node if n.op_type == "DequantizeLinear")
    attrs = {a.name: a.i for a in dq.attribute}
    assert attrs == {"axis": 0, "block_size": 128}  # blocks along K of a [K, N] weight
    assert inits[dq.input[0]].data_type == TensorProto.INT4 and inits[dq.input[2]].data_type == TensorProto.INT4
    assert inits[dq.input[1]].data_type == TensorProto.FLOAT16 and tuple(inits[dq.input[1]].dims) == (2, 32)
    assert not [n for n in low.graph.node if n.op_type == "QuantizeLinear"]  # weight-only
    x = np.random.default_rng(2).standard_normal((2, 4, 256)).astype(np.float32)
    assert 0 < _nmse(_run(low, x), _run(m, x)) < 0.05


def test_a_precision_above_the_models_opset_is_refused(res):
    m = builders.conv_bn_relu_residual()
    units = find_units(m).units
    with pytest.raises(ConfigError, match="opset 19"):
        lower(m, units, Plan.of({"conv1": P.FP8}), res[3])


def test_the_rule_checker_knows_each_precisions_zero_points_and_blocks(res):
    m, units, _, ranges = res
    plan = Plan.of({"conv1": P.FP8, "conv2": P.INT8, "fc": P.BF16})
    assert trt_rule_violations(lower(m, units, plan, ranges)) == []
    assert trt_rule_violations(lower(_matmuls(), find_units(_matmuls()).units, Plan.of({"proj": P.INT4}),
                                     Ranges("max", {}, {}))) == []
    bad = lower(m, units, Plan.of({"conv1": P.INT8}), ranges)
    dq = next(n for n in bad.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("w1"))
    dq.attribute.append(helper.make_attribute("block_size", 4))
    assert any("block quantization" in p for p in trt_rule_violations(bad))


def test_an_int4_block_of_tiny_weights_keeps_a_positive_float16_scale():
    m = _matmuls()
    w = next(t for t in m.graph.initializer if t.name == "w")
    tiny = numpy_helper.to_array(w).copy()
    tiny[:128] *= 1e-9  # the first block along K: |w| ~ 1e-10, below float16's smallest subnormal once / 7
    w.CopyFrom(numpy_helper.from_array(tiny, "w"))
    low = lower(m, find_units(m).units, Plan.of({"proj": P.INT4}), Ranges("max", {}, {}))
    assert trt_rule_violations(low) == []


def test_lowered_names_are_the_names_the_lowering_gives(res):
    """backends.trt_layers maps TensorRT layers back to units through these names: they must be the real ones."""
    from trt_mpq.quant.lower import lowered_names

    m, units, _, ranges = res
    unit = next(u for u in units if u.name == "conv1")
    made_tensors, made_nodes = set(), set()
    for p in (P.INT8, P.FP8, P.FP16, P.BF16):
        low = lower(m, units, Plan.of({"conv1": p}), ranges)
        made_nodes |= {n.name for n in low.graph.node}
        made_tensors |= {o for n in low.graph.node for o in n.output}
    tensors, nodes = lowered_names(unit.activations[0])
    assert set(tensors) <= made_tensors and set(nodes) <= made_nodes
    weight_nodes = lowered_names(unit.weight, weight=True)[1]
    assert set(weight_nodes[:2]) <= made_nodes  # INT8 and FP8 weight DQ (INT4 is for MatMul/Gemm)
