"""Units for the float ops outside the GEMM units (trt_mpq.network.regions): which ops are a decision, how
connected elementwise ops group into one region and where a region is cut, what each kind may run in, and
which inputs an FP16 lowering casts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import builders
from trt_mpq.network.regions import kind_of, other_units
from trt_mpq.network.shapes import infer_tensors
from trt_mpq.precision import Precision

FLOATS = (Precision.FP16, Precision.BF16)
WITH_INT8 = (Precision.INT8, Precision.FP16, Precision.BF16)


def _units(model: onnx.ModelProto, taken: set[int] | None = None) -> dict:
    return {u.name: u for u in other_units(model, taken or set(), infer_tensors(model))}


def _scale_softmax_exp() -> onnx.ModelProto:
    """x*2+1 -> a; Softmax(a) -> p; Exp(p) + a -> y; m = x*2 is also a graph output. x [2, 4]."""
    nodes = [helper.make_node("Mul", ["x", "two"], ["m"], "scale"),
             helper.make_node("Add", ["m", "one"], ["a"], "shift"),
             helper.make_node("Softmax", ["a"], ["p"], "soft"),
             helper.make_node("Exp", ["p"], ["e"], "exp"),
             helper.make_node("Add", ["e", "a"], ["y"], "join")]
    inits = [builders.init("two", np.float32(2)), builders.init("one", np.float32(1))]
    return builders.model(nodes, [builders.fvi("x", [2, 4])], [builders.fvi("y", [2, 4]), builders.fvi("m", [2, 4])],
                          inits)


@pytest.mark.parametrize(("op", "kind"), [
    ("LayerNormalization", "norm"), ("GroupNormalization", "norm"), ("LogSoftmax", "softmax"),
    ("GlobalMaxPool", "pool"), ("Upsample", "resize"), ("GRU", "recurrent"), ("Gather", "embedding"),
    ("Add", "region"), ("Where", "region"), ("Conv", "region"),
])
def test_kind_of_op_types(op, kind):
    assert kind_of(op) == kind


def test_connected_elementwise_ops_are_one_region_cut_where_a_path_leaves_through_a_unit():
    units = _units(_scale_softmax_exp())
    assert set(units) == {"scale", "soft", "exp"}
    head = units["scale"]
    assert head.nodes == ("scale", "shift") and head.op_types == ("Mul", "Add")
    assert head.main_op == "Region" and head.kind == "region" and head.allowed == FLOATS
    assert head.inputs == ("x",)  # constants are no inputs
    assert head.outputs == ("m", "a")  # m: a graph output; a: read by the Softmax and the join
    assert head.activations == () and head.weight is None
    # shift and join are directly connected through a, but the Softmax sits between them on another path: one
    # region would be on both sides of that unit, so join starts a region of its own with the Exp
    tail = units["exp"]
    assert tail.nodes == ("exp", "join") and tail.inputs == ("p", "a") and tail.outputs == ("y",)
    soft = units["soft"]
    assert (soft.main_op, soft.kind, soft.nodes, soft.inputs, soft.outputs) == (
        "Softmax", "softmax", ("soft",), ("a",), ("p",))
    assert soft.allowed == FLOATS


@pytest.mark.parametrize(("mid", "want"), [
    ("Identity", [("exp", "sub")]),  # no unit between: one region
    ("Softmax", [("exp",), ("mid",), ("sub",)]),  # a unit between: the region is cut around it
])
def test_a_region_is_cut_only_where_a_unit_lies_between(mid, want):
    nodes = [helper.make_node("Exp", ["x"], ["e"], "exp"), helper.make_node(mid, ["e"], ["i"], "mid"),
             helper.make_node("Sub", ["i", "e"], ["y"], "sub")]
    m = builders.model(nodes, [builders.fvi("x", [2, 4])], [builders.fvi("y", [2, 4])])
    assert sorted(u.nodes for u in _units(m).values()) == want


def test_nodes_of_gemm_units_are_left_out_and_a_lone_add_may_run_int8():
    units = _units(_scale_softmax_exp(), taken={0})  # the Mul belongs to another unit
    shift = units["shift"]
    assert shift.nodes == ("shift",) and shift.inputs == ("m",)
    assert shift.activations == ("m",) and shift.allowed == WITH_INT8  # one Add of an activation (and a constant)
    assert "scale" not in {n for u in units.values() for n in u.nodes}


def test_pools_run_int8_where_tensorrt_has_int8_pooling():
    nodes = [helper.make_node("MaxPool", ["x"], ["a"], "maxpool", kernel_shape=[2, 2]),
             helper.make_node("AveragePool", ["a"], ["b"], "avgpool", kernel_shape=[2, 2]),
             helper.make_node("GlobalMaxPool", ["b"], ["c"], "gmax"),
             helper.make_node("GlobalAveragePool", ["b"], ["d"], "gavg"),
             helper.make_node("Add", ["c", "d"], ["y"], "sum")]
    units = _units(builders.model(nodes, [builders.fvi("x", [1, 2, 6, 6])], [builders.fvi("y", [1, 2, 1, 1])]))
    assert {n: u.kind for n, u in units.items()} == {"maxpool": "pool", "avgpool": "pool", "gmax": "pool",
                                                     "gavg": "pool", "sum": "region"}
    for name, act in (("maxpool", "x"), ("avgpool", "a"), ("gavg", "b")):
        assert units[name].activations == (act,) and units[name].allowed == WITH_INT8
    assert units["gmax"].activations == () and units["gmax"].allowed == FLOATS  # no INT8 global max pooling
    assert units["sum"].activations == ("c", "d") and units["sum"].allowed == WITH_INT8  # two activations
    assert units["maxpool"].main_op == "MaxPool"


def test_recurrent_units_run_fp16_only():
    rng = np.random.default_rng(0)
    inits = [builders.init("W", rng.standard_normal((1, 9, 4)).astype(np.float32)),
             builders.init("R", rng.standard_normal((1, 9, 3)).astype(np.float32))]
    nodes = [helper.make_node("GRU", ["x", "W", "R"], ["seq", "h"], "gru", hidden_size=3)]
    units = _units(builders.model(nodes, [builders.fvi("x", [2, 1, 4])], [builders.fvi("h", [1, 1, 3])], inits))
    gru = units["gru"]
    assert gru.kind == "recurrent" and gru.main_op == "GRU" and gru.allowed == (Precision.FP16,)
    assert gru.inputs == ("x",) and gru.outputs == ("h",)  # the unread sequence output is not handed on


def test_resize_never_casts_its_scales_and_integer_or_data_moving_ops_are_no_decision():
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], "resize", mode="nearest"),
             helper.make_node("Gather", ["r", "idx"], ["g"], "pick", axis=1),  # a Gather on an activation
             helper.make_node("Gather", ["itable", "ids"], ["ig"], "int_lookup"),  # an integer table
             helper.make_node("Add", ["ig", "ig"], ["i2"], "int_add"),
             helper.make_node("Cast", ["i2"], ["f"], "cast", to=TensorProto.FLOAT),
             helper.make_node("Identity", ["g"], ["y"], "id")]
    inits = [builders.init("idx", np.array([0], np.int64)),
             builders.init("itable", np.arange(10, dtype=np.int64).reshape(5, 2))]
    inputs = [builders.fvi("x", [1, 2, 3, 3]), builders.fvi("scales", [4]),
              helper.make_tensor_value_info("ids", TensorProto.INT64, [3])]
    m = builders.model(nodes, inputs, [builders.fvi("y", [1, 1, 6, 6]), builders.fvi("f", [3, 2])], inits)
    units = _units(m)
    assert list(units) == ["resize"]
    resize = units["resize"]
    assert resize.kind == "resize" and resize.inputs == ("x", "scales")
    assert resize.half_inputs == ("x",) and resize.casts == ("x",)  # float scales, yet kept FP32
    assert resize.allowed == FLOATS


def test_an_embedding_is_a_gather_from_a_float_table_only():
    rng = np.random.default_rng(1)
    table = builders.init("table", rng.standard_normal((6, 4)).astype(np.float32))
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], "embed"),
             helper.make_node("Gather", ["emb", "zero"], ["row"], "first_row")]  # moves activation data only
    m = builders.model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
                       [builders.fvi("row", [4])], [table, builders.init("zero", np.int64(0))])
    units = _units(m)
    assert list(units) == ["embed"]
    assert units["embed"].kind == "embedding" and units["embed"].inputs == ("ids",)
    assert units["embed"].half_inputs == () and units["embed"].allowed == FLOATS  # no float input to cast


def test_the_adds_a_gemm_leaves_form_the_regions_find_units_reports():
    from trt_mpq.network.units import find_units

    m = builders.norm_fanout()
    index = {n.name: k for k, n in enumerate(m.graph.node)}
    matmuls = {index["proj_a"], index["proj_b"]}
    units = _units(m, taken=matmuls)
    assert {n: u.nodes for n, u in units.items()} == {"norm": ("norm",), "join": ("join", "skip")}
    assert units["norm"].outputs == ("n",) and units["join"].inputs == ("a", "bb", "n")
    table = find_units(m).units  # proj_a absorbs the join Add as its residual: skip is left alone
    taken = {index[n] for u in table if u.kind == "gemm" for n in u.nodes}
    assert taken == matmuls | {index["join"]}
    assert [u for u in table if u.kind != "gemm"] == list(_units(m, taken).values())
    assert _units(m, taken)["skip"].allowed == WITH_INT8
