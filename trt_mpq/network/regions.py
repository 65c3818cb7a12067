"""Units for the float ops no GEMM unit absorbed, grouped the way TensorRT runs them.

- A LayerNormalization (and the other normalisations), a Softmax, a pooling layer, a Resize, an LSTM/GRU/RNN,
  an embedding lookup (a Gather from a weight table): each a unit of its own (TensorRT runs each as one kernel,
  or one Myelin region). Pooling may run INT8 (Q/DQ on its input, as TensorRT's INT8 pooling kernels read), the
  others FP16 or FP32. TensorRT has no INT8 LSTM/GRU/RNN layer in explicit quantization: recurrent units are
  FP16 or FP32.
- The elementwise and reduction ops between units (bias and mask arithmetic, GELU pieces a GEMM did not absorb,
  SE gates, pooling heads, an L2 normalisation): each connected group of them is one unit (a Myelin region),
  FP16 or FP32. A region that is one Add or Mul of activations (a residual Add no GEMM absorbed, a gate) may also
  run INT8, Q/DQ on its activation inputs (TensorRT's INT8 elementwise kernels). Concat stays FP16/FP32: TensorRT
  removes it by writing its inputs in place, so its precision is its producers'.
- Shape and index arithmetic (Shape, Gather on shapes, Range, Cast, comparisons, integer ops) and the ops
  TensorRT moves precision across (Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Identity, Slice) are no
  decision: they stay as written and never get a Cast.
"""

from __future__ import annotations

import onnx

from ..precision import Precision
from .graph import consumers
from .shapes import TensorTable
from .unit import Unit

FLOAT = onnx.TensorProto.FLOAT
NORMS = {"LayerNormalization", "InstanceNormalization", "GroupNormalization"}
SOFTMAX = {"Softmax", "LogSoftmax"}
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
INT8_POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool"}  # TensorRT's INT8 pooling kernels
RESIZE = {"Resize", "Upsample"}
RECURRENT = {"LSTM", "GRU", "RNN"}
EMBEDDING = {"Gather"}  # only a Gather from a float weight table (see _float_op)
INT8_ELEMENTWISE = {"Add", "Mul"}  # alone in a region, with activation inputs
STANDALONE = NORMS | SOFTMAX | POOLS | RESIZE | RECURRENT | EMBEDDING
ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Erf", "Tanh", "Sigmoid",
    "HardSigmoid", "HardSwish", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Softplus", "Gelu", "Mish", "Clip",
    "Min", "Max", "Mean", "Sum", "Where", "Expand", "Concat", "Tile", "BatchNormalization", "ReduceMean",
    "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare", "ReduceProd",
}
DECISION_OPS = STANDALONE | ELEMENTWISE
KEEP_TYPE = {"Resize": (1, 2), "Upsample": (1,)}  # roi and scales keep their own type


def kind_of(op_type: str) -> str:
    if op_type in NORMS:
        return "norm"
    if op_type in SOFTMAX:
        return "softmax"
    if op_type in POOLS:
        return "pool"
    if op_type in RESIZE:
        return "resize"
    if op_type in RECURRENT:
        return "recurrent"
    if op_type in EMBEDDING:
        return "embedding"
    return "region"


class _Regions:
    def __init__(self, model: onnx.ModelProto, taken: set[int], tensors: TensorTable) -> None:
        self.g = model.graph
        self.types = tensors.types
        self.consts = {t.name for t in self.g.initializer}
        self.cons = consumers(self.g)
        self.outputs = {o.name for o in self.g.output}
        self.taken = taken
        self.free = {i for i, n in enumerate(self.g.node) if i not in taken and self._float_op(n)}
        self.prod = {o: i for i, n in enumerate(self.g.node) for o in n.output if o}

    def _float_op(self, node: onnx.NodeProto) -> bool:
        """An op that computes in float32 (a float output and a float data input): a precision decision."""
        if node.op_type not in DECISION_OPS or not node.output or not node.output[0]:
            return False
        if node.op_type in EMBEDDING:  # a table lookup; a Gather on an activation only moves data
            return node.input[0] in self.consts and self.types.get(node.input[0]) == FLOAT
        keep = KEEP_TYPE.get(node.op_type, ())
        floats = [n for k, n in enumerate(node.input) if n and k not in keep and self.types.get(n) == FLOAT]
        return self.types.get(node.output[0]) == FLOAT and bool(floats)

    def _groups(self) -> list[list[int]]:
        """Standalone ops one by one; connected elementwise ops together (graph order)."""
        groups, seen = [], set()
        for i in sorted(self.free):
            if i in seen:
                continue
            if self.g.node[i].op_type in STANDALONE:
                groups.append([i])
                seen.add(i)
                continue
            group = self._connected(i, {c for c in self.free if c not in seen and
                                        self.g.node[c].op_type not in STANDALONE})
            seen |= group
            groups += self._convex(sorted(group))
        return groups

    def _convex(self, group: list[int]) -> list[list[int]]:
        """``group`` cut where a path leaves it through another unit and comes back (circular padding's
        Concat(Slice(e), e, Slice(e)) before a Conv and a Sub of e after it): a unit on both sides of another
        is no kernel TensorRT can run, and its downstream region would swallow that unit's input. Each member
        gets a stage, the most units crossed on a path from the group to it; each stage's connected parts are
        the units."""
        if len(group) == 1:
            return [group]
        members, stage, after = set(group), {}, {}  # after[k]: the stage a member reading node k would start at
        for k in range(group[0], group[-1] + 1):
            preds = [self.prod[x] for x in self.g.node[k].input if x in self.prod]
            if k in members:
                stage[k] = max([stage[p] if p in members else after.get(p, 0) for p in preds], default=0)
            else:
                crossing = k in self.taken or k in self.free  # a node of another unit
                after[k] = max([stage[p] + crossing if p in members else after.get(p, 0) for p in preds], default=0)
        if len(set(stage.values())) == 1:
            return [group]
        parts = []
        for level in sorted(set(stage.values())):
            left = {k for k in group if stage[k] == level}
            while left:
                part = self._connected(min(left), left)
                left -= part
                parts.append(sorted(part))
        return sorted(parts)

    def _connected(self, start: int, allowed: set[int]) -> set[int]:
        """The nodes of ``allowed`` joined to ``start`` by tensors that pass directly between them."""
        part, todo = set(), [start]
        while todo:
            k = todo.pop()
            if k in part:
                continue
            part.add(k)
            node = self.g.node[k]
            near = [c for o in node.output for c in self.cons.get(o, [])] + \
                [self.prod[x] for x in node.input if x in self.prod]
            todo += [c for c in near if c in allowed]
        return part

    def unit(self, members: list[int]) -> Unit:
        nodes = [self.g.node[k] for k in members]
        made = {o for n in nodes for o in n.output if o}
        reads = list(dict.fromkeys(x for n in nodes for x in n.input if x and x not in made and x not in self.consts))
        member_set = set(members)
        outs = [o for n in nodes for o in n.output if o and (o in self.outputs or
                                                            not set(self.cons.get(o, [])) <= member_set)]
        half = []
        for n in nodes:
            keep = KEEP_TYPE.get(n.op_type, ())
            half += [x for k, x in enumerate(n.input) if x in reads and k not in keep and self.types.get(x) == FLOAT]
        first = nodes[0]
        kind = kind_of(first.op_type) if len(nodes) == 1 else "region"
        acts: tuple[str, ...] = ()
        if kind == "pool" and first.op_type in INT8_POOLS:
            acts = tuple(x for x in first.input[:1] if x in reads)
        elif kind == "region" and len(nodes) == 1 and first.op_type in INT8_ELEMENTWISE:
            acts = tuple(x for x in first.input if x in half)
        floats = (Precision.FP16,) if kind == "recurrent" else (Precision.FP16, Precision.BF16)
        allowed = (Precision.INT8, *floats) if acts else floats
        return Unit(first.name, first.op_type if kind != "region" else "Region", tuple(n.name for n in nodes),
                    tuple(n.op_type for n in nodes), acts, None, None, tuple(reads), tuple(dict.fromkeys(outs)),
                    kind=kind, allowed=allowed, half_inputs=tuple(dict.fromkeys(half)))

    def units(self) -> list[Unit]:
        return [self.unit(g) for g in self._groups()]


def other_units(model: onnx.ModelProto, taken: set[int], tensors: TensorTable) -> list[Unit]:
    """Units for the float ops outside the GEMM units (``taken``: their node indices)."""
    return _Regions(model, taken, tensors).units()
