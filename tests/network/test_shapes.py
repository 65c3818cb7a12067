"""Shape inference over a model (trt_mpq.network.shapes): per-sample shapes with the batch fixed to 1, element
types, shapes that only data propagation finds, and inference left best effort where it cannot follow."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import builders
from trt_mpq.network import shapes
from trt_mpq.network.shapes import TensorTable, format_dims, infer_tensors, inferred, with_batch


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def _shape_arithmetic() -> onnx.ModelProto:
    """Reshape(x, concat(shape(x)[:1], [-1])): the target shape is computed, so only data propagation knows
    the result is [N, 12]. x [N, 3, 4] -> y [N, 12]."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], "shape"),
             helper.make_node("Slice", ["s", "zero", "one"], ["n"], "slice"),
             helper.make_node("Concat", ["n", "minus1"], ["target"], "cat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["r"], "reshape"),
             helper.make_node("Relu", ["r"], ["y"], "relu")]
    inits = [builders.init("zero", np.array([0], np.int64)), builders.init("one", np.array([1], np.int64)),
             builders.init("minus1", np.array([-1], np.int64))]
    return builders.model(nodes, [builders.fvi("x", ["N", 3, 4])], [builders.fvi("y", ["N", 12])], inits)


def test_format_dims_marks_unknown_axes():
    assert format_dims([1, None, 128]) == "[1, ?, 128]"
    assert format_dims((None, 3), ",") == "[?,3]"
    assert format_dims([]) == "[]"


def test_with_batch_fixes_only_a_dynamic_first_axis_of_a_copy():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 4])
    fixed = helper.make_tensor_value_info("f", TensorProto.FLOAT, [2, "T"])
    unnamed = helper.make_tensor_value_info("u", TensorProto.FLOAT, [None, 5])
    scalar = helper.make_tensor_value_info("s", TensorProto.INT64, [])
    graph = helper.make_graph([], "io", [x, fixed, unnamed, scalar], [])
    m = helper.make_model(graph)
    got = with_batch(m, 8)
    assert [_dims(vi) for vi in got.graph.input] == [[8, "T", 4], [2, "T"], [8, 5], []]
    assert _dims(m.graph.input[0]) == ["N", "T", 4]  # the original is untouched


def test_inferred_fills_value_info_and_propagates_data():
    got = inferred(with_batch(_shape_arithmetic(), 1))
    known = {vi.name: _dims(vi) for vi in got.graph.value_info}
    assert known["s"] == [3] and known["target"] == [2]
    assert known["r"] == [1, 12]  # only with data propagation: the target shape is a computed tensor


def test_inferred_retries_without_data_propagation_then_gives_up(monkeypatch):
    calls = []
    real = onnx.shape_inference.infer_shapes

    def flaky(model, **kwargs):
        calls.append(kwargs.get("data_prop", False))
        if kwargs.get("data_prop"):
            raise RuntimeError("[ShapeInferenceError] cannot follow this op")
        return real(model, **kwargs)

    monkeypatch.setattr(shapes.onnx.shape_inference, "infer_shapes", flaky)
    m = builders.conv_bn_relu_residual()
    got = inferred(m)
    assert calls == [True, False]
    assert {vi.name for vi in got.graph.value_info} >= {"c1", "r1", "s", "f"}

    def broken(model, **kwargs):
        raise RuntimeError("[ShapeInferenceError] no")

    monkeypatch.setattr(shapes.onnx.shape_inference, "infer_shapes", broken)
    assert inferred(m) is m  # best effort: the model as it was


def test_infer_tensors_gives_per_sample_shapes_and_types():
    m = builders.conv_bn_relu_residual()
    t = infer_tensors(m)
    assert isinstance(t, TensorTable)
    assert t.shapes["x"] == (1, 3, 8, 8)  # the dynamic batch axis is 1
    assert t.shapes["r1"] == (1, 4, 8, 8) and t.shapes["p"] == (1, 4, 1, 1) and t.shapes["f"] == (1, 4)
    assert t.shapes["y"] == (1, 5)
    assert t.shapes["w1"] == (4, 3, 3, 3) and t.shapes["bf"] == (5,)  # initializers, as stored
    every = {n for node in m.graph.node for n in (*node.input, *node.output)}
    assert set(t.types) == every and set(t.types.values()) == {TensorProto.FLOAT}
    assert _dims(m.graph.input[0])[0] == "N"  # the model itself keeps its dynamic batch


def test_infer_tensors_types_integer_and_boolean_tensors_and_scalars():
    t = infer_tensors(builders.if_subgraph())
    assert t.types["sr"] == TensorProto.INT64 and t.types["cond"] == TensorProto.BOOL
    assert t.types["k16"] == TensorProto.INT64 and t.types["y"] == TensorProto.FLOAT
    assert t.shapes["sr"] == () and t.shapes["cond"] == () and t.shapes["k16"] == ()  # scalars have shape ()
    assert t.shapes["y"] == (1, 2, 4, 4)
    t = infer_tensors(_shape_arithmetic())
    assert t.types["s"] == TensorProto.INT64 and t.shapes["s"] == (3,)
    assert t.shapes["r"] == (1, 12)


def test_dynamic_axes_other_than_the_batch_leave_no_shape():
    nodes = [helper.make_node("Relu", ["x"], ["r"], "relu"), helper.make_node("Neg", ["r"], ["y"], "neg")]
    m = builders.model(nodes, [builders.fvi("x", ["N", "T", 4])], [builders.fvi("y", ["N", "T", 4])])
    t = infer_tensors(m)
    assert "x" not in t.shapes and "r" not in t.shapes and "y" not in t.shapes  # T stays unknown
    assert t.types["r"] == TensorProto.FLOAT  # the type is known all the same


def test_an_op_inference_cannot_follow_leaves_its_tensors_unknown():
    t = infer_tensors(builders.custom_op_inside())
    assert t.shapes["c1"] == (1, 4, 8, 8) and t.types["c1"] == TensorProto.FLOAT  # before the custom op
    assert "m" not in t.types and "m" not in t.shapes  # its output: unknown, and no exception
    assert t.shapes["w2"] == (4, 4, 3, 3)
