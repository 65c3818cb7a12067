import numpy as np
import onnx
import pytest

import builders
from fakes import CountingBackend
from trt_mpq.network.units import find_units
from trt_mpq.network.weights import MIN_BYTES, is_placeholder, split_weights
from trt_mpq.precision import Plan, Precision
from trt_mpq.quant.lower import lower
from trt_mpq.quant.ranges import Ranges


def _big_gemm(seed=0):
    """A Gemm whose weight (64 KiB) goes to the bank, and a bias that stays in the graph."""
    r = np.random.default_rng(seed)
    nodes = [onnx.helper.make_node("Gemm", ["x", "w", "b"], ["y"], "fc", transB=1)]
    inits = [builders.init("w", r.standard_normal((128, 128)).astype(np.float32)),
             builders.init("b", r.standard_normal(128).astype(np.float32))]
    return builders.model(nodes, [builders.fvi("x", ["N", 128])], [builders.fvi("y", ["N", 128])], inits)


def test_split_keeps_small_constants_and_moves_the_rest():
    m = _big_gemm()
    skeleton, weights = split_weights(m)
    by_name = {t.name: t for t in skeleton.graph.initializer}
    assert is_placeholder(by_name["w"]) and not is_placeholder(by_name["b"])  # 512 B < MIN_BYTES
    assert 128 * 4 < MIN_BYTES <= 128 * 128 * 4
    assert skeleton.ByteSize() < 2048 < m.ByteSize()
    np.testing.assert_array_equal(weights.arrays["w"], onnx.numpy_helper.to_array(m.graph.initializer[0]))
    assert weights.fill(skeleton) == m  # filled back, the same model
    assert m.graph.initializer[0].raw_data  # the original is untouched


@pytest.mark.parametrize("optimize", ["none", "all"])
def test_a_session_from_the_skeleton_and_the_bank_computes_what_the_whole_model_does(optimize):
    m = _big_gemm()
    skeleton, weights = split_weights(m)
    x = np.random.default_rng(1).standard_normal((3, 128)).astype(np.float32)
    backend = CountingBackend(optimize)
    expected = backend.compile(m).run({"x": x})["y"]
    with backend.compile(skeleton, weights) as a, backend.compile(skeleton, weights) as b:  # shared, not copied
        np.testing.assert_array_equal(a.run({"x": x})["y"], expected)
        np.testing.assert_array_equal(b.run({"x": x})["y"], expected)
    assert set(weights.handles("onnxruntime")) == {"w"}


def test_lowering_a_filled_unit_equals_lowering_the_whole_model():
    m = builders.conv_bn_relu_residual()
    units = find_units(m).units
    skeleton, weights = split_weights(m, min_bytes=64)
    assert any(is_placeholder(t) for t in skeleton.graph.initializer)
    ranges = Ranges("max", {a: 3.0 for u in units for a in u.activations}, {})
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    backend = CountingBackend("none")
    for u in units:
        for p in (Precision.INT8, Precision.FP16):
            plan = Plan.of({u.name: p})
            whole = backend.compile(lower(m, units, plan, ranges)).run({"x": x})
            part = lower(weights.fill_for(skeleton, u.nodes), units, plan, ranges)
            np.testing.assert_array_equal(backend.compile(part, weights).run({"x": x})["y"], whole["y"])


def test_a_placeholder_without_its_bank_is_refused():
    skeleton, weights = split_weights(_big_gemm())
    with pytest.raises(KeyError, match="w"):
        type(weights)({}).placeholders(skeleton)
