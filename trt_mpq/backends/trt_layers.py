"""TensorRT's layer files mapped back to units: trtexec's --exportProfile and --exportLayerInfo, and the
engine inspector's JSON (the same layer information).

Formats (as trtexec writes them, 10.x and 11.x):
- profile: a JSON list whose first entry is ``{"count": N}`` (timed iterations), then one entry per fused
  layer: ``{"name", "timeMs", "averageMs", "medianMs", "percentage"}``. ``averageMs`` is used.
- layer info (``--profilingVerbosity=detailed``): ``{"Layers": [...], "Bindings": [...]}`` in 10.x, with
  ``"I/O Tensors"`` in place of ``"Bindings"`` in 11.x; each layer has ``"Name"`` and, for layers the ONNX
  parser created, ``"Metadata"`` listing the ONNX nodes it came from as ``[ONNX Layer: node name]`` entries
  (separated by the ASCII record separator). Without layer info, fused layer names are split on " + ".

A layer's time goes to the unit whose main op (Conv, Gemm, ...) it computes, split evenly if it computes
several; a layer without one (a standalone quantize, a cast) goes to the unit its nodes were inserted for; a
reformat to the layer it feeds or drains; what maps to no unit is reported as unattributed. Checked against
real trtexec files of ResNet-18 on an A100 (../shared/trt-captures: the older ``Format/Datatype`` layout,
fused names, reformats, Q/DQ builds; every layer of its FP32 and FP16 builds maps to a unit, tested); the
11.x field names are as recorded in the project's TensorRT notes and only fixtures test them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import read_json
from ..errors import ConfigError
from ..network.units import Unit
from ..precision import Precision
from ..quant.lower import lowered_names

# "[ONNX Layer: name]", or "[ONNX Layer: name | Local Function: f]" for a node inside an ONNX local function
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]|]+?)\s*(?:\|[^\]]*)?\]")
_FOREIGN = re.compile(r"\{ForeignNode\[(.+?)\.\.\.(.+?)\]\}")


def read_profile(path: str | Path) -> dict[str, float]:
    """Layer name -> average milliseconds per inference, from ``trtexec --exportProfile``."""
    data = read_json(Path(path), "trtexec profile")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"trtexec profile '{path}' is not a list of layer timings (trtexec --exportProfile).")
    out: dict[str, float] = {}
    for entry in data:
        if not isinstance(entry, dict) or "name" not in entry:
            continue  # the leading {"count": N}
        ms = entry.get("averageMs")
        if ms is None and "timeMs" in entry and data and isinstance(data[0], dict) and data[0].get("count"):
            ms = entry["timeMs"] / data[0]["count"]
        if ms is not None:
            out[entry["name"]] = out.get(entry["name"], 0.0) + float(ms)
    if not out:
        raise ConfigError(f"trtexec profile '{path}' holds no layer timings.")
    return out


def _layers(data, source: str) -> list:
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise ConfigError(f"{source} has no 'Layers' list (build with detailed profiling verbosity).")
    return layers


def read_layer_nodes(path: str | Path) -> dict[str, list[str]]:
    """Layer name -> ONNX node names, from ``trtexec --exportLayerInfo`` (detailed verbosity)."""
    return layer_nodes(read_json(Path(path), "trtexec layer info"), f"trtexec layer info '{path}'")


def layer_nodes(data, source: str = "the engine's layer information") -> dict[str, list[str]]:
    """Layer name -> ONNX node names, from layer information JSON (trtexec's file or the engine inspector's)."""
    layers = _layers(data, source)
    out = {}
    for layer in layers:
        if isinstance(layer, dict) and "Name" in layer:
            out[layer["Name"]] = _ONNX_LAYER.findall(str(layer.get("Metadata", "")))
    return out


_REFORMAT = re.compile(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to (.+)$")
_ADDED = ("reshape_after_", "reshape_before_")  # layers TensorRT adds around a node, named after it


def nodes_in_name(name: str, order: list[str]) -> list[str]:
    """ONNX node names a fused TensorRT layer name mentions ("a + b", "PWN(a, b)", "{ForeignNode[a...b]}");
    a reformat belongs to the layer it feeds or drains ("Reformatting CopyNode for Input Tensor 0 to a")."""
    reformat = _REFORMAT.match(name)
    if reformat:
        return nodes_in_name(reformat.group(1), order)
    known = set(order)
    found: list[str] = []
    for first, last in _FOREIGN.findall(name):
        if first in known and last in known:
            i, j = order.index(first), order.index(last)
            found.extend(order[min(i, j):max(i, j) + 1])
    for part in re.split(r" \+ |[(),]\s*", name):
        part = part.strip().strip("{}[]")
        for prefix in _ADDED:
            if part.startswith(prefix) and part[len(prefix):] in known:
                part = part[len(prefix):]
        if part in known:
            found.append(part)
    return list(dict.fromkeys(found))


@dataclass
class ImportedLatency:
    """Measured milliseconds per (unit, precision), and what could not be attributed, per precision."""

    ms: dict[tuple[str, Precision], float] = field(default_factory=dict)
    unattributed_ms: dict[Precision, float] = field(default_factory=dict)
    total_ms: dict[Precision, float] = field(default_factory=dict)


def attribute(profiles: dict[Precision, dict[str, float]], layer_nodes: dict[Precision, dict[str, list[str]]],
              units: Iterable[Unit], node_order: list[str]) -> ImportedLatency:
    """Map each precision's profiled layers back to units."""
    units = list(units)
    unit_of = {n: u.name for u in units for n in u.nodes}
    # Q/DQ and Cast nodes the lowering inserts are named after the tensor they act on; map them to its reader.
    for u in units:
        for t in (*u.inputs, *u.activations):
            for node in lowered_names(t)[1]:
                unit_of.setdefault(node, u.name)
        if u.weight:
            for node in lowered_names(u.weight, weight=True)[1]:
                unit_of.setdefault(node, u.name)
        for t in u.outputs:
            unit_of.setdefault(f"{t}_cast_fp32", u.name)
    main = {u.name for u in units}
    order = node_order + [n for n in unit_of if n not in node_order]
    result = ImportedLatency()
    for p, profile in profiles.items():
        nodes_of = layer_nodes.get(p, {})
        result.total_ms[p] = sum(profile.values())
        result.unattributed_ms[p] = 0.0
        for layer, ms in profile.items():
            nodes = nodes_of.get(layer) or nodes_in_name(layer, order)
            # a fused layer that computes a unit's main op is that unit's (a Q fused into its epilogue belongs
            # to the next unit by name, but runs inside this kernel); otherwise whoever owns its nodes
            owners = [n for n in nodes if n in main] or list(dict.fromkeys(unit_of[n] for n in nodes if n in unit_of))
            if not owners:
                result.unattributed_ms[p] += ms
                continue
            for owner in owners:
                result.ms[(owner, p)] = result.ms.get((owner, p), 0.0) + ms / len(owners)
    return result


_DTYPES = (("int8", Precision.INT8), ("int4", Precision.INT4), ("fp8", Precision.FP8), ("bf16", Precision.BF16),
           ("bfloat16", Precision.BF16), ("fp16", Precision.FP16), ("half", Precision.FP16),
           ("fp32", Precision.FP32), ("float", Precision.FP32))  # more specific names before "float"


FUSED = "fused, unknown"  # a layer that computes several units tells no unit's own precision
UNKNOWN = "unknown"


def _datatype(tensor: dict) -> Precision | str | None:
    """The data type of one layer input/output entry: 10.x "Format/Datatype" or 11.x "Datatype"."""
    text = str(tensor.get("Datatype") or tensor.get("Format/Datatype") or "").lower()
    if "n/a" in text:  # the inspector without shapes: "Format not available"
        return UNKNOWN
    for key, p in _DTYPES:
        if key in text:
            return p
    return text or None


def _own_input(unit: Unit, inputs: list[dict]) -> dict:
    """The layer input that is the unit's own lowered input (``t_quantized``, ``t_fp16`` or ``t`` itself), else
    the first: a layer's first input may be a residual, a reformat or another unit's tensor."""
    own = [n for t in (*unit.activations, *unit.inputs) for n in (*lowered_names(t)[0], t)]
    by_name = {str(t.get("Name", "")): t for t in inputs}
    return next((by_name[n] for n in own if n in by_name), inputs[0])


def read_realized(path: str | Path, units: Iterable[Unit]) -> dict[str, Precision | str | None]:
    """Unit -> the data type its main layer actually reads in the built engine (None: not found)."""
    return realized(read_json(Path(path), "trtexec layer info"), units, f"trtexec layer info '{path}'")


def realized(data, units: Iterable[Unit], source: str = "the engine's layer information"
             ) -> dict[str, Precision | str | None]:
    """``read_realized`` on layer information JSON already loaded (e.g. from the engine inspector)."""
    layers = _layers(data, source)
    units = list(units)
    order = [n for u in units for n in u.nodes]
    found: dict[str, Precision | str | None] = {u.name: None for u in units}
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        name = str(layer.get("Name", ""))
        if _REFORMAT.match(name) or name.startswith(_ADDED):  # it serves a unit's layer; it reads that output
            continue
        nodes = _ONNX_LAYER.findall(str(layer.get("Metadata", ""))) or nodes_in_name(name, order)
        inputs = [t for t in layer.get("Inputs", []) if isinstance(t, dict)]
        covered = [u for u in units if u.name in nodes]
        if not inputs or not covered:
            continue
        for u in covered:
            found[u.name] = FUSED if len(covered) > 1 else _datatype(_own_input(u, inputs))
    return found
