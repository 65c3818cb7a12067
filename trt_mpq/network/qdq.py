"""An already-quantized model (Q/DQ, as ModelOpt, ONNX Runtime's ``quantize_static`` and NNCF write them) back
to the float graph it was made from, keeping what the file decided.

- A DequantizeLinear of a constant (a weight, a bias, an INT4 block), or a QuantizeLinear + DequantizeLinear of
  a constant (fake-quantized weights), becomes the float constant it computes: the weights keep the file's
  rounding, which the analysis then measures from (not the original FP32 weights, which the file no longer has).
- A QuantizeLinear + DequantizeLinear on an activation is removed; its scale (and zero point) become the
  tensor's "shipped" threshold, one more candidate ``--calibrator auto`` tries. Where its range starts at zero
  (uint8 with zero point 0: ONNX Runtime's quantizer folds a ReLU or ReLU6 into the range and drops the node),
  a Clip to that range takes its place, so the float graph still computes what the file does.

Integer-operator formats (QLinearConv, ConvInteger, MatMulInteger, DynamicQuantizeLinear) are not Q/DQ and are
refused by the loader. Values are computed with ONNX's reference evaluator, so every type and layout ONNX
defines (per-tensor, per-axis, blocked, INT4, FP8) comes out as ONNX specifies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ..errors import ModelError

QDQ = {"QuantizeLinear", "DequantizeLinear"}
REFERENCE_OPSET = 21
FP8_MAX = {TensorProto.FLOAT8E4M3FN: 448.0, TensorProto.FLOAT8E4M3FNUZ: 240.0, TensorProto.FLOAT8E5M2: 57344.0,
           TensorProto.FLOAT8E5M2FNUZ: 57344.0}
INT_RANGE = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255), TensorProto.INT16: (-32768, 32767),
             TensorProto.UINT16: (0, 65535), TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}


@dataclass(frozen=True)
class Shipped:
    """What a Q/DQ file decided: each quantized activation's threshold (the symmetric |x| its scale covers)."""

    thresholds: dict[str, float] = field(default_factory=dict)
    weights: int = 0  # constants dequantized
    pairs: int = 0  # activation Q/DQ pairs removed

    def note(self) -> str:
        return (f"already quantized: {self.weights} dequantized constants folded (the weights keep the file's "
                f"rounding) and {self.pairs} activation Q/DQ pairs removed; their scales are each tensor's "
                "'shipped' threshold candidate")


def _value(model: onnx.ModelProto, inits: dict[str, TensorProto], nodes: list[onnx.NodeProto], output: str
           ) -> np.ndarray:
    """What ``nodes`` (on constants only) compute for ``output``."""
    needed = [inits[i] for n in nodes for i in n.input if i in inits]
    graph = helper.make_graph(nodes, "fold", [], [helper.make_tensor_value_info(output, 0, None)], needed)
    # the reference evaluator implements Q/DQ from opset 19 on; earlier opsets define the same arithmetic
    opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] + [REFERENCE_OPSET])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return np.asarray(ReferenceEvaluator(probe).run(None, {})[0])


def _range(inits: dict[str, TensorProto], q: onnx.NodeProto) -> tuple[float, float, bool]:
    """(symmetric |x| threshold, upper end, whether the range starts at zero) of a QuantizeLinear: TensorRT's
    INT8 and FP8 are symmetric, so an asymmetric uint8 range keeps its larger side as the threshold."""
    scale = np.abs(numpy_helper.to_array(inits[q.input[1]])).astype(np.float64)
    zp_t = inits.get(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    out_type = zp_t.data_type if zp_t is not None else next(
        (a.i for a in q.attribute if a.name == "output_dtype" and a.i), TensorProto.UINT8)
    if out_type in FP8_MAX:
        return float(np.max(scale) * FP8_MAX[out_type]), float(np.max(scale) * FP8_MAX[out_type]), False
    lo, hi = INT_RANGE.get(out_type, (-128, 127))
    zp = numpy_helper.to_array(zp_t).astype(np.float64) if zp_t is not None else np.zeros(1)
    if out_type == TensorProto.INT8 and np.all(zp == 0):
        lo = -127  # symmetric INT8 uses +-127
    threshold = float(np.max(scale * np.maximum(np.abs(lo - zp), np.abs(hi - zp))))
    return threshold, float(np.max(scale * (hi - zp))), bool(np.all(zp == lo))


def float_graph(model: onnx.ModelProto) -> Shipped:
    """Turn ``model`` (in place) into the float graph its Q/DQ nodes were added to; what they decided."""
    g = model.graph
    consts = {t.name for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    drop, folded, rename, thresholds, pairs = set(), [], {}, {}, 0
    inits = {t.name: t for t in g.initializer}
    clipped: dict[int, str] = {}  # id of a QuantizeLinear -> the Clip output standing in for it
    clips: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
    for n in g.node:
        if n.op_type != "DequantizeLinear":
            continue
        q = producer.get(n.input[0])
        if n.input[0] in consts:  # a dequantized constant
            folded.append(numpy_helper.from_array(_value(model, inits, [n], n.output[0]), n.output[0]))
            drop.add(id(n))
        elif q is not None and q.op_type == "QuantizeLinear" and q.input[0] in consts:  # fake-quantized constant
            folded.append(numpy_helper.from_array(_value(model, inits, [q, n], n.output[0]), n.output[0]))
            drop |= {id(n), id(q)} if all(r.op_type == "DequantizeLinear" for r in readers[q.output[0]]) else {id(n)}
        elif q is not None and q.op_type == "QuantizeLinear":  # an activation pair
            threshold, top, from_zero = _range(inits, q)
            x = q.input[0]
            if from_zero:  # a ReLU/ReLU6 the quantizer folded into the range: kept as a Clip
                if id(q) not in clipped:
                    clipped[id(q)] = f"{x}_clip"
                    clips.append((q, helper.make_node("Clip", [x, f"{x}_clip_min", f"{x}_clip_max"],
                                                      [f"{x}_clip"], f"{q.name}_clip")))
                    folded += [numpy_helper.from_array(np.float32(0), f"{x}_clip_min"),
                               numpy_helper.from_array(np.float32(top), f"{x}_clip_max")]
                x = clipped[id(q)]
            rename[n.output[0]] = x
            thresholds[x] = max(thresholds.get(x, 0.0), threshold)
            drop.add(id(n))
            if all(r.op_type == "DequantizeLinear" for r in readers[q.output[0]]):
                drop.add(id(q))
            pairs += 1
    left = sorted({n.op_type for n in g.node if n.op_type in QDQ and id(n) not in drop})
    if left:
        raise ModelError(f"the model's {' and '.join(left)} nodes do not come in Q/DQ pairs or on constants; "
                         "trt-mpq can read Q/DQ models (QuantFormat.QDQ) only as pairs, or start from the FP32 model.")
    for old, new in list(rename.items()):  # Q/DQ twice in a row: back to the float tensor
        while new in rename:
            new = rename[new]
        rename[old] = new
    after = {id(q): clip for q, clip in clips}
    kept = [m for n in g.node for m in ([n] if id(n) not in drop else []) + ([after[id(n)]] if id(n) in after else [])]
    for n in kept:
        n.input[:] = [rename.get(i, i) for i in n.input]
    outputs = {o.name for o in g.output}
    for old, new in rename.items():  # a graph output that was a DequantizeLinear's keeps its name
        if old in outputs:
            kept.append(helper.make_node("Identity", [new], [old], f"{old}_identity"))
    del g.node[:]
    g.node.extend(kept)
    read = {i for n in kept for i in n.input} | outputs
    kept_inits = [t for t in g.initializer if t.name in read] + folded
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    return Shipped(thresholds, len(folded) - 2 * len(clips), pairs)
