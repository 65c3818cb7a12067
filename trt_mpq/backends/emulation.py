"""What ONNX Runtime's CPU provider cannot run of a lowered model, rewritten into what it can (emulation).

BF16: the CPU provider has no bfloat16 Conv, MatMul or most other kernels, but it casts to and from bfloat16.
A BF16 island (inputs cast to bfloat16, weights stored as bfloat16, outputs cast back) becomes: inputs rounded
to bfloat16 and back (two Casts), weights stored as the float32 values of their bfloat16 roundings, the ops
computed in float32, and each output rounded to bfloat16 where it leaves the island. That is TensorRT's
arithmetic for a fused kernel (bfloat16 operands, float32 accumulation, a bfloat16 result) except for the
roundings between the ops inside one unit, which it leaves out: BF16 error is slightly under-estimated there.
TF32: a GEMM or convolution marked by the lowering reads its two operands rounded to TF32's 10-bit mantissa
(TensorRT's TF32 Tensor Core math, accumulation in float32); its weight exactly, its activations elementwise
(Veltkamp's split, see ``emulate_tf32``).
FP8 and INT4 Q/DQ run as they are (opset 19/21 kernels); FP16 islands run in FP16 kernels, but for Clip: the
CPU provider's float16 Clip is about 3x slower than a float32 Clip between two Casts (a quarter of an all-FP16
MobileNetV2's time), and a clip of float16 values to float16 bounds is exact in float32, so it runs there
(``emulate_fp16_clip``: the same bits, tests/backends/test_emulation.py).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def has_bf16(model: onnx.ModelProto) -> bool:
    g = model.graph
    return any(t.data_type == TensorProto.BFLOAT16 for t in g.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.BFLOAT16 for a in n.attribute)
        for n in g.node)


SHAPE_LIKE = {"Shape", "Size", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "IsNaN", "IsInf",
              "ArgMax", "ArgMin", "NonZero", "Not"}  # what they make is not a bfloat16 value


def _to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def emulate_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every BF16 island computed in float32 on bfloat16-rounded values (see module doc)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    bf16: set[str] = set()
    for k, t in enumerate(g.initializer):
        if t.data_type == TensorProto.BFLOAT16:
            values = numpy_helper.to_array(t).astype(np.float32)
            g.initializer[k].CopyFrom(numpy_helper.from_array(values, t.name))
            bf16.add(t.name)
    nodes = []
    for node in g.node:
        to = _to(node)
        if to == TensorProto.BFLOAT16:  # x -> bf16: round, and carry the rounded value in float32
            rounded = f"{node.output[0]}__bf16_rounded"
            nodes.append(helper.make_node("Cast", list(node.input), [rounded], f"{node.name}__bf16", to=to))
            nodes.append(helper.make_node("Cast", [rounded], list(node.output), node.name, to=TensorProto.FLOAT))
            bf16.add(node.output[0])
        elif to is not None and node.input[0] in bf16:  # leaves an island: the op's float32 result rounded
            rounded = f"{node.output[0]}__bf16_rounded"
            nodes.append(helper.make_node("Cast", [node.input[0]], [rounded], f"{node.name}__bf16",
                                          to=TensorProto.BFLOAT16))
            nodes.append(helper.make_node("Cast", [rounded], list(node.output), node.name, to=to))
        else:
            if node.op_type not in SHAPE_LIKE and any(i in bf16 for i in node.input):
                bf16.update(o for o in node.output if o)
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    keep = [v for v in g.value_info if v.name not in bf16]
    del g.value_info[:]
    g.value_info.extend(keep)
    return out


MATH_KEY = "trt_mpq.math"  # set by the lowering on the GEMM node of a TF32 unit
TF32_DROP = 13  # float32 keeps 23 mantissa bits, TF32 10


def has_tf32(model: onnx.ModelProto) -> bool:
    return any(e.key == MATH_KEY and e.value == "tf32" for n in model.graph.node for e in n.metadata_props)


def tf32_round(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to TF32's 10-bit mantissa (round to nearest, ties to even), kept as float32."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    half = (1 << (TF32_DROP - 1)) - 1 + ((bits >> TF32_DROP) & 1)
    out = ((bits + half) >> TF32_DROP << TF32_DROP).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(a), out, a).astype(np.float32)


def emulate_tf32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with each TF32-marked GEMM/convolution reading operands rounded to TF32: its weight rounded
    exactly (``tf32_round``), its activations elementwise by Veltkamp's split (c = x * (2^13 + 1),
    x' = c - (c - x): x to 11 significant bits, to nearest), infinities and NaN kept as they are."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: k for k, t in enumerate(g.initializer)}
    g.initializer.append(numpy_helper.from_array(np.array(2.0 ** TF32_DROP + 1, np.float32), "__tf32_split"))
    nodes, done = [], {}
    for node in g.node:
        if not any(e.key == MATH_KEY and e.value == "tf32" for e in node.metadata_props):
            nodes.append(node)
            continue
        for k in range(min(2, len(node.input))):  # the two GEMM operands; a bias is added in float32
            name = node.input[k]
            if name in inits:
                t = g.initializer[inits[name]]
                if t.data_type == TensorProto.FLOAT:
                    rounded = f"{name}__tf32"
                    if rounded not in done:
                        g.initializer.append(numpy_helper.from_array(tf32_round(numpy_helper.to_array(t)), rounded))
                        done[rounded] = rounded
                    node.input[k] = rounded
                continue
            if name not in done:
                p = f"{name}__tf32"
                nodes += [
                    helper.make_node("Mul", [name, "__tf32_split"], [f"{p}_c"]),
                    helper.make_node("Sub", [f"{p}_c", name], [f"{p}_d"]),
                    helper.make_node("Sub", [f"{p}_c", f"{p}_d"], [f"{p}_hi"]),
                    helper.make_node("IsInf", [f"{p}_c"], [f"{p}_big"]),  # x*8193 overflowed: keep x
                    helper.make_node("Where", [f"{p}_big", name, f"{p}_hi"], [p]),
                ]
                done[name] = p
            node.input[k] = done[name]
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    return out


def _fp16_clips(model: onnx.ModelProto) -> list[int]:
    """Clip nodes of an FP16 island: their bounds are float16 constants (the lowering stores them so)."""
    half = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT16}
    return [i for i, n in enumerate(model.graph.node)
            if n.op_type == "Clip" and len(n.input) > 1 and all(b in half for b in n.input[1:] if b)]


def has_fp16_clip(model: onnx.ModelProto) -> bool:
    return bool(_fp16_clips(model))


def emulate_fp16_clip(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every float16 Clip computed in float32 between Casts (the same bits, faster)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    wide: dict[str, str] = {}
    nodes = list(g.node)
    for i in reversed(_fp16_clips(out)):
        clip = nodes[i]
        bounds = []
        for b in clip.input[1:]:
            if b and b not in wide:
                wide[b] = f"{b}_fp32"
                g.initializer.append(numpy_helper.from_array(
                    numpy_helper.to_array(inits[b]).astype(np.float32), wide[b]))
            bounds.append(wide[b] if b else "")
        x, y = clip.input[0], clip.output[0]
        nodes[i:i + 1] = [helper.make_node("Cast", [x], [f"{y}_in_fp32"], f"{clip.name}_in_fp32", to=TensorProto.FLOAT),
                          helper.make_node("Clip", [f"{y}_in_fp32", *bounds], [f"{y}_fp32"], clip.name),
                          helper.make_node("Cast", [f"{y}_fp32"], [y], f"{clip.name}_to_fp16", to=TensorProto.FLOAT16)]
    del g.node[:]
    g.node.extend(nodes)
    return out
