"""Load an FP32 ONNX model, check it is something trt-mpq can work on, and normalise its quirks.

Normalisation keeps the model's function unchanged: weights held in ``Constant`` nodes become initializers,
unnamed nodes get stable names (``<OpType>_<index in graph.node>``), opsets below 13 are converted to 13
(per-channel Q/DQ needs it), and dynamic input dimensions are fixed by ``--shape`` where given.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, numpy_helper

from ..errors import ConfigError, ModelError
from .graph import walk_nodes
from .qdq import QDQ, Shipped, float_graph
from .shapes import TensorTable, infer_tensors
from .specialise import inline_constant_ifs, parse_fixed, specialise

MIN_OPSET = 13
QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
}

Dim = int | str | None  # a fixed size, a symbolic name, or unknown


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, numpy dtype and shape (ints, symbolic names or None)."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    @property
    def batch_axis(self) -> int | None:
        """Axis 0 when it is dynamic (samples can be stacked along it), else None."""
        if self.shape and not isinstance(self.shape[0], int):
            return 0
        return None

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape) or "scalar"
        return f"{self.name} {self.dtype.name}[{dims}]"


@dataclass
class LoadedModel:
    """A validated, normalised FP32 model and what is known about it."""

    proto: onnx.ModelProto
    path: Path
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    notes: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the --shape overrides applied
    fixed: dict[str, list] = field(default_factory=dict)  # the --fix input values applied (see specialise)
    whole: onnx.ModelProto | None = None  # the complete graph when ``proto`` is the part measured (network.measured)
    measured: tuple[str, ...] = ()  # then: the tensors sensitivity is measured at (``proto``'s outputs)
    shipped: dict[str, float] = field(default_factory=dict)  # a Q/DQ file's activation thresholds (network.qdq)

    def input(self, name: str) -> TensorSpec:
        return next(i for i in self.inputs if i.name == name)

    @functools.cached_property
    def tensors(self) -> TensorTable:
        """Element types and per-sample shapes, inferred once (the units, the probe and the cost model use it)."""
        return infer_tensors(self.proto)


def file_sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME:1x3x224x224`` items (trtexec / Polygraphy syntax)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.rpartition(":")
        if not sep or not name or not re.fullmatch(r"\d+(x\d+)*", dims or ""):
            raise ConfigError(f"--shape '{item}' is not NAME:DIMS such as 'input:1x3x224x224'.")
        shapes[name] = tuple(int(d) for d in dims.split("x"))
    return shapes


def tensor_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else np.dtype("float32")
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorSpec(vi.name, dtype, tuple(dims))


def _read(path: Path) -> tuple[onnx.ModelProto, list[Path]]:
    if not path.exists():
        raise ModelError(f"model file '{path}' does not exist.")
    if not path.is_file():
        raise ModelError(f"model path '{path}' is not a file.")
    if path.stat().st_size == 0:
        raise ModelError(f"model file '{path}' is empty.")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"'{path}' could not be read as an ONNX model (is it truncated, or another format?): {exc}"
        ) from None
    if not model.HasField("graph") or not model.graph.node or not model.opset_import:
        raise ModelError(f"'{path}' is not an ONNX model: it holds no graph.")
    ext = sorted({
        path.parent / kv.value
        for t in external_data_helper._get_all_tensors(model)
        for kv in t.external_data
        if kv.key == "location"
    })
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, onnx.checker.ValidationError) as exc:
        missing = [str(p.name) for p in ext if not p.is_file()]
        what = ", ".join(missing) if missing else getattr(exc, "filename", None) or str(exc).splitlines()[0]
        raise ModelError(
            f"external data for '{path}' is missing or unreadable ({what}); keep the weight files next to the model."
        ) from None
    return model, ext


def _check_fp32(model: onnx.ModelProto, path: Path) -> Shipped | None:
    """Refuse what is no float model; a Q/DQ model is turned back into its float graph (network.qdq)."""
    ops = {n.op_type for n in walk_nodes(model.graph)}
    integer = sorted(ops & (QUANTIZED_OPS - QDQ))
    if integer:
        raise ModelError(
            f"'{path}' is already quantized with integer operators ({', '.join(integer)}), which do not say "
            "what each layer computed in float; trt-mpq reads Q/DQ models (ONNX Runtime: QuantFormat.QDQ, "
            "ModelOpt, NNCF) or starts from the original FP32 model."
        )
    shipped = float_graph(model) if ops & QDQ else None
    low = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    if any(t.data_type in low for t in model.graph.initializer):
        raise ModelError(f"'{path}' stores weights in FP16/BF16; trt-mpq starts from the original FP32 model.")
    return shipped


def _nodes_to_initializers(graph: onnx.GraphProto, value_of) -> int:
    """Replace each node for which ``value_of(node)`` gives a tensor by that tensor, as an initializer named
    after the node's output; return how many were replaced."""
    keep, moved = [], 0
    for node in graph.node:
        tensor = value_of(node)
        if tensor is None:
            keep.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        moved += 1
    if moved:
        del graph.node[:]
        graph.node.extend(keep)
    return moved


def _constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """A tensor-valued Constant node's value (the form the lowering rewrites), else None."""
    if node.op_type != "Constant" or len(node.attribute) != 1:
        return None
    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.from_array(numpy_helper.to_array(attr.t))
    if attr.name in ("value_float", "value_int"):
        return numpy_helper.from_array(np.array(attr.f if attr.name == "value_float" else attr.i,
                                                np.float32 if attr.name == "value_float" else np.int64))
    if attr.name in ("value_floats", "value_ints"):
        return numpy_helper.from_array(np.array(list(attr.floats) if attr.name == "value_floats" else list(attr.ints),
                                                np.float32 if attr.name == "value_floats" else np.int64))
    return None


def constants_to_initializers(graph: onnx.GraphProto) -> int:
    """Turn tensor-valued Constant nodes into initializers (in place); how many."""
    return _nodes_to_initializers(graph, _constant_value)


def _fold_constant_identities(graph: onnx.GraphProto) -> int:
    """An Identity of an initializer (how exporters share a weight) becomes that initializer under the
    Identity's output name: TensorRT folds it, and a weight must be a constant to be quantized or costed."""
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}

    def copied(node: onnx.NodeProto) -> onnx.TensorProto | None:
        if node.op_type != "Identity" or not node.input or node.input[0] not in inits or node.output[0] in outputs:
            return None
        tensor = onnx.TensorProto()
        tensor.CopyFrom(inits[node.input[0]])
        return tensor

    return _nodes_to_initializers(graph, copied)


def _name_nodes(graph: onnx.GraphProto) -> int:
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        base, k = name, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        if name != node.name:
            node.name = name
            renamed += 1
        seen.add(name)
    return renamed


def _negative_dims_to_dynamic(graph: onnx.GraphProto) -> int:
    """Dims written as -1 (Paddle's exports) mean 'dynamic': give them a name of their own instead."""
    fixed = 0
    for vi in list(graph.input) + list(graph.output):
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value < 0:
                d.Clear()
                d.dim_param = f"{vi.name}_dim{axis}"
                fixed += 1
    return fixed


def _apply_shapes(model: onnx.ModelProto, inputs: list[TensorSpec], shapes: dict[str, tuple[int, ...]]) -> None:
    known = {i.name: i for i in inputs}
    for name, dims in shapes.items():
        if name not in known:
            raise ConfigError(
                f"--shape names input '{name}', but the model's inputs are: {', '.join(known) or 'none'}."
            )
        spec = known[name]
        if len(dims) != len(spec.shape):
            raise ConfigError(
                f"--shape {name}:{'x'.join(map(str, dims))} has {len(dims)} dims; input '{name}' has "
                f"{len(spec.shape)} ({spec.describe()})."
            )
        for axis, (want, have) in enumerate(zip(dims, spec.shape, strict=True)):
            if isinstance(have, int) and have != want:
                raise ConfigError(
                    f"--shape gives {want} for axis {axis} of '{name}', but the model fixes it to {have}."
                )
    named: dict[str, int] = {}  # a symbolic dim fixed on one input is fixed on every input that names it
    for vi in model.graph.input:
        if vi.name not in shapes:
            continue
        for axis, (d, want) in enumerate(zip(vi.type.tensor_type.shape.dim, shapes[vi.name], strict=True)):
            # Axis 0, when dynamic, stays the batch axis so samples can be stacked along it.
            if axis == 0 and not d.HasField("dim_value"):
                continue
            if d.HasField("dim_param"):
                named[d.dim_param] = want
            d.Clear()
            d.dim_value = want
    for vi in model.graph.input:
        if vi.name in shapes:
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if axis > 0 and d.HasField("dim_param") and d.dim_param in named:
                want = named[d.dim_param]
                d.Clear()
                d.dim_value = want


PLUGIN_DOMAIN = "trt_mpq.unchecked"


def _without_plugins(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` for ONNX's checker: an op in ONNX's own domain that ONNX does not define (a TensorRT plugin
    such as EfficientNMS_TRT, exported without a domain) moved to a domain the checker leaves alone, as it does
    every custom domain. Whether a backend runs it is decided later (network.measured)."""
    plugins = [i for i, n in enumerate(model.graph.node)
               if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)]
    if not plugins:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for i in plugins:
        copy.graph.node[i].domain = PLUGIN_DOMAIN
    copy.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return copy


def load_model(path: str | Path, shapes: dict[str, tuple[int, ...]] | None = None,
               fixed: Mapping[str, object] | None = None, opset: int = MIN_OPSET) -> LoadedModel:
    """Load, validate and normalise an FP32 ONNX model; raise ModelError/ConfigError with a user message.
    ``fixed``: input values the deployment always feeds; the model is specialised on them (network.specialise).
    ``opset``: the lowest opset the precisions to analyse need (FP8 19, INT4 21); older models are converted."""
    path = Path(path)
    model, ext = _read(path)
    shipped = _check_fp32(model, path)
    try:
        onnx.checker.check_model(_without_plugins(model))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown reason"
        raise ModelError(f"'{path}' is not a valid ONNX model: {first}") from None
    notes: list[str] = [shipped.note()] if shipped else []
    # first: the converter may add (unnamed) Constant nodes, which the normalisation below folds and names
    wanted = max(opset, MIN_OPSET)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < wanted:
        why = "per-channel Q/DQ" if wanted == MIN_OPSET else "the FP8/INT4 Q/DQ types"
        try:
            model = onnx.version_converter.convert_version(model, wanted)
        except Exception as exc:  # the converter raises bare RuntimeErrors from C++
            raise ModelError(
                f"'{path}' uses opset {opset}; converting it to opset {wanted} (needed for {why}) "
                f"failed: {str(exc).splitlines()[0]}"
            ) from None
        notes.append(f"opset {opset} converted to {wanted} (needed for {why}) with onnx.version_converter")
    values = parse_fixed((fixed or {}).items())
    for step, said in ((constants_to_initializers, "{} Constant nodes were turned into initializers"),
                       (_fold_constant_identities, "{} Identity nodes of initializers were folded into initializers"),
                       (_negative_dims_to_dynamic, "{} input/output dims written as -1 were read as dynamic"),
                       (_name_nodes, "{} nodes had no (unique) name and were named <OpType>_<index>")):
        changed = step(model.graph)
        if changed:
            notes.append(said.format(changed))
        if step is constants_to_initializers and values:  # conditions may read Constant nodes: after them
            inlined = specialise(model, values)
            notes.append(f"inputs {', '.join(values)} fixed by --fix; {inlined} If node(s) replaced by the branch "
                         "they take (the engine built from this model has no such inputs)")
    init_names = {t.name for t in model.graph.initializer}
    inputs = [tensor_spec(vi) for vi in model.graph.input if vi.name not in init_names]
    if shapes:
        _apply_shapes(model, inputs, shapes)
        inputs = [tensor_spec(vi) for vi in model.graph.input if vi.name not in init_names]
        if any(n.op_type == "If" for n in model.graph.node):
            inlined = inline_constant_ifs(model, batch=next(iter(shapes.values()))[0])
            if inlined:
                notes.append(f"{inlined} If node(s) replaced by the branch they take at the --shape given (their "
                             "condition follows from it)")
    outputs = [tensor_spec(vi) for vi in model.graph.output]
    fixed_json = {k: v.tolist() for k, v in values.items()}
    return LoadedModel(model, path, file_sha256(path, *ext), inputs, outputs, notes, dict(shapes or {}), fixed_json,
                       shipped=dict(shipped.thresholds) if shipped else {})
