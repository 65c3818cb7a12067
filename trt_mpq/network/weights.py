"""Weights kept apart from the graph, so that the hundreds of models an analysis cuts, lowers and compiles
carry no weight bytes.

``split_weights`` replaces each large initializer of a model with a *placeholder*: the same name, type and
dims, its data marked external at the location ``BANK``. The arrays live once in a ``Weights`` bank. Copying,
cutting and serialising the placeholder model costs the size of its graph, not of its weights; a backend
receives the bank with the model and hands each array over without copying (ONNX Runtime:
``SessionOptions.add_external_initializers``) or fills the model first (``Weights.fill``). Lowering reads real
data, so the weights of the units being lowered are filled in before (``fill(model, names)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .graph import node_inputs

BANK = "trt-mpq-weights"  # the external-data location that marks a placeholder
MIN_BYTES = 1024  # smaller constants (scalars, shapes, axes) stay in the graph, where shape inference reads them


def is_placeholder(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == BANK for e in t.external_data)


def _placeholder(t: TensorProto) -> TensorProto:
    p = TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims), data_location=TensorProto.EXTERNAL)
    entry = p.external_data.add()
    entry.key, entry.value = "location", BANK
    return p


class Weights:
    """The arrays behind a model's placeholders, by initializer name; ``handles`` keeps per-backend views of
    them (ONNX Runtime's OrtValues) so each is made once and shared by every session."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self._handles: dict[str, dict[str, Any]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def __getstate__(self) -> dict:
        return {"arrays": self.arrays}  # sent to another process: the arrays; its backends make their own views

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["arrays"])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def handles(self, kind: str) -> dict[str, Any]:
        """A cache a backend keeps its own views of the arrays in (name -> handle)."""
        return self._handles.setdefault(kind, {})

    def placeholders(self, model: onnx.ModelProto) -> list[str]:
        """Names of the placeholders in ``model``'s graph (each must be in the bank)."""
        names = [t.name for t in model.graph.initializer if is_placeholder(t)]
        missing = [n for n in names if n not in self.arrays]
        if missing:
            raise KeyError(f"weights not in the bank: {', '.join(missing[:5])}")
        return names

    def fill(self, model: onnx.ModelProto, names: Iterable[str] | None = None) -> onnx.ModelProto:
        """A copy of ``model`` with the placeholders ``names`` (all when None) replaced by their data."""
        wanted = None if names is None else set(names)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for k, t in enumerate(out.graph.initializer):
            if is_placeholder(t) and (wanted is None or t.name in wanted):
                out.graph.initializer[k].CopyFrom(numpy_helper.from_array(self.arrays[t.name], t.name))
        return out

    def fill_for(self, model: onnx.ModelProto, node_names: Iterable[str]) -> onnx.ModelProto:
        """``model`` with the weights the named nodes read filled in (what lowering those nodes reads)."""
        wanted = set(node_names)
        reads = {n for node in model.graph.node if node.name in wanted for n in node_inputs(node)}
        return self.fill(model, reads & set(self.arrays))


def split_weights(model: onnx.ModelProto, min_bytes: int = MIN_BYTES) -> tuple[onnx.ModelProto, Weights]:
    """(the model with its large top-level initializers as placeholders, the bank holding them)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    arrays: dict[str, np.ndarray] = {}
    for k, t in enumerate(out.graph.initializer):
        if t.data_location == TensorProto.EXTERNAL:
            continue
        a = numpy_helper.to_array(t)
        if a.nbytes < min_bytes or a.dtype == object:
            continue
        arrays[t.name] = np.ascontiguousarray(a)
        out.graph.initializer[k].CopyFrom(_placeholder(t))
    return out, Weights(arrays)
