"""Bias correction and MSE weight scales: what they restore, on tiny models whose answer is known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan, Precision
from trt_mpq.quant.collector import RangeCollector
from trt_mpq.quant.lower import lower
from trt_mpq.quant.ranges import INT8_MAX, weight_scales


def _conv(depthwise: bool, bias: bool):
    """A 3x3 conv of 8 channels whose weights sit just off the INT8 grid, so rounding shifts every channel."""
    rng = np.random.default_rng(0)
    groups, cin = (8, 1) if depthwise else (1, 8)
    w = rng.normal(size=(8, cin, 3, 3)).astype(np.float32)
    scale = np.abs(w).reshape(8, -1).max(1) / INT8_MAX
    w = w + 0.4 * scale[:, None, None, None] * np.sign(w)  # biased rounding error: mostly the same sign
    w[:, 0, 0, 0] = np.abs(w).reshape(8, -1).max(1)  # keep the channel max (and so the scale) in place
    inits = [numpy_helper.from_array(w, "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b"))
        ins.append("b")
    node = helper.make_node("Conv", ins, ["y"], "conv", pads=[1, 1, 1, 1], group=groups)
    graph = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(m, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so).run(None, {"x": x})[0]


def test_bias_correction_restores_the_mean_output_of_a_conv():
    x = np.random.default_rng(1).uniform(0.0, 2.0, size=(4, 8, 6, 6)).astype(np.float32)  # post-ReLU-like
    for depthwise in (False, True):
        for bias in (False, True):
            m = _conv(depthwise, bias)
            units = find_units(m).units
            col = RangeCollector("max", ["x"], ["x"], {"x": 1}, bias_correction=True)
            col.update_max({"x": x})
            ranges = col.result()
            assert np.allclose(ranges.means["x"], x.mean(axis=(0, 2, 3)), rtol=1e-5)
            plan = Plan.of({"conv": Precision.INT8})
            ref = _run(m, x).mean(axis=(0, 2, 3))
            plain = _run(lower(m, units, plan, replace(ranges, bias_correction=False)), x).mean(axis=(0, 2, 3))
            fixed = _run(lower(m, units, plan, ranges), x).mean(axis=(0, 2, 3))
            before, after = np.abs(plain - ref).max(), np.abs(fixed - ref).max()
            assert before > 1e-3  # the rounding really shifted the mean
            # the border pixels see zero padding, not the mean: what stays is that edge effect, far smaller
            assert after < 0.3 * before, (depthwise, bias, before, after)


def test_mse_weight_scales_never_quantize_worse_than_max():
    rng = np.random.default_rng(2)
    w = rng.standard_t(3, size=(16, 4, 3, 3)).astype(np.float32)  # long tails, few weights: clipping pays
    errs = {}
    for method in ("max", "mse"):
        s = weight_scales(w, 0, method)[:, None, None, None]
        q = np.clip(np.round(w / s), -INT8_MAX - 1, INT8_MAX) * s
        errs[method] = ((w - q) ** 2).reshape(16, -1).sum(1)
    assert np.all(errs["mse"] <= errs["max"] + 1e-12) and errs["mse"].sum() < errs["max"].sum()


def test_bias_correction_fills_an_empty_bias_input_and_leaves_a_gemm_that_ignores_c():
    import onnx

    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    for beta, c in ((1.0, ""), (0.0, "")):
        node = helper.make_node("Gemm", ["x", "w", c], ["y"], "fc", beta=beta)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                                  [numpy_helper.from_array(w, "w")])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        units = find_units(m).units
        col = RangeCollector("max", ["x"], ["x"], {"x": -1}, bias_correction=True)
        x = rng.uniform(0, 1, size=(16, 8)).astype(np.float32)
        col.update_max({"x": x})
        low = lower(m, units, Plan.of({"fc": Precision.INT8}), col.result())
        onnx.checker.check_model(low)  # Gemm keeps 3 inputs at most
        fc = next(n for n in low.graph.node if n.op_type == "Gemm")
        assert len(fc.input) == 3 and (fc.input[2] != "") == (beta != 0)
        assert np.all(np.isfinite(_run_xy(low, x[:2])))


def _run_xy(m, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so).run(None, {"x": x})[0]
