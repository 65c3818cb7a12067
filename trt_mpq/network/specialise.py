"""A model specialised on input values the deployment always feeds (``--fix sr=16000``): each fixed input
becomes a constant, and every If whose condition then depends on constants only is replaced by the branch it
takes, so the layers inside that branch become units. So is an If whose condition follows from a tensor's
shape once ``--shape`` fixes it (a head that checks its batch size: ``Shape(x)[0] >= 1``). Conditions are
evaluated with ONNX's reference evaluator. The specialised model no longer has the fixed inputs: the engine
built from it must not be fed them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ..errors import ConfigError
from .shapes import inferred, with_batch


def parse_fixed(items) -> dict[str, np.ndarray]:
    """``NAME=VALUE`` items (a number, or comma-separated numbers) as arrays; dtypes are set by the model."""
    out = {}
    for item in items or ():
        if isinstance(item, str):
            name, sep, text = item.partition("=")
            if not sep or not name or not text:
                raise ConfigError(f"--fix '{item}' is not NAME=VALUE (e.g. sr=16000).")
            try:
                values = [float(v) for v in text.split(",")]
            except ValueError:
                raise ConfigError(f"--fix '{item}': '{text}' is not a number (or numbers separated by "
                                  "commas).") from None
            out[name] = np.array(values[0] if len(values) == 1 else values)
        else:
            name, value = item
            out[name] = np.asarray(value)
    return out


def _constant_inputs_to_initializers(graph: onnx.GraphProto, fixed: Mapping[str, np.ndarray]) -> None:
    inputs = {i.name: i for i in graph.input}
    unknown = [n for n in fixed if n not in inputs]
    if unknown:
        raise ConfigError(f"--fix names '{unknown[0]}', which is not an input of the model "
                          f"(its inputs: {', '.join(inputs)}).")
    for name, value in fixed.items():
        tensor_type = inputs[name].type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        array = np.asarray(value).astype(dtype)
        if len(dims) != array.ndim or any(d is not None and d != n for d, n in zip(dims, array.shape, strict=True)):
            raise ConfigError(f"--fix {name}: the model wants shape {dims}, the value has {list(array.shape)}.")
        graph.initializer.append(numpy_helper.from_array(array, name))
    kept = [i for i in graph.input if i.name not in fixed]
    del graph.input[:]
    graph.input.extend(kept)


BATCHES = (1, 64)  # besides --shape's own: a condition on the batch size must hold for these too to be folded


def static_shapes(model: onnx.ModelProto, batch: int | None = None) -> dict[str, tuple[int, ...]]:
    """Tensors whose every dim ONNX's shape inference knows (after ``--shape``), with their dims; with
    ``batch``, a dynamic axis 0 of the inputs taken to be that."""
    known = inferred(with_batch(model, batch) if batch is not None else model)
    out = {}
    for vi in [*known.graph.input, *known.graph.value_info, *known.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape") and \
                all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    return out


def _shape_of(node: onnx.NodeProto, dims: tuple[int, ...]) -> np.ndarray:
    """What a Shape node returns for an input of ``dims`` (its start/end attributes applied)."""
    attrs = {a.name: a.i for a in node.attribute}
    return np.array(dims[attrs.get("start", 0):attrs.get("end", len(dims)) or None], np.int64)


def _constant_value(model: onnx.ModelProto, tensor: str, shapes: Mapping[str, tuple[int, ...]]
                    ) -> np.ndarray | None:
    """The value of ``tensor`` when it depends on initializers only, or on the shapes of tensors in
    ``shapes`` (a Shape node of one is a constant); None otherwise."""
    g = model.graph
    known = {t.name for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    needed, stack, shaped = {}, [tensor], []
    while stack:
        t = stack.pop()
        if not t or t in known:
            continue
        node = producer.get(t)
        if node is not None and node.op_type == "Shape" and node.input[0] in shapes:
            shaped.append(numpy_helper.from_array(_shape_of(node, shapes[node.input[0]]), t))
            known.add(t)
            continue
        if node is None or node.op_type in ("If", "Loop", "Scan"):  # a graph input, or not foldable
            return None
        if id(node) not in needed:
            needed[id(node)] = node
            stack.extend(node.input)
    order = [n for n in g.node if id(n) in needed]
    graph = helper.make_graph(order, "condition", [], [helper.make_tensor_value_info(tensor, 0, None)],
                              [*g.initializer, *shaped])
    probe = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return np.asarray(ReferenceEvaluator(probe).run(None, {})[0])


def _inline(graph: onnx.GraphProto, index: int, branch: onnx.GraphProto) -> None:
    """Replace the If at ``index`` by ``branch``'s nodes, its outputs renamed to the If's."""
    node = graph.node[index]
    rename = {b.name: o for b, o in zip(branch.output, node.output, strict=True)}
    inner = []
    for n in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.input[:] = [rename.get(x, x) for x in copy.input]
        copy.output[:] = [rename.get(x, x) for x in copy.output]
        inner.append(copy)
    for b, o in rename.items():  # a branch that returns an outer tensor as it is
        if not any(b in n.output for n in branch.node):
            inner.append(helper.make_node("Identity", [b], [o], f"{node.name}_{o}_identity"))
    graph.initializer.extend(branch.initializer)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[:index] + inner + nodes[index + 1:])


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nobody reads (the condition's arithmetic, once its If is gone)."""
    while True:
        used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
        for n in graph.node:  # tensors a subgraph reads from the outer scope
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    used |= {x for m in a.g.node for x in m.input}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            inits = [t for t in graph.initializer if t.name in used]
            del graph.initializer[:]
            graph.initializer.extend(inits)
            return
        kept = [n for n in graph.node if n not in dead]
        del graph.node[:]
        graph.node.extend(kept)


def specialise(model: onnx.ModelProto, fixed: Mapping[str, np.ndarray]) -> int:
    """Fix the inputs in ``fixed`` to their values (in place) and inline every If that becomes constant;
    return how many Ifs were inlined."""
    if not fixed:
        return 0
    _constant_inputs_to_initializers(model.graph, fixed)
    return inline_constant_ifs(model)


def inline_constant_ifs(model: onnx.ModelProto, batch: int | None = None) -> int:
    """Inline (in place) every If whose condition depends on constants only; with ``batch`` (the batch of
    ``--shape``), also on static shapes, when it comes out the same at that batch and at ``BATCHES`` (a check
    that the batch is not empty). How many were inlined."""
    inlined = 0
    while True:
        g = model.graph
        sets = [{}] if batch is None else [static_shapes(model, b) for b in dict.fromkeys((batch, *BATCHES))]
        for i, node in enumerate(g.node):
            if node.op_type != "If":
                continue
            values = [_constant_value(model, node.input[0], shapes) for shapes in sets]
            cond = values[0]
            if any(v is None for v in values) or any(bool(v.reshape(-1)[0]) != bool(cond.reshape(-1)[0])
                                                     for v in values):
                continue
            branches = {a.name: a.g for a in node.attribute}
            _inline(g, i, branches["then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"])
            inlined += 1
            break
        else:
            break
    _prune(model.graph)
    return inlined
