"""Graph helpers (trt_mpq.network.graph): producers and consumers, implicit reads of If branches, reachability,
region frontiers, cutting a region out as a model that computes the same bits, and the stable topological sort."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import builders
from trt_mpq.network.graph import (
    ancestors,
    attributes,
    constant_names,
    consumers,
    descendants,
    extract_region,
    named_subgraphs,
    node_inputs,
    producers,
    region_inputs,
    stable_toposort,
    subgraphs,
    walk_nodes,
)


def _index(model: onnx.ModelProto) -> dict[str, int]:
    return {n.name: i for i, n in enumerate(model.graph.node)}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _exposing(model: onnx.ModelProto, tensors: dict[str, list]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors`` (float, name -> shape)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.extend(builders.fvi(t, shape) for t, shape in tensors.items())
    return out


def _branch_reads_intermediate() -> onnx.ModelProto:
    """relu(x) -> r; If(c): then Conv(r, w_then) + bias, else Neg(r). The branches read r and the weights from
    the enclosing scope (implicit inputs of the If), never as explicit inputs. x [1, 2, 3, 3] -> y [1, 2, 3, 3]."""
    rng = np.random.default_rng(0)
    then = helper.make_graph([helper.make_node("Conv", ["r", "w_then"], ["ct"], "conv_then"),
                              helper.make_node("Add", ["ct", "bias"], ["yt"], "bias_then")],
                             "then", [], [builders.fvi("yt", [1, 2, 3, 3])])
    other = helper.make_graph([helper.make_node("Neg", ["r"], ["ye"], "neg_else")], "else", [],
                              [builders.fvi("ye", [1, 2, 3, 3])])
    nodes = [helper.make_node("Relu", ["x"], ["r"], "relu"),
             helper.make_node("If", ["c"], ["y"], "if", then_branch=then, else_branch=other)]
    inits = [builders.init("w_then", builders.conv_w(rng, 2, 2, 1)),
             builders.init("bias", rng.standard_normal((1, 2, 1, 1)).astype(np.float32)),
             builders.init("unused", np.ones(3, np.float32))]
    inputs = [builders.fvi("x", [1, 2, 3, 3]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])]
    return builders.model(nodes, inputs, [builders.fvi("y", [1, 2, 3, 3])], inits)


# ----------------------------------------------------------------------------------------------- node helpers


def test_attributes_are_python_values():
    g = builders.conv_bn_relu_residual().graph
    conv, fc = g.node[0], g.node[-1]
    assert attributes(conv) == {"pads": [1, 1, 1, 1]}
    assert attributes(fc) == {"transB": 1}
    assert attributes(g.node[2]) == {}


def test_subgraphs_of_graph_and_graphs_attributes():
    a = helper.make_graph([], "a", [], [])
    b = helper.make_graph([], "b", [], [])
    node = helper.make_node("Custom", ["x"], ["y"], "n", body=a, alpha=1.0)
    node.attribute.append(helper.make_attribute("bodies", [b, a]))
    assert [(attr, g.name) for attr, g in named_subgraphs(node)] == [("body", "a"), ("bodies", "b"), ("bodies", "a")]
    assert [g.name for g in subgraphs(node)] == ["a", "b", "a"]
    assert subgraphs(helper.make_node("Relu", ["x"], ["y"])) == []


def test_walk_nodes_visits_branches_depth_first():
    names = [n.name for n in walk_nodes(_branch_reads_intermediate().graph)]
    # make_node stores attributes sorted by name: else_branch comes before then_branch
    assert names == ["relu", "if", "neg_else", "conv_then", "bias_then"]


def test_node_inputs_add_the_outer_names_a_branch_reads():
    g = _branch_reads_intermediate().graph
    # explicit inputs first, then each branch's outer-scope names (sorted; else_branch's first), each once
    assert node_inputs(g.node[1]) == ["c", "r", "bias", "w_then"]
    assert node_inputs(g.node[0]) == ["x"]


def test_node_inputs_skip_empty_optional_inputs_and_names_defined_inside():
    clip = helper.make_node("Clip", ["x", "", "hi"], ["y"])
    assert node_inputs(clip) == ["x", "hi"]
    body = helper.make_graph([helper.make_node("Add", ["i", "outer"], ["t"]),
                              helper.make_node("Mul", ["t", "k"], ["o"])],  # k: its own constant
                             "body", [builders.fvi("i", [1])], [builders.fvi("o", [1])],
                             [builders.init("k", np.ones(1, np.float32))])
    node = helper.make_node("Custom", ["outer"], ["y"], body=body)
    assert node_inputs(node) == ["outer"]  # read both explicitly and in the body: listed once
    nested = helper.make_graph([helper.make_node("Custom", [], ["o"], body=helper.make_graph(
        [helper.make_node("Relu", ["deep"], ["z"])], "inner", [], []))], "outer", [], [])
    assert node_inputs(helper.make_node("Custom", [], ["y"], body=nested)) == ["deep"]  # two scopes out


# ----------------------------------------------------------------------------------------------- producers, consumers


def test_producers_and_consumers_of_a_residual_block():
    m = builders.conv_bn_relu_residual()
    g, ix = m.graph, _index(m)
    prod = producers(g)
    assert prod["r1"] == ix["relu1"] and prod["y"] == ix["fc"] and "x" not in prod and "w1" not in prod
    assert len(prod) == len(g.node)
    cons = consumers(g)
    assert cons["r1"] == [ix["conv2"], ix["add"]]  # the fan-out to the residual Add
    assert cons["x"] == [ix["conv1"]] and cons["w2"] == [ix["conv2"]]
    assert "y" not in cons  # a graph output no node reads


def test_a_node_reading_a_tensor_twice_consumes_it_once_and_implicit_reads_count():
    sq = builders.model([helper.make_node("Mul", ["x", "x"], ["y"], "square")], [builders.fvi("x", [2])],
                        [builders.fvi("y", [2])])
    assert consumers(sq.graph) == {"x": [0]}
    g = _branch_reads_intermediate().graph
    cons = consumers(g)
    assert cons["r"] == [1] and cons["w_then"] == [1] and cons["c"] == [1]


def test_producers_skip_empty_optional_outputs():
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "", ""], "bn")
    g = helper.make_graph([node], "g", [], [])
    assert producers(g) == {"y": 0}


def test_constant_names_are_the_initializers():
    assert constant_names(_branch_reads_intermediate().graph) == {"w_then", "bias", "unused"}
    assert constant_names(builders.constant_weights().graph) == set()  # Constant nodes are not initializers


# ----------------------------------------------------------------------------------------------- reachability


def test_descendants_follow_every_consumer_and_implicit_reads():
    m = builders.conv_bn_relu_residual()
    g, ix = m.graph, _index(m)
    got = descendants(g, [ix["relu1"]])
    assert got == set(range(ix["relu1"], len(g.node)))  # conv2 and the residual Add both depend on r1
    assert descendants(g, [ix["relu2"]]) == {ix[n] for n in ("relu2", "add", "relu3", "gap", "flatten", "fc")}
    assert descendants(g, [ix["relu2"]], consumers(g)) == descendants(g, [ix["relu2"]])
    assert descendants(g, []) == set()
    assert descendants(_branch_reads_intermediate().graph, [0]) == {0, 1}  # the If reads r inside its branches


def test_ancestors_are_every_node_upstream_of_the_tensors():
    m = builders.conv_bn_relu_residual()
    g, ix = m.graph, _index(m)
    assert ancestors(g, ["s"]) == {ix[n] for n in ("conv1", "bn1", "relu1", "conv2", "relu2", "add")}
    assert ancestors(g, ["c1", "r1"]) == {ix["conv1"], ix["bn1"], ix["relu1"]}
    assert ancestors(g, ["x", "w1", "not_a_tensor"]) == set()  # inputs and constants have no producer
    assert ancestors(_branch_reads_intermediate().graph, ["y"]) == {0, 1}  # the If's branches read relu's r


def test_a_sparse_initializer_is_a_constant_under_its_values_name():
    m = builders.conv_bn_relu_residual()
    values = helper.make_tensor("sparse_w", TensorProto.FLOAT, [2], [1.0, 2.0])
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(values, helper.make_tensor(
        "idx", TensorProto.INT64, [2], [0, 3]), [4]))
    assert "sparse_w" in constant_names(m.graph)


def test_region_inputs_are_the_frontier_without_constants():
    m = builders.conv_bn_relu_residual()
    g, ix = m.graph, _index(m)
    assert region_inputs(g, {ix[n] for n in ("conv2", "relu2", "add")}) == ["r1"]
    assert region_inputs(g, {ix["add"]}) == ["r2", "r1"]  # in node-input order
    assert region_inputs(g, {ix["conv1"], ix["bn1"]}) == ["x"]
    assert region_inputs(_branch_reads_intermediate().graph, {1}) == ["c", "r"]  # an implicit read is frontier


# ----------------------------------------------------------------------------------------------- extract_region


def test_a_middle_region_computes_the_bits_the_whole_model_computes():
    m = builders.conv_bn_relu_residual()
    ix = _index(m)
    probe = _exposing(m, {"r1": ["N", 4, 8, 8], "s": ["N", 4, 8, 8]})
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)}
    whole = _run(probe, feeds)
    region = {ix[n] for n in ("conv2", "relu2", "add")}
    sub = extract_region(probe, region, {"r1": (np.float32, ["N", 4, 8, 8])}, name="middle")
    onnx.checker.check_model(sub)
    assert sub.graph.name == "middle"
    assert [i.name for i in sub.graph.input] == ["r1"] and [o.name for o in sub.graph.output] == ["s"]
    assert {t.name for t in sub.graph.initializer} == {"w2", "b2"}  # only what the region reads
    assert [n.name for n in sub.graph.node] == ["conv2", "relu2", "add"]
    part = _run(sub, {"r1": whole["r1"]})
    np.testing.assert_array_equal(part["s"], whole["s"])


def test_a_region_holding_an_if_brings_what_its_branches_read():
    m = _branch_reads_intermediate()
    m.metadata_props.append(onnx.StringStringEntryProto(key="origin", value="test"))
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 3)).astype(np.float32)
    probe = _exposing(m, {"r": [1, 2, 3, 3]})
    sub = extract_region(probe, {1}, {"c": (np.bool_, []), "r": (np.float32, 4)})
    onnx.checker.check_model(sub)
    assert {t.name for t in sub.graph.initializer} == {"w_then", "bias"}  # read only inside the branch
    dims = [d for d in sub.graph.input[1].type.tensor_type.shape.dim]
    assert len(dims) == 4 and not any(d.HasField("dim_value") for d in dims)  # a rank: every axis dynamic
    assert sub.graph.input[0].type.tensor_type.elem_type == TensorProto.BOOL
    assert [(e.key, e.value) for e in sub.metadata_props] == [("origin", "test")]
    assert sub.ir_version == m.ir_version and list(sub.opset_import) == list(m.opset_import)
    results = []
    for c in (True, False):
        whole = _run(probe, {"x": x, "c": np.array(c)})
        part = _run(sub, {"c": np.array(c), "r": whole["r"]})
        np.testing.assert_array_equal(part["y"], whole["y"])
        results.append(part["y"])
    assert not np.array_equal(*results)  # both branches really ran


# ----------------------------------------------------------------------------------------------- stable_toposort


def _chain() -> list[onnx.NodeProto]:
    return [helper.make_node("Relu", ["x"], ["a"], "a"), helper.make_node("Relu", ["a"], ["b"], "b"),
            helper.make_node("Relu", ["x"], ["c"], "c"), helper.make_node("Add", ["b", "c"], ["d"], "d")]


def test_toposort_keeps_a_valid_order():
    nodes = _chain()
    assert [n.name for n in stable_toposort(nodes, {"x"})] == ["a", "b", "c", "d"]


def test_toposort_moves_only_what_must_move():
    a, b, c, d = _chain()
    assert [n.name for n in stable_toposort([d, b, c, a], {"x"})] == ["c", "a", "b", "d"]
    # a tensor already available is no dependency, even when a listed node produces it
    assert [n.name for n in stable_toposort([b, a], {"x", "a"})] == ["b", "a"]


def test_toposort_orders_by_implicit_branch_reads():
    g = _branch_reads_intermediate().graph
    relu, if_node = g.node
    assert [n.name for n in stable_toposort([if_node, relu], {"x", "c"})] == ["relu", "if"]


def test_toposort_rejects_a_cycle():
    loop = [helper.make_node("Relu", ["b"], ["a"], "a"), helper.make_node("Relu", ["a"], ["b"], "b")]
    with pytest.raises(ValueError, match="graph has a cycle"):
        stable_toposort(loop, set())
