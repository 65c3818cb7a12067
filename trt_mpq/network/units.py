"""Split a graph into units: the groups of ONNX nodes TensorRT fuses and runs as one kernel.

A unit starts at a Conv, ConvTranspose, Gemm or MatMul and absorbs the pointwise epilogue TensorRT fuses into
it: BatchNormalization, bias/scale with constants, activations (Relu, Clip, Sigmoid, HardSigmoid, PRelu, ...),
gates that reconverge (SiLU ``x*sigmoid(x)``, HardSwish ``x*clip(x+3,0,6)/6``), and one residual Add whose
other input is an activation. TensorRT's explicit-quantization guidance puts Q/DQ on the residual input of
such an Add so the Add fuses into the convolution; the lowering does exactly that.
"""

from __future__ import annotations

import onnx

from ..artifacts import SkippedLayer as Skipped
from ..precision import Precision
from .graph import ancestors, attributes, constant_names, consumers, named_subgraphs
from .regions import other_units
from .shapes import TensorTable, infer_tensors
from .unit import Unit, UnitTable

__all__ = ["Unit", "UnitTable", "find_units"]

MAIN_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
POINTWISE = {
    "BatchNormalization", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
    "LeakyRelu", "PRelu", "Tanh", "Elu", "Selu", "Softplus", "Gelu", "Mish", "Celu", "ThresholdedRelu", "Erf",
}
_MAX_GATE_NODES = 6
FLOAT_TYPES = {onnx.TensorProto.FLOAT, 0}  # 0: type unknown to shape inference; the model is checked FP32


FP8_OPS = {"Conv", "Gemm", "MatMul"}  # TensorRT's FP8 kernels (not ConvTranspose)


def gemm_precisions(op: str, weight: onnx.TensorProto | None, axis: int | None) -> tuple[Precision, ...]:
    """INT8, FP16, BF16 and TF32 for every GEMM unit; FP8 for Conv, Gemm and MatMul; INT4 weights for a MatMul
    or Gemm with a constant 2-D weight (weight-only: nothing to quantize on an activation x activation MatMul)."""
    out = [Precision.INT8, Precision.FP16, Precision.BF16, Precision.TF32]
    if op in FP8_OPS:
        out.append(Precision.FP8)
    if op in ("MatMul", "Gemm") and weight is not None and len(weight.dims) == 2 and axis is not None:
        out.append(Precision.INT4)
    return tuple(out)


def _weight_axis(node: onnx.NodeProto, weight: onnx.TensorProto, weight_pos: int) -> int | None:
    """The output-channel axis TensorRT accepts for per-channel weight scales, None for per-tensor."""
    rank = len(weight.dims)
    attrs = attributes(node)
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if attrs.get("group", 1) == 1 else None
    if node.op_type == "Gemm":
        if weight_pos != 1:
            return None
        return 0 if attrs.get("transB", 0) else 1
    if node.op_type == "MatMul":
        return rank - 1 if weight_pos == 1 and rank >= 2 else None
    return None


class _Finder:
    def __init__(self, model: onnx.ModelProto, tensors: TensorTable):
        self.g = model.graph
        self.cons = consumers(self.g)
        self.consts = constant_names(self.g)
        self.graph_outputs = {o.name for o in self.g.output}
        self.types = tensors.types
        self.inits = {t.name: t for t in self.g.initializer}
        self.taken: set[int] = set()

    def live(self, node: onnx.NodeProto) -> list[str]:
        return [n for n in node.input if n and n not in self.consts]

    def _pointwise_free(self, i: int) -> bool:
        return i not in self.taken and self.g.node[i].op_type in POINTWISE

    def _single_step(self, out: str, residual_used: bool) -> tuple[list[int], str, str | None] | None:
        (c,) = self.cons[out]
        node = self.g.node[c]
        others = [n for n in self.live(node) if n != out]
        if not others and out in node.input:
            if node.op_type == "BatchNormalization" and len(node.output) > 1 and any(node.output[1:]):
                return None
            return [c], node.output[0], None
        if node.op_type == "Add" and len(others) == 1 and not residual_used and list(node.input).count(out) == 1:
            return [c], node.output[0], others[0]
        return None

    def _gate(self, out: str) -> tuple[list[int], str] | None:
        """A small pointwise DAG fed only by ``out`` (and constants) that reconverges to one tensor."""
        region = set(self.cons[out])
        for _ in range(4):
            if not all(self._pointwise_free(i) for i in region) or len(region) > _MAX_GATE_NODES:
                return None
            made = {o for i in region for o in self.g.node[i].output}
            inputs_ok = all(set(self.live(self.g.node[i])) <= made | {out} for i in region)
            exits = [
                i for i in region
                if any(o in self.graph_outputs or not set(self.cons.get(o, [])) <= region
                       for o in self.g.node[i].output)
            ]
            if inputs_ok and len(exits) == 1 and len(self.g.node[exits[0]].output) == 1:
                order = sorted(region)
                return order, self.g.node[exits[0]].output[0]
            grow = {c for i in region for o in self.g.node[i].output for c in self.cons.get(o, [])}
            grow = {c for c in grow if self._pointwise_free(c)}
            if grow <= region:
                return None
            region |= grow
        return None

    def epilogue(self, out: str) -> tuple[list[int], str, str | None]:
        absorbed: list[int] = []
        residual = None
        while out not in self.graph_outputs and self.cons.get(out):
            if len(self.cons[out]) == 1:
                if not self._pointwise_free(self.cons[out][0]):
                    break
                step = self._single_step(out, residual is not None)
                if step is None:
                    break
                nodes, out, res = step
                residual = residual or res
            else:
                gate = self._gate(out)
                if gate is None:
                    break
                nodes, out = gate
            absorbed.extend(nodes)
            self.taken.update(nodes)
        return absorbed, out, residual

    def unit(self, i: int, table: UnitTable) -> Unit | None:
        node = self.g.node[i]
        data_inputs = [n for n in node.input[:2] if n]
        if any(self.types.get(n, 0) not in FLOAT_TYPES for n in data_inputs):
            table.skipped.append(Skipped(node.name, node.op_type, "its inputs are not float32"))
            return None
        const_pos = [k for k, n in enumerate(node.input[:2]) if n in self.consts]
        if node.op_type in ("Conv", "ConvTranspose") and const_pos != [1]:
            table.skipped.append(Skipped(node.name, node.op_type, "its weight is computed at run time"))
            return None
        if len(const_pos) == 2:
            table.skipped.append(Skipped(node.name, node.op_type, "both inputs are constants (folded by TensorRT)"))
            return None
        weight = node.input[const_pos[0]] if const_pos else None
        axis = _weight_axis(node, self.inits[weight], const_pos[0]) if weight in self.inits else None
        self.taken.add(i)
        tail, out, residual = self.epilogue(node.output[0])
        members = sorted([i, *tail])
        acts = [n for n in node.input[:2] if n and n not in self.consts]
        if residual:
            acts.append(residual)
        made = {o for k in members for o in self.g.node[k].output}
        reads = list(dict.fromkeys(n for k in members for n in self.live(self.g.node[k]) if n not in made))
        return Unit(
            name=node.name,
            main_op=node.op_type,
            nodes=tuple(self.g.node[k].name for k in members),
            op_types=tuple(self.g.node[k].op_type for k in members),
            activations=tuple(dict.fromkeys(acts)),
            weight=weight,
            weight_axis=axis,
            inputs=tuple(reads),
            outputs=(out,),
            allowed=gemm_precisions(node.op_type, self.inits.get(weight) if weight else None, axis),
        )


def _condition_hint(graph: onnx.GraphProto, node: onnx.NodeProto) -> str:
    """What would decide a top-level If: --fix on the graph inputs its condition reads, --shape on a shape."""
    if node.op_type != "If":
        return ""
    upstream = [graph.node[k] for k in ancestors(graph, node.input[:1])]
    inputs = {i.name for i in graph.input}
    found = [t for t in dict.fromkeys([node.input[0], *(i for n in upstream for i in n.input)]) if t in inputs]
    shaped = any(n.op_type == "Shape" for n in upstream)
    if found and not shaped:
        return f"; --fix {sorted(found)[0]}=VALUE (what the deployment feeds) inlines the branch it takes"
    return "; --shape that fixes the shapes its condition reads inlines the branch it takes" if shaped else ""


def _skip_subgraph_layers(graph: onnx.GraphProto, where: str, table: UnitTable) -> None:
    for node in graph.node:
        hint = _condition_hint(graph, node) if not where else ""
        for attr, sg in named_subgraphs(node):
            label = f"{attr} of {node.op_type} '{node.name}'"
            for inner in sg.node:
                if inner.op_type in MAIN_OPS:
                    table.skipped.append(Skipped(
                        inner.name or inner.op_type, inner.op_type,
                        f"inside the {label}{where}: layers in control-flow subgraphs are not analysed yet{hint}",
                    ))
            _skip_subgraph_layers(sg, f" (in {label})", table)


def find_units(model: onnx.ModelProto, tensors: TensorTable | None = None) -> UnitTable:
    """Units of the top-level graph in graph order, and what was skipped and why. ``tensors``: the model's
    inferred tensors when already known (``LoadedModel.tensors``)."""
    tensors = tensors or infer_tensors(model)
    finder = _Finder(model, tensors)
    table = UnitTable()
    for i, node in enumerate(model.graph.node):
        if node.op_type in MAIN_OPS:
            unit = finder.unit(i, table)
            if unit is not None:
                table.units.append(unit)
    index = {n.name: i for i, n in enumerate(model.graph.node)}
    table.units += other_units(model, finder.taken, tensors)
    table.units.sort(key=lambda u: index[u.nodes[0]])
    _skip_subgraph_layers(model.graph, "", table)
    return table
