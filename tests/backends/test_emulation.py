"""CPU emulation of what ONNX Runtime's CPU provider cannot run: BF16 islands and TF32 GEMMs."""

from __future__ import annotations

import numpy as np
import onnx

import builders
from trt_mpq.backends.emulation import emulate_tf32, has_tf32, tf32_round
from trt_mpq.backends.onnxrt import OnnxRuntimeBackend
from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan
from trt_mpq.precision import Precision as P
from trt_mpq.quant.lower import lower


def test_tf32_rounding_keeps_ten_mantissa_bits_to_nearest():
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 1e3
    r = tf32_round(x)
    assert np.all(r.view(np.uint32) & 0x1FFF == 0)  # the 13 low mantissa bits are gone
    rel = np.abs(r - x) / np.abs(x)
    assert rel.max() <= 2.0 ** -11 * 1.0001 and rel.max() > 2.0 ** -12  # half a TF32 step, and really rounded
    assert tf32_round(np.array([1 + 2 ** -11], np.float32))[0] == 1.0  # a tie goes to even
    assert np.isinf(tf32_round(np.array([np.inf], np.float32))[0])


def _run(m, x):
    with OnnxRuntimeBackend().compile(m) as session:
        return session.run({"x": x})[m.graph.output[0].name]


def test_a_tf32_unit_is_marked_not_rewritten_and_emulated_as_rounded_operands():
    m = builders.conv_bn_relu_residual()
    units = find_units(m).units
    low = lower(m, units, Plan.of({"conv1": P.TF32}), None)
    assert len(low.graph.node) == len(m.graph.node) and has_tf32(low)  # the graph TensorRT gets is unchanged
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    # reference: the same model with conv1's input and weight rounded to TF32 beforehand, run in FP32
    ref = onnx.ModelProto()
    ref.CopyFrom(m)
    w = next(t for t in ref.graph.initializer if t.name == "w1")
    w.CopyFrom(onnx.numpy_helper.from_array(tf32_round(onnx.numpy_helper.to_array(w)), "w1"))
    got, expect = _run(low, x), _run(ref, tf32_round(x))
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(got, _run(m, x))  # and it is not FP32
    assert len(emulate_tf32(low).graph.node) > len(low.graph.node)


def test_tf32_error_is_that_of_a_ten_bit_mantissa_below_bf16s_seven():
    m = builders.conv_bn_relu_residual()
    units = find_units(m).units
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    ref = _run(m, x)

    def nmse(p):
        y = _run(lower(m, units, Plan.of({u.name: p for u in units if u.kind == "gemm"}), None), x)
        return float(((y - ref) ** 2).mean() / (ref ** 2).mean())

    tf32, bf16 = nmse(P.TF32), nmse(P.BF16)
    assert 1e-9 < tf32 < 1e-6 and bf16 > 10 * tf32  # 2^-11 against 2^-8 relative rounding: ~64x in power


def test_the_in_graph_tf32_rounding_equals_the_exact_one_and_keeps_inf_nan_and_outliers():
    from onnx import TensorProto, helper

    x = np.concatenate([np.random.default_rng(3).standard_normal(4000) * np.exp(np.linspace(-30, 30, 4000)),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 3.0e38, 1e13]]).astype(np.float32).reshape(1, -1)
    ident = np.eye(1, dtype=np.float32)
    node = helper.make_node("MatMul", ["i", "x"], ["y"], "mm")  # y = x with x as the marked operand
    entry = node.metadata_props.add()
    entry.key, entry.value = "trt_mpq.math", "tf32"
    m = builders.model([node], [builders.fvi("x", list(x.shape))], [builders.fvi("y", list(x.shape))],
                       [builders.init("i", ident)])
    del m.graph.input[:]
    m.graph.input.extend([helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))])
    with OnnxRuntimeBackend().compile(m) as session:
        y = session.run({"x": x})["y"]
    huge = np.abs(x) > 3.4e38 / 8193  # x * (2^13 + 1) overflows: kept unrounded (a 2^-11 error at most)
    finite = np.isfinite(x) & ~huge
    np.testing.assert_array_equal(y[finite], tf32_round(x)[finite])  # bit for bit, over e^-30 .. e^30
    assert (y[huge] == x[huge]).all()
    assert np.isnan(y[np.isnan(x)]).all() and (y[np.isinf(x)] == x[np.isinf(x)]).all()
    assert y[0, -1] == tf32_round(np.array([1e13], np.float32))[0] and y[0, 0] != 0  # no per-tensor scale


def test_an_fp16_clip_runs_in_float32_with_the_same_bits():
    # MobileNetV2-like Conv + ReLU6 units in FP16: the Clip is rewritten (the CPU provider's float16 Clip is slow)
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from trt_mpq.backends.emulation import emulate_fp16_clip, has_fp16_clip

    r = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"], "relu6")]
    inits = [numpy_helper.from_array(builders.conv_w(r, 8, 3), "w"), numpy_helper.from_array(np.float32(0), "lo"),
             numpy_helper.from_array(np.float32(6), "hi")]
    m = builders.model(nodes, [builders.fvi("x", ["N", 3, 16, 16])], [builders.fvi("y", ["N", 8, 16, 16])], inits)
    units = find_units(m).units
    low = lower(m, units, Plan.of({u.name: P.FP16 for u in units}), None)
    assert has_fp16_clip(low) and not has_fp16_clip(m)
    fast = emulate_fp16_clip(low)
    assert [n.op_type for n in fast.graph.node].count("Cast") == [n.op_type for n in low.graph.node].count("Cast") + 2
    x = (r.standard_normal((4, 3, 16, 16)) * 30).astype(np.float32)
    x[0, 0, 0, :4] = [np.nan, np.inf, -np.inf, 7e4]  # NaN, both infinities, a value beyond float16
    runs = [ort.InferenceSession(mm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            for mm in (low, fast)]
    assert np.array_equal(runs[0].view(np.uint32), runs[1].view(np.uint32))
    assert runs[0][np.isfinite(runs[0])].max() == 6.0 and runs[0][np.isfinite(runs[0])].min() == 0.0
