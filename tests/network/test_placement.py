"""Where each op of a graph stands (trt_mpq.network.placement): the unit that holds it, or the reason it is no
precision decision, and the summary of the ops outside every unit."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper

import builders
from trt_mpq.network.placement import Placement, outside_summary, placements
from trt_mpq.network.shapes import infer_tensors
from trt_mpq.network.unit import UnitTable
from trt_mpq.network.units import find_units

CONSTANT = "constant"
CONTROL = "control flow (its subgraphs are not analysed)"
NOT_FLOAT = "shape, index or type arithmetic (not float)"
MOVES = "moves data: runs in the precision its input arrives in"
FP32 = "no precision decision: runs FP32"
RUNTIME_WEIGHT = "skipped: its weight is computed at run time"


def _mixed() -> onnx.ModelProto:
    """A Conv+Relu unit, a Conv whose weight is an input, a CumSum (float, no unit), shape arithmetic, a Cast,
    a Flatten and a Softmax unit. x [1, 2, 3, 3], wx [2, 2, 1, 1] -> y [1, 18], sf [4]."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Constant", [], ["axis"], "axis_const", value=builders.init("v", np.array(1, np.int64))),
             helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], "relu"),
             helper.make_node("Conv", ["r", "wx"], ["d"], "dyn_conv"),
             helper.make_node("CumSum", ["d", "axis"], ["cs"], "cumsum"),
             helper.make_node("Shape", ["cs"], ["s"], "shape"),
             helper.make_node("Cast", ["s"], ["sf"], "cast", to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["cs"], ["f"], "flatten"),
             helper.make_node("Softmax", ["f"], ["y"], "soft")]
    return builders.model(nodes, [builders.fvi("x", [1, 2, 3, 3]), builders.fvi("wx", [2, 2, 1, 1])],
                          [builders.fvi("y", [1, 18]), builders.fvi("sf", [4])],
                          [builders.init("w", builders.conv_w(rng, 2, 2))])


def _places(model: onnx.ModelProto, table: UnitTable | None = None) -> list[Placement]:
    return placements(model, find_units(model) if table is None else table, infer_tensors(model))


def test_every_node_gets_its_unit_or_the_reason_it_has_none():
    got = [(p.node, p.op_type, p.unit, p.why) for p in _places(_mixed())]
    assert got == [
        ("axis_const", "Constant", None, CONSTANT),
        ("conv", "Conv", "conv", ""),
        ("relu", "Relu", "conv", ""),  # the fused epilogue is placed in its Conv's unit
        ("dyn_conv", "Conv", None, RUNTIME_WEIGHT),  # the finder's reason, before any other
        ("cumsum", "CumSum", None, FP32),
        ("shape", "Shape", None, NOT_FLOAT),
        ("cast", "Cast", None, NOT_FLOAT),  # a Cast is never a decision, even to float
        ("flatten", "Flatten", None, MOVES),
        ("soft", "Softmax", "soft", ""),
    ]


def test_outside_summary_counts_op_types_under_each_reason():
    summary = outside_summary(_places(_mixed()))
    assert summary == {CONSTANT: Counter({"Constant": 1}), RUNTIME_WEIGHT: Counter({"Conv": 1}),
                       FP32: Counter({"CumSum": 1}), NOT_FLOAT: Counter({"Shape": 1, "Cast": 1}),
                       MOVES: Counter({"Flatten": 1})}
    assert list(summary) == [CONSTANT, RUNTIME_WEIGHT, FP32, NOT_FLOAT, MOVES]  # in the order first met
    assert outside_summary([]) == {}


def test_control_flow_and_data_moves_on_integers():
    places = {p.node: p for p in _places(builders.batch_checked_head())}
    assert places["if"].unit is None and places["if"].why == CONTROL
    # Gather moves data, but here it picks a dimension of a shape: integer arithmetic
    assert places["batch"].op_type == "Gather" and places["batch"].why == NOT_FLOAT
    assert places["check"].why == NOT_FLOAT and places["shape"].why == NOT_FLOAT
    assert outside_summary(list(places.values())) == {
        NOT_FLOAT: Counter({"Shape": 1, "Gather": 1, "GreaterOrEqual": 1}), CONTROL: Counter({"If": 1})}


def test_without_units_float_ops_run_fp32_and_data_moves_keep_their_reason():
    places = _places(builders.conv_bn_relu_residual(), UnitTable())
    why = {p.node: p.why for p in places}
    assert all(p.unit is None for p in places)
    assert why["flatten"] == MOVES
    assert {n for n, w in why.items() if w == FP32} == {n.name for n in builders.conv_bn_relu_residual().graph.node
                                                        if n.name != "flatten"}


def test_every_unit_node_is_placed_in_its_unit_and_only_those():
    model = builders.conv_bn_relu_residual()
    table = find_units(model)
    places = _places(model, table)
    assert [p.node for p in places] == [n.name for n in model.graph.node]
    owner = {n: u.name for u in table.units for n in u.nodes}
    assert {p.node: p.unit for p in places} == {**owner, "flatten": None}  # every op but the Flatten
    assert all(p.why == "" for p in places if p.unit is not None)
    assert outside_summary(places) == {MOVES: Counter({"Flatten": 1})}


def test_an_op_whose_output_type_is_unknown_runs_fp32_not_as_arithmetic():
    m = builders.custom_op_inside()
    mine = [p for p in _places(m) if p.node == "mine"]
    assert len(mine) == 1 and mine[0].unit is None and mine[0].why == FP32  # a float tensor inference cannot type
