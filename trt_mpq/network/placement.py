"""Where every op of a graph stands: the unit that holds it, or why it is no precision decision."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx

from .shapes import TensorTable
from .units import UnitTable

FLOAT = onnx.TensorProto.FLOAT
# TensorRT moves precision across these: they run in whatever type their input arrives in
MOVES_DATA = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Slice", "Split", "Gather",
              "Pad", "DepthToSpace", "SpaceToDepth", "GatherElements", "ScatterND", "Dropout"}


@dataclass(frozen=True)
class Placement:
    node: str
    op_type: str
    unit: str | None  # the unit holding the op; None: no decision, see ``why``
    why: str = ""


def _why(node: onnx.NodeProto, types: dict[str, int], skipped: dict[str, str]) -> str:
    if node.name in skipped:
        return f"skipped: {skipped[node.name]}"
    if node.op_type == "Constant":
        return "constant"
    if node.op_type in ("If", "Loop", "Scan"):
        return "control flow (its subgraphs are not analysed)"
    if node.op_type == "Cast" or not any(types.get(o, 0) in (FLOAT, 0) for o in node.output if o):  # 0: unknown
        return "shape, index or type arithmetic (not float)"
    if node.op_type in MOVES_DATA:
        return "moves data: runs in the precision its input arrives in"
    return "no precision decision: runs FP32"


def placements(model: onnx.ModelProto, table: UnitTable, tensors: TensorTable) -> list[Placement]:
    """One Placement per node of the top-level graph, in graph order."""
    owner = {n: u.name for u in table.units for n in u.nodes}
    skipped = {s.node: s.reason for s in table.skipped}
    return [Placement(n.name, n.op_type, owner.get(n.name),
                      "" if n.name in owner else _why(n, tensors.types, skipped)) for n in model.graph.node]


def outside_summary(places: list[Placement]) -> dict[str, Counter]:
    """The ops outside every unit, counted by op type under each reason."""
    out: dict[str, Counter] = {}
    for p in places:
        if p.unit is None:
            out.setdefault(p.why, Counter())[p.op_type] += 1
    return out
