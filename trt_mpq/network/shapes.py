"""ONNX shape inference, run once per model: every tensor's element type and its per-sample shape.

Per-sample means a dynamic batch axis 0 of the graph inputs is fixed to 1 first, so the shapes the cost model
needs come out static; element types do not depend on it. Inference is best effort: an exotic op or a model
over 2 GB (which cannot be inferred in memory) leaves those tensors unknown rather than stopping the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx


@dataclass(frozen=True)
class TensorTable:
    types: dict[str, int] = field(default_factory=dict)  # tensor -> onnx.TensorProto element type (0: unknown)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # fully static per-sample shapes only


def format_dims(dims, sep: str = ", ") -> str:
    """``[1, ?, 128]``: None (unknown) as '?'."""
    return "[" + sep.join("?" if d is None else str(d) for d in dims) + "]"


def inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with ONNX's shape inference applied (with data propagation where it can follow it)."""
    for kwargs in ({"data_prop": True}, {}):
        try:
            return onnx.shape_inference.infer_shapes(model, strict_mode=False, **kwargs)
        except Exception:  # inference raises bare C++ errors on ops it cannot follow
            continue
    return model


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs' dynamic axis 0 is ``batch``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    return m


def infer_tensors(model: onnx.ModelProto) -> TensorTable:
    """Element types and static per-sample shapes of the model's tensors (initializers included)."""
    done = inferred(with_batch(model, 1))
    g = done.graph
    types, shapes = {}, {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        types[vi.name] = tt.elem_type
        dims = tt.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
        elif not dims and tt.HasField("shape"):
            shapes[vi.name] = ()
    for t in model.graph.initializer:
        types[t.name] = t.data_type
        shapes[t.name] = tuple(t.dims)
    return TensorTable(types, shapes)
