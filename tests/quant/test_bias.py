"""Bias correction's output shift (trt_mpq.quant.bias) against the shift ONNX Runtime computes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

import builders
from trt_mpq.quant.bias import output_shift


def _run(node, inputs, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    rank = len(inputs[0].type.tensor_type.shape.dim)
    m = builders.model([node], inputs, [builders.fvi("y", [f"d{i}" for i in range(rank)])], [builders.init("w", w)])
    return ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]


@pytest.mark.parametrize("group", [1, 2, 6])
def test_conv_shift_is_the_change_of_each_output_channel_on_a_constant_input(group):
    r = np.random.default_rng(group)
    cin, cout = 6, 12
    w = r.standard_normal((cout, cin // group, 3, 3)).astype(np.float32)
    delta = (0.01 * r.standard_normal(w.shape)).astype(np.float32)
    mean = r.standard_normal(cin).astype(np.float32)
    x = np.broadcast_to(mean[None, :, None, None], (1, cin, 5, 5)).astype(np.float32)  # no padding: every
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group)  # output sees the channel means only
    inputs = [builders.fvi("x", [1, cin, 5, 5])]
    change = _run(node, inputs, x, w + delta) - _run(node, inputs, x, w)
    got = output_shift(node, delta, 1, mean)
    np.testing.assert_allclose(got, change[0, :, 0, 0], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(change[0], change[0, :, :1, :1] * np.ones((1, 3, 3)), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("trans_b, alpha", [(0, 1.0), (1, 1.0), (1, 0.5)])
def test_gemm_and_matmul_shift(trans_b, alpha):
    r = np.random.default_rng(7)
    k, n = 5, 3
    w = r.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    delta = (0.01 * r.standard_normal(w.shape)).astype(np.float32)
    mean = r.standard_normal(k).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=trans_b, alpha=alpha)
    inputs = [builders.fvi("x", [1, k])]
    change = _run(node, inputs, mean[None], w + delta) - _run(node, inputs, mean[None], w)
    np.testing.assert_allclose(output_shift(node, delta, 1, mean), change[0], rtol=1e-3, atol=1e-6)
    if not trans_b and alpha == 1.0:
        matmul = helper.make_node("MatMul", ["x", "w"], ["y"])
        np.testing.assert_allclose(output_shift(matmul, delta, 1, mean), change[0], rtol=1e-3, atol=1e-6)


def test_layouts_it_does_not_cover_give_none():
    d = np.ones((4, 3), np.float32)
    assert output_shift(helper.make_node("Gemm", ["x", "w"], ["y"], transA=1), d, 1, [0.0] * 4) is None
    assert output_shift(helper.make_node("Gemm", ["x", "w"], ["y"]), d, 1, [0.0] * 5) is None  # wrong size
    assert output_shift(helper.make_node("MatMul", ["w", "x"], ["y"]), d, 0, [0.0] * 4) is None  # weight first
    assert output_shift(helper.make_node("Conv", ["x", "w"], ["y"], group=2), np.ones((3, 2, 1, 1)), 1,
                        [0.0] * 4) is None  # 3 output channels do not split into 2 groups
