"""Small, pure helpers over an ONNX GraphProto: who produces and consumes what, reachability, cutting."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import onnx


def attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes by name, as Python values."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def named_subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) for the graphs a node holds (If branches, Loop/Scan bodies)."""
    out = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append((attr.name, attr.g))
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend((attr.name, g) for g in attr.graphs)
    return out


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held by a node's attributes."""
    return [g for _, g in named_subgraphs(node)]


def walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of the graph and, depth first, of the graphs its nodes hold."""
    for node in graph.node:
        yield node
        for g in subgraphs(node):
            yield from walk_nodes(g)


def _outer_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from its enclosing scope."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    defined |= {i.values.name for i in graph.sparse_initializer}  # a sparse tensor's name is its values'
    refs: set[str] = set()
    for node in graph.node:
        for name in node_inputs(node):
            if name and name not in defined:
                refs.add(name)
        defined.update(node.output)
    return refs


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Explicit inputs plus the outer-scope names its subgraphs use (an If reads them implicitly)."""
    names = [n for n in node.input if n]
    for g in subgraphs(node):
        names.extend(sorted(_outer_refs(g) - set(names)))
    return names


def producers(graph: onnx.GraphProto) -> dict[str, int]:
    """Tensor name -> index of the node that produces it."""
    return {out: i for i, node in enumerate(graph.node) for out in node.output if out}


def consumers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Tensor name -> indices of the nodes that read it (implicit subgraph reads included)."""
    result: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for name in dict.fromkeys(node_inputs(node)):
            result[name].append(i)
    return dict(result)


def constant_names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}


def descendants(graph: onnx.GraphProto, start: Iterable[int], cons: Mapping[str, list[int]] | None = None) -> set[int]:
    """The start nodes and every node that depends on one of their outputs (``cons``: ``consumers(graph)``,
    when the caller asks for many)."""
    cons = consumers(graph) if cons is None else cons
    seen = set(start)
    stack = list(seen)
    while stack:
        node = graph.node[stack.pop()]
        for out in node.output:
            for c in cons.get(out, ()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
    return seen


def ancestors(graph: onnx.GraphProto, tensors: Iterable[str]) -> set[int]:
    """The nodes that ``tensors`` depend on (their producers and everything upstream of them)."""
    prod = producers(graph)
    seen: set[int] = set()
    stack = [prod[t] for t in tensors if t in prod]
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        stack.extend(prod[i] for i in node_inputs(graph.node[k]) if i in prod)  # an If's branches read too
    return seen


def region_inputs(graph: onnx.GraphProto, region: set[int]) -> list[str]:
    """Tensors a set of nodes reads that none of them produces and that are not constants (its 'frontier')."""
    made = {out for i in region for out in graph.node[i].output}
    consts = constant_names(graph)
    seen: dict[str, None] = {}
    for i in sorted(region):
        for name in node_inputs(graph.node[i]):
            if name not in made and name not in consts:
                seen[name] = None
    return list(seen)


def extract_region(
    model: onnx.ModelProto,
    region: set[int],
    input_types: Mapping[str, tuple[np.dtype, int | list[int | None]]],
    name: str = "region",
) -> onnx.ModelProto:
    """A model holding only ``region``'s nodes; its inputs are the region's frontier, typed from
    ``input_types`` (name -> dtype and dims, None where dynamic, or just a rank), its outputs the model
    outputs the region produces."""
    graph = model.graph
    made = {out for i in region for out in graph.node[i].output}
    used = {n for i in region for n in node_inputs(graph.node[i])}
    inputs = []
    for n in region_inputs(graph, region):
        dtype, dims = input_types[n]
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        dims = [None] * dims if isinstance(dims, int) else list(dims)
        inputs.append(onnx.helper.make_tensor_value_info(n, elem, dims))
    outputs = [o for o in graph.output if o.name in made]
    new = onnx.helper.make_graph(
        [graph.node[i] for i in sorted(region)],
        name,
        inputs,
        outputs,
        initializer=[t for t in graph.initializer if t.name in used],
    )
    out = onnx.helper.make_model(new, opset_imports=model.opset_import, ir_version=model.ir_version)
    for entry in model.metadata_props:
        out.metadata_props.append(entry)
    return out


def stable_toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Order nodes so each comes after its producers, keeping the given order wherever it is already valid."""
    import heapq

    prod = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    deps: list[set[int]] = []
    users: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        d = {prod[x] for x in node_inputs(n) if x in prod and x not in available and prod[x] != i}
        deps.append(d)
        for j in d:
            users[j].append(i)
    ready = [i for i, d in enumerate(deps) if not d]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for u in users[i]:
            deps[u].discard(i)
            if not deps[u]:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle")
    return order
