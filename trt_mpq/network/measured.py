"""Where sensitivity is measured: the model's outputs, or tensors before them.

Detectors exported for TensorRT end in a plugin (``EfficientNMS_TRT``, ``BatchedNMSDynamic_TRT``) or a custom
op that no emulating backend runs. When every such op sits after the last unit (post-processing: nothing it
feeds is a convolution or GEMM), the analysis measures at the tensors that feed that tail (the pre-NMS boxes
and scores); the tail is left exactly as it is in the mixed ONNX, where TensorRT runs its plugins. Anywhere
else such an op stops the run with one sentence naming it. ``--outputs`` chooses the tensors outright (a
backbone's features, logits before an argmax); what does not lead to them is left out of the analysis and
kept as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import onnx
from onnx import helper

from ..errors import ConfigError
from .graph import ancestors, descendants, node_inputs
from .model import LoadedModel, tensor_spec
from .shapes import TensorTable
from .units import MAIN_OPS

RunsOp = Callable[[str, str], bool]  # (domain, op_type) -> whether the backend runs it


def describe(node: onnx.NodeProto) -> str:
    """``com.example:MyOp 'name'`` (the domain only where there is one)."""
    domain = node.domain if node.domain not in ("", "ai.onnx") else ""
    return f"{domain + ':' if domain else ''}{node.op_type} '{node.name}'"


@dataclass(frozen=True)
class MeasuredAt:
    """The tensors whose error defines sensitivity, and the nodes after them that the analysis leaves out."""

    outputs: tuple[str, ...]
    left_out: tuple[str, ...]  # ``describe`` of each node not measured (kept as it is in the mixed ONNX)
    why: str  # "--outputs" or the ops the backend cannot run

    def note(self) -> str:
        shown = ", ".join(self.left_out[:4]) + (f" and {len(self.left_out) - 4} more" if len(self.left_out) > 4
                                                  else "")
        return (f"sensitivity measured at {', '.join(self.outputs)} ({self.why}); left as they are, not "
                f"analysed: {shown}")


def _in_order(graph: onnx.GraphProto, indices: set[int]) -> list[onnx.NodeProto]:
    return [n for k, n in enumerate(graph.node) if k in indices]


def measured_at(model: onnx.ModelProto, asked: Sequence[str] | None, runs: RunsOp, backend: str
                ) -> MeasuredAt | None:
    """Where to measure ``model``: None for its own outputs; else the tensors (``--outputs`` when ``asked``,
    or those feeding a tail of ops ``backend`` cannot run). Raises ConfigError when that cannot work."""
    graph = model.graph
    made = {o for n in graph.node for o in n.output if o} | {i.name for i in graph.input}
    for name in asked or ():
        if name not in made:
            raise ConfigError(f"--outputs '{name}' is not a tensor of the model (give names of tensors its nodes "
                              "produce, e.g. from Netron).")
    needed = _in_order(graph, ancestors(graph, asked)) if asked else list(graph.node)
    foreign = [n for n in needed if not runs(n.domain, n.op_type)]
    if asked:
        if foreign:
            raise ConfigError(f"{backend} cannot run {describe(foreign[0])}, which --outputs "
                              f"{', '.join(asked)} depend on; register its implementation (onnxruntime: "
                              "--ort-custom-ops LIB.so) or measure before it.")
        kept = {id(n) for n in needed}
        left = tuple(describe(n) for n in graph.node if id(n) not in kept)
        return MeasuredAt(tuple(asked), left, "--outputs")
    if not foreign:
        return None
    foreign_ids = {id(n) for n in foreign}
    tail = _in_order(graph, descendants(graph, [k for k, n in enumerate(graph.node) if id(n) in foreign_ids]))
    units_after = [n for n in tail if n.op_type in MAIN_OPS]
    if units_after:
        raise ConfigError(f"{backend} cannot run {describe(foreign[0])}, and {len(units_after)} convolution/GEMM "
                          f"layer(s) follow it; register its implementation (onnxruntime: --ort-custom-ops "
                          "LIB.so) or measure before it with --outputs TENSOR,...")
    in_tail = {o for n in tail for o in n.output}
    weights = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    feeding = [i for n in tail for i in n.input if i and i not in in_tail and i not in weights]
    outputs = [o.name for o in graph.output if o.name not in in_tail]
    outputs = list(dict.fromkeys(outputs + feeding))
    ops = ", ".join(dict.fromkeys(describe(n).split(" ")[0] for n in foreign))
    if not outputs:
        raise ConfigError(f"{backend} cannot run {ops}, and nothing it can run comes before; there is nothing to "
                          "analyse (register the op's implementation: onnxruntime --ort-custom-ops LIB.so).")
    return MeasuredAt(tuple(outputs), tuple(describe(n) for n in tail), f"{backend} cannot run {ops}")


def cut(model: onnx.ModelProto, outputs: Sequence[str], tensors: TensorTable) -> onnx.ModelProto:
    """The part of ``model`` that ``outputs`` depend on, with them as its outputs (initializers it no longer
    reads dropped)."""
    graph = model.graph
    nodes = _in_order(graph, ancestors(graph, outputs))
    read = {i for n in nodes for i in node_inputs(n)} | set(outputs)  # subgraphs' reads of the weights too
    declared = {vi.name: vi for vi in [*graph.output, *graph.value_info]}
    outs = [declared[o] if o in declared else helper.make_tensor_value_info(o, tensors.types.get(o, 0), None)
            for o in outputs]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:], out.graph.output[:], out.graph.initializer[:]  # the inputs stay: the data feeds them
    out.graph.node.extend(nodes)
    out.graph.output.extend(outs)
    out.graph.initializer.extend(t for t in graph.initializer if t.name in read)
    return out


def measured_model(model: LoadedModel, outputs: Sequence[str], note: str | None = None) -> LoadedModel:
    """``model`` measured at ``outputs``: its ``proto`` the part they depend on, ``whole`` the complete graph
    (what the mixed ONNX is written from)."""
    part = cut(model.proto, outputs, model.tensors)
    return replace(model, proto=part, outputs=[tensor_spec(vi) for vi in part.graph.output], whole=model.proto,
                   measured=tuple(outputs), notes=[*model.notes, *([note] if note else [])])
