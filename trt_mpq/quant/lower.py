"""Lowering: model + plan + ranges -> one ONNX model whose graph carries the precisions.

TensorRT 11 builds precision from the graph (strong typing), and ONNX Runtime runs the same file, so this one
pure function produces what both the CPU emulation and the GPU build consume:

- INT8: QuantizeLinear -> DequantizeLinear on each activation input of the unit (per-tensor, symmetric,
  zero point 0) and on the residual input of a fused Add; the weight is stored as an int8 initializer with a
  per-channel DequantizeLinear on the axis TensorRT expects (Conv 0, ConvTranspose 1, Gemm/MatMul N).
  Biases stay FP32 (TensorRT folds them in higher precision); with ``ranges.bias_correction`` each one is
  corrected for the mean shift its quantized weight causes (``quant.bias``), and ``ranges.weight_scales``
  says how weight scales are set.
- FP8 (E4M3): as INT8, with float8e4m3fn zero points: per-tensor activation scales threshold / 448 (max, or
  what ``--calibrator auto`` measured best: ``ranges.fp8_amax``), per-channel weight scales max|w| / 448, the
  weight stored as FP8.
- FP16 / BF16: Cast to float16 / bfloat16 on the unit's inputs, every float constant of the unit stored in
  that type, Cast back to float32 on what the unit hands on. Back-to-back Casts between islands are removed by
  TensorRT.
- INT4 (weights only): the FP16 island, with the weight of a MatMul/Gemm stored as int4 in blocks of
  ``ranges.int4_block`` along K (symmetric, scale max|w| / 7 per block and output channel, FP16 scales) behind
  a block-wise DequantizeLinear (opset 21).
- TF32: nothing changes in the graph (TensorRT's TF32 is a builder flag); the unit's GEMM node is marked
  (metadata ``trt_mpq.math = tf32``) so that the CPU backend emulates its rounding (backends.emulation).
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ConfigError
from ..network.graph import constant_names, node_inputs, stable_toposort
from ..network.regions import KEEP_TYPE
from ..network.units import Unit
from ..precision import Plan, Precision
from .bias import output_shift
from .ranges import FP8_MAX, INT4_BLOCK, INT4_MAX, INT8_MAX, Ranges, weight_scales

HALF = {Precision.FP16: (TensorProto.FLOAT16, np.float16), Precision.BF16: (TensorProto.BFLOAT16, ml_dtypes.bfloat16),
        Precision.INT4: (TensorProto.FLOAT16, np.float16)}  # an island's ONNX type and numpy type
_ZERO = {Precision.INT8: np.int8, Precision.FP8: ml_dtypes.float8_e4m3fn}  # zero point types (their Q output types)
MATH_KEY = "trt_mpq.math"  # node metadata: the arithmetic TensorRT will use for it (tf32)
_ZERO_TYPES = {np.dtype(np.int8), np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.int4)}


QDQ_TAGS = ("", "_fp8")  # Q/DQ names: INT8 after the tensor itself, FP8 after tensor_fp8
HALF_TAGS = ("fp16", "bf16")  # Cast island names


def lowered_names(tensor: str, weight: bool = False) -> tuple[list[str], list[str]]:
    """(tensors, nodes) the lowering names after a unit's input ``tensor`` (a ``weight`` gets DequantizeLinear
    nodes only): how TensorRT's layer names and a layer's inputs map back to the unit."""
    if weight:
        return [], [f"{tensor}{tag}_DequantizeLinear" for tag in (*QDQ_TAGS, "_int4")]
    tensors = [f"{tensor}{tag}_{kind}" for tag in QDQ_TAGS for kind in ("quantized", "dequantized")]
    nodes = [f"{tensor}{tag}_{op}" for tag in QDQ_TAGS for op in ("QuantizeLinear", "DequantizeLinear")]
    return tensors + [f"{tensor}_{h}" for h in HALF_TAGS], nodes + [f"{tensor}_cast_{h}" for h in HALF_TAGS]


class _Rewriter:
    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.g = self.model.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self.node_by_name = {n.name: n for n in self.g.node}
        self.before: dict[str, list[onnx.NodeProto]] = {}  # new nodes to place before a unit's first node
        self.after: dict[str, list[onnx.NodeProto]] = {}  # new nodes to place after a unit's last node
        self.shared: dict[str, str] = {}  # (kind:tensor) -> replacement tensor, so a pair is made once
        self.retyped: set[str] = set()

    def _add_init(self, array: np.ndarray, name: str) -> str:
        if name not in self.inits:
            t = numpy_helper.from_array(array, name)
            self.g.initializer.append(t)
            self.inits[name] = self.g.initializer[-1]
        return name

    def _rewire(self, nodes: Sequence[onnx.NodeProto], old: str, new: str) -> None:
        for node in nodes:
            for k, name in enumerate(node.input):
                if name == old:
                    node.input[k] = new

    def qdq_activation(self, unit: Unit, tensor: str, scale: float, readers: list[onnx.NodeProto],
                       p: Precision = Precision.INT8) -> None:
        key = f"qdq:{p.value}:{tensor}"
        if key not in self.shared:
            base = tensor if p is Precision.INT8 else f"{tensor}_{p.value}"
            s = self._add_init(np.array(scale, np.float32), f"{base}_scale")
            z = self._add_init(np.array(0, _ZERO[p]), f"{base}_zero_point")
            q = helper.make_node("QuantizeLinear", [tensor, s, z], [f"{base}_quantized"], f"{base}_QuantizeLinear")
            dq = helper.make_node(
                "DequantizeLinear", [q.output[0], s, z], [f"{base}_dequantized"], f"{base}_DequantizeLinear"
            )
            self.before.setdefault(unit.nodes[0], []).extend([q, dq])
            self.shared[key] = dq.output[0]
        self._rewire(readers, tensor, self.shared[key])

    def qdq_weight(self, unit: Unit, main: onnx.NodeProto, ranges: Ranges, p: Precision = Precision.INT8) -> None:
        w = numpy_helper.to_array(self.inits[unit.weight])
        shape = [1] * w.ndim
        if unit.weight_axis is not None:
            shape[unit.weight_axis] = -1
        if p is Precision.FP8:
            scales = weight_scales(w, unit.weight_axis, "max") * INT8_MAX / FP8_MAX
            q = (w / scales.reshape(shape)).astype(ml_dtypes.float8_e4m3fn)
        else:
            scales = ranges.int8_weight_scales(unit.weight, w, unit.weight_axis)
            q = np.clip(np.round(w / scales.reshape(shape)), -INT8_MAX - 1, INT8_MAX).astype(np.int8)
        use_mean = ranges.bias_correction and unit.activations and p is Precision.INT8
        mean = ranges.means.get(unit.activations[0]) if use_mean else None
        if mean:
            shift = output_shift(main, q * scales.reshape(shape) - w, list(main.input).index(unit.weight), mean)
            if shift is not None:
                self.correct_bias(unit, main, shift)
        base = f"{unit.weight}__{unit.name}" if self._shared_weight(unit) else unit.weight
        base = base if p is Precision.INT8 else f"{base}_{p.value}"
        wq = self._add_init(q, f"{base}_{'int8' if p is Precision.INT8 else 'q'}")
        s = self._add_init(scales, f"{base}_scale")
        z = self._add_init(np.zeros(scales.shape, _ZERO[p]), f"{base}_zero_point")
        attrs = {"axis": unit.weight_axis} if unit.weight_axis is not None else {}
        dq = helper.make_node(
            "DequantizeLinear", [wq, s, z], [f"{base}_dequantized"], f"{base}_DequantizeLinear", **attrs
        )
        self.before.setdefault(unit.nodes[0], []).append(dq)
        self._rewire([main], unit.weight, dq.output[0])

    def correct_bias(self, unit: Unit, main: onnx.NodeProto, shift: np.ndarray) -> None:
        """Subtract ``shift`` (per output channel) from the unit's FP32 bias, adding one where it has none."""
        name = f"{unit.name}_corrected_bias"
        if main.op_type in ("Conv", "Gemm"):
            beta = next((a.f for a in main.attribute if a.name == "beta"), 1.0) if main.op_type == "Gemm" else 1.0
            if beta == 0:  # Gemm ignores C: nothing to correct through it
                return
            if len(main.input) > 2 and main.input[2]:
                old = self.inits.get(main.input[2])
                if old is None or beta == 0 or old.data_type != TensorProto.FLOAT:
                    return
                b = numpy_helper.to_array(old)
                if b.size != shift.size:
                    return
                main.input[2] = self._add_init((b - (shift / beta).reshape(b.shape)).astype(np.float32), name)
            else:
                bias = self._add_init((-shift / beta).astype(np.float32), name)
                if len(main.input) > 2:  # an empty optional input: fill it
                    main.input[2] = bias
                else:
                    main.input.append(bias)
            return
        for node in (self.node_by_name[n] for n in unit.nodes):  # MatMul: the bias Add right after it
            if node.op_type == "Add" and main.output[0] in node.input:
                k = 1 - list(node.input).index(main.output[0])
                old = self.inits.get(node.input[k])
                if old is not None and old.data_type == TensorProto.FLOAT and int(np.prod(old.dims)) == shift.size:
                    b = numpy_helper.to_array(old)
                    node.input[k] = self._add_init((b - shift.reshape(b.shape)).astype(np.float32), name)
                return

    def int4_weight(self, unit: Unit, main: onnx.NodeProto, block: int) -> None:
        """The weight as int4 in blocks of ``block`` along K, behind a block-wise DequantizeLinear (FP16 out)."""
        w = numpy_helper.to_array(self.inits[unit.weight]).astype(np.float32)
        axis = 1 - unit.weight_axis  # K: the axis that is not the output channel's
        k = w.shape[axis]
        pad = (-k) % block
        wk = np.moveaxis(w, axis, 0)
        blocks = np.pad(np.abs(wk), ((0, pad), (0, 0))).reshape(-1, block, wk.shape[1]).max(axis=1)
        # a block of tiny weights must not get a scale that is 0 in float16 (TensorRT needs scale > 0)
        scales = np.where(blocks > 0, np.maximum(blocks / INT4_MAX, 2.0 ** -24), 1.0).astype(np.float16)
        full = np.repeat(scales.astype(np.float32), block, axis=0)[:k]
        q = np.clip(np.round(wk / full), -INT4_MAX - 1, INT4_MAX).astype(ml_dtypes.int4)
        base = f"{unit.weight}__{unit.name}" if self._shared_weight(unit) else unit.weight
        wq = self._add_init(np.moveaxis(q, 0, axis), f"{base}_int4")
        s = self._add_init(np.moveaxis(scales, 0, axis), f"{base}_int4_scale")
        z = self._add_init(np.zeros(np.moveaxis(scales, 0, axis).shape, ml_dtypes.int4), f"{base}_int4_zero_point")
        dq = helper.make_node("DequantizeLinear", [wq, s, z], [f"{base}_int4_dequantized"],
                              f"{base}_int4_DequantizeLinear", axis=axis, block_size=block)
        self.before.setdefault(unit.nodes[0], []).append(dq)
        self._rewire([main], unit.weight, dq.output[0])

    def _shared_weight(self, unit: Unit) -> bool:
        return sum(unit.weight in n.input for n in self.g.node) > 1

    def cast_half(self, unit: Unit, p: Precision = Precision.FP16) -> None:
        """The unit as an island in p's half type (FP16 for INT4's activations)."""
        onnx_type, np_type = HALF[p]
        tag = "bf16" if p is Precision.BF16 else "fp16"
        members = [self.node_by_name[n] for n in unit.nodes]
        made = {o for n in members for o in n.output}
        casts = set(unit.casts)
        for node in members:
            keep = KEEP_TYPE.get(node.op_type, ())
            for k, name in enumerate(node.input):
                if not name or name in made or k in keep:
                    continue
                if name in self.inits:
                    t = self.inits[name]
                    if t.data_type == TensorProto.FLOAT:
                        with np.errstate(over="ignore"):  # overflow is reported by the FP16 range check
                            half = numpy_helper.to_array(t).astype(np_type)
                        node.input[k] = self._add_init(half, f"{name}_{tag}")
                    continue
                if name not in casts:  # a mask's boolean, a shape, an index: not float, never cast
                    continue
                key = f"cast:{tag}:{name}"
                if key not in self.shared:
                    cast = helper.make_node("Cast", [name], [f"{name}_{tag}"], f"{name}_cast_{tag}", to=onnx_type)
                    self.before.setdefault(unit.nodes[0], []).append(cast)
                    self.shared[key] = cast.output[0]
                node.input[k] = self.shared[key]
        self.retyped |= made
        for out in unit.outputs:
            inner = f"{out}_{tag}out"
            for node in members:
                for k, name in enumerate(node.output):
                    if name == out:
                        node.output[k] = inner
                for k, name in enumerate(node.input):
                    if name == out:
                        node.input[k] = inner
            cast = helper.make_node("Cast", [inner], [out], f"{out}_cast_fp32", to=TensorProto.FLOAT)
            self.after.setdefault(unit.nodes[-1], []).append(cast)

    def finish(self) -> onnx.ModelProto:
        ordered = []
        for node in self.g.node:
            ordered.extend(self.before.get(node.name, []))
            ordered.append(node)
            ordered.extend(self.after.get(node.name, []))
        available = {i.name for i in self.g.input} | set(self.inits)
        del self.g.node[:]
        self.g.node.extend(stable_toposort(ordered, available))
        used = {n for node in self.g.node for n in node_inputs(node)} | {o.name for o in self.g.output}
        keep = [t for t in self.g.initializer if t.name in used]
        if len(keep) != len(self.g.initializer):
            del self.g.initializer[:]
            self.g.initializer.extend(keep)
        if self.retyped:
            vis = [v for v in self.g.value_info if v.name not in self.retyped]
            del self.g.value_info[:]
            self.g.value_info.extend(vis)
        return self.model


def lower(model: onnx.ModelProto, units: Sequence[Unit], plan: Plan, ranges: Ranges | None) -> onnx.ModelProto:
    """Return a new model in which every unit of ``plan`` runs in its precision; ``model`` is not modified."""
    by_name = {u.name: u for u in units}
    unknown = [u for u in plan if u not in by_name]
    if unknown:
        raise ConfigError(f"the plan names units the model does not have: {', '.join(unknown[:5])}.")
    needed = max((p.opset for _, p in plan.precisions), default=13)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < needed:
        raise ConfigError(f"the plan has {', '.join(sorted({p.value for _, p in plan.precisions if p.opset > opset}))}"
                          f", which needs ONNX opset {needed}; the model is opset {opset} (analyse with those "
                          "precisions, which converts it).")
    rw = _Rewriter(model)
    for name, precision in plan.precisions:
        unit = by_name[name]
        if precision not in unit.allowed:
            raise ConfigError(f"the plan runs unit {name} ({unit.kind}) in {precision.value}, which TensorRT does not "
                              f"run it in (it can: {', '.join(p.value for p in unit.allowed)}).")
        main = rw.node_by_name[unit.name]
        if precision.quantized:
            if ranges is None:
                raise ConfigError(f"{precision.value.upper()} lowering needs activation ranges; run calibration first.")
            members = [rw.node_by_name[n] for n in unit.nodes]
            for tensor in unit.activations:
                readers = [n for n in members if tensor in n.input]
                scale = ranges.scale(tensor) if precision is Precision.INT8 else ranges.fp8_scale(tensor)
                rw.qdq_activation(unit, tensor, scale, readers, precision)
            if unit.weight is not None:
                rw.qdq_weight(unit, main, ranges, precision)
        elif precision is Precision.TF32:
            entry = main.metadata_props.add()
            entry.key, entry.value = MATH_KEY, "tf32"
        else:
            if precision is Precision.INT4:
                rw.int4_weight(unit, main, ranges.int4_block if ranges else INT4_BLOCK)
            rw.cast_half(unit, precision)
    return rw.finish()


def trt_rule_violations(model: onnx.ModelProto) -> list[str]:
    """Check the Q/DQ rules of TensorRT's explicit quantization; an empty list means the model obeys them."""
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts = constant_names(g)
    problems = []
    for node in g.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = inits.get(node.input[1])
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            problems.append(f"{node.name}: scale is not a constant")
        elif not np.all(scale > 0):
            problems.append(f"{node.name}: scale must be positive")
        if zp is not None and (zp.dtype not in _ZERO_TYPES or np.any(zp.astype(np.float32) != 0)):
            problems.append(f"{node.name}: zero point must be an int8, float8e4m3fn or int4 zero (symmetric)")
        per_channel = scale is not None and scale.ndim > 0 and scale.size > 1
        if per_channel and node.input[0] not in consts:
            problems.append(f"{node.name}: per-channel scales are only allowed for weights")
        block = next((a.i for a in node.attribute if a.name == "block_size"), 0)
        if block and (zp is None or zp.dtype == np.int8):
            problems.append(f"{node.name}: block quantization is only for FP8/INT4 weights")
        if zp is not None and zp.dtype == ml_dtypes.int4 and node.input[0] not in consts:
            problems.append(f"{node.name}: INT4 is only for weights")
    return problems
