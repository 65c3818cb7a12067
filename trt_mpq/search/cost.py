"""Estimated latency per unit and precision on a named GPU, and the cost of precision boundaries.

A roofline estimate: a unit at precision p takes max(FLOPs / (peak_p * COMPUTE_EFF), bytes_p / (bandwidth *
MEMORY_EFF)), plus OVERLAP_LOSS of the smaller of the two (kernels do not hide all of it), plus a fixed kernel
overhead, where bytes_p counts its input and output activations and its
weights at p's element size (FP32 4, FP16 2, INT8 1 byte). Tensor Core kernels pad channels to their tile (8
for FP16, 32 for INT8, as TensorRT's vectorised formats), which a first convolution on 3 channels pays.
A tensor whose writer and readers run in different precisions pays a reformat kernel for each format the
writer does not store (search.borders says which it can): it reads and writes the tensor at REFORMAT_EFF of the
bandwidth, plus REFORMAT_US. The kernel overhead, the overlap loss and the padding were fitted on the one GPU
truth there is, TensorRT's own A100 profile of ResNet-18 in FP16; the reformat cost on the 15 reformat and
quantize kernels of its Q/DQ builds (tests/backends/test_captures.py checks both fits). These are estimates,
labelled so everywhere; they rank mixes, they do not replace a measurement.

Peak rates are the dense (non-sparse) figures of NVIDIA's public datasheets; FP32 is the CUDA-core rate
(TF32 is off for the FP32 reference), FP16 and INT8 the Tensor Core rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from ..errors import ConfigError
from ..network.graph import attributes, consumers, producers
from ..network.shapes import TensorTable, infer_tensors
from ..network.units import Unit
from ..precision import Precision
from .borders import QUANTIZING_KINDS, Crossing, crossing_seconds

COMPUTE_EFF = 0.6  # share of peak a good fused kernel reaches
MEMORY_EFF = 0.7
KERNEL_US = 6.0  # launch and tail of one fused kernel, fitted on the A100 FP16 capture (docs/results.md)
OVERLAP_LOSS = 0.2  # share of the shorter of compute and memory time a kernel does not hide (same fit)
# Tensor Core channel granularity (TensorRT's vectorised formats: 16 bytes of 16-bit, 32 of 8-bit elements)
CHANNEL_TILE = {Precision.FP16: 8, Precision.BF16: 8, Precision.INT4: 8, Precision.INT8: 32, Precision.FP8: 32,
                Precision.TF32: 4}
REFORMAT_US = 8.0  # a reformat or quantize kernel's fixed cost, and the share of bandwidth it reaches: fitted on
REFORMAT_EFF = 0.5  # the A100 Q/DQ captures' 15 reformats, 0.72-1.30x of the measured times (median 0.98)
# Ops TensorRT moves Q/DQ (and casts) across, so a precision flows through them without a reformat.
TRANSPARENT = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice"}
# Readers outside every unit that need no format of their own: Shape and Size read only dimensions; a comparison
# that makes a mask (IsNaN on a Softmax's output) joins the pointwise kernel of the cast before it.
FORMAT_FREE = {"Shape", "Size", "IsNaN", "IsInf", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"}
# bytes per activation element, and per weight element (INT4 weights are packed two to a byte; their FP16
# block scales add 2 bytes per 128 weights)
ELEMENT_BYTES = {Precision.FP32: 4, Precision.FP16: 2, Precision.BF16: 2, Precision.INT8: 1, Precision.FP8: 1,
                 Precision.INT4: 2, Precision.TF32: 4}
WEIGHT_BYTES = {**ELEMENT_BYTES, Precision.INT4: 0.5 + 2 / 128}


@dataclass(frozen=True)
class Gpu:
    """Dense (non-sparse) peak rates in TFLOPS/TOPS by precision, from the product's datasheet; None where the
    GPU's Tensor Cores do not run that precision (a T4 has no BF16, TF32 or FP8; an A100 no FP8)."""

    name: str
    fp32_tflops: float  # CUDA cores
    fp16_tflops: float
    int8_tops: float
    bandwidth_gbs: float
    source: str
    tf32_tflops: float | None = None
    bf16_tflops: float | None = None
    fp8_tflops: float | None = None
    int4_weights: bool = True  # W4A16 GEMMs: Ampere and later (ModelOpt's support matrix)

    def runs(self, p: Precision) -> bool:
        """Whether TensorRT can run p on this GPU."""
        if p is Precision.INT4:
            return self.int4_weights
        return self._rate(p) is not None

    def _rate(self, p: Precision) -> float | None:
        return {Precision.FP32: self.fp32_tflops, Precision.FP16: self.fp16_tflops, Precision.INT8: self.int8_tops,
                Precision.BF16: self.bf16_tflops, Precision.FP8: self.fp8_tflops, Precision.TF32: self.tf32_tflops,
                Precision.INT4: self.fp16_tflops}[p]  # INT4 weights are dequantized into an FP16 GEMM

    def peak(self, p: Precision) -> float:
        """Operations per second at precision p (raises for one it cannot run: check ``runs`` first)."""
        rate = self._rate(p)
        if rate is None or not self.runs(p):
            raise ConfigError(f"the {self.name} cannot run {p.value}.")
        return 1e12 * rate


GPUS = {
    "h200": Gpu("NVIDIA H200 SXM 141GB", 67.0, 989.0, 1979.0, 4800.0, "NVIDIA H200 Tensor Core GPU datasheet",
                494.0, 989.0, 1979.0),
    "h100": Gpu("NVIDIA H100 SXM5 80GB", 67.0, 989.0, 1979.0, 3350.0, "NVIDIA H100 Tensor Core GPU datasheet",
                494.0, 989.0, 1979.0),
    "b200": Gpu("NVIDIA B200 (HGX, per GPU)", 75.0, 2250.0, 4500.0, 7700.0, "NVIDIA HGX B200 datasheet",
                1100.0, 2250.0, 4500.0),
    "a100": Gpu("NVIDIA A100 SXM4 80GB", 19.5, 312.0, 624.0, 2039.0, "NVIDIA A100 Tensor Core GPU datasheet",
                156.0, 312.0),
    "l40s": Gpu("NVIDIA L40S", 91.6, 362.0, 733.0, 864.0, "NVIDIA L40S datasheet", 183.0, 362.0, 733.0),
    "l4": Gpu("NVIDIA L4", 30.3, 121.0, 242.0, 300.0, "NVIDIA L4 Tensor Core GPU datasheet", 60.0, 121.0, 242.0),
    "t4": Gpu("NVIDIA T4", 8.1, 65.0, 130.0, 320.0, "NVIDIA T4 Tensor Core GPU datasheet", int4_weights=False),
    "orin": Gpu("NVIDIA Jetson AGX Orin 64GB (GPU only)", 5.3, 42.5, 85.0, 204.8, "NVIDIA Jetson AGX Orin datasheet",
                None, 42.5),
}


def gpu(name: str) -> Gpu:
    if name not in GPUS:
        raise ConfigError(f"--target '{name}' is not one of {', '.join(GPUS)}.")
    return GPUS[name]


def _flops(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> float:
    attrs = attributes(node)
    out = shapes.get(node.output[0])
    w = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if out is None or w is None:
        return 0.0
    if node.op_type == "Conv":
        return 2.0 * float(np.prod(out)) * float(np.prod(w[1:]))
    if node.op_type == "ConvTranspose":
        x = shapes.get(node.input[0])
        return 2.0 * float(np.prod(x)) * float(np.prod(w[1:])) if x else 0.0
    if node.op_type == "Gemm":
        k = w[1] if attrs.get("transB", 0) else w[0]
        return 2.0 * float(np.prod(out)) * k
    if node.op_type == "MatMul":
        a = shapes.get(node.input[0])
        return 2.0 * float(np.prod(out)) * a[-1] if a else 0.0
    if node.op_type in ("LSTM", "GRU", "RNN"):  # per step: the input and recurrent GEMMs, W [d,gH,I], R [d,gH,H]
        x, r = shapes.get(node.input[0]), shapes.get(node.input[2])
        return 2.0 * x[0] * (float(np.prod(w)) + float(np.prod(r))) if x and r else 0.0
    return 0.0  # memory-bound (elementwise, reductions, normalisation, pooling, resize): the bytes decide


def _channels(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> tuple[int, int] | None:
    """(input channels, output channels) a Tensor Core kernel tiles over: a dense Conv's, or a GEMM's K and N;
    None for depthwise/grouped convolutions (CUDA-core kernels) and what has no weight."""
    w = shapes.get(node.input[1]) if len(node.input) > 1 else None
    attrs = attributes(node)
    if not w or len(w) < 2:
        return None
    if node.op_type == "Conv":
        return (w[1], w[0]) if attrs.get("group", 1) == 1 else None
    if node.op_type == "Gemm":
        return (w[1], w[0]) if attrs.get("transB", 0) else (w[0], w[1])
    if node.op_type == "MatMul" and len(w) == 2:
        return w[0], w[1]
    return None


def _padding(channels: tuple[int, int] | None, p: Precision) -> float:
    """How much work channel padding adds: Tensor Cores take channels in multiples of CHANNEL_TILE[p]."""
    tile = CHANNEL_TILE.get(p, 1)
    if channels is None or tile == 1:
        return 1.0
    return float(np.prod([-(-c // tile) * tile / c for c in channels if c > 0]))


@dataclass(frozen=True)
class UnitCost:
    flops: float
    activation_elems: float  # inputs + outputs of the unit
    weight_elems: float
    boundary_elems: dict[str, float]  # tensor -> elements, for every tensor entering or leaving the unit
    channels: tuple[int, int] | None = None  # see _channels
    weights_read: float | None = None  # weight elements a run reads, when not all of them (a table lookup)


@dataclass(frozen=True)
class CostModel:
    """Estimated seconds per (unit, precision) and per precision boundary on one GPU; measured unit times,
    where there are some, replace the estimate (``with_measured``)."""

    target: Gpu
    costs: Mapping[str, UnitCost]
    crossings: tuple[Crossing, ...]  # every tensor units read or hand to an FP32 reader
    batch: int = 1
    measured: Mapping[tuple[str, Precision], float] = field(default_factory=dict)  # seconds per (unit, precision)
    measured_by: str = ""  # where ``measured`` comes from, e.g. "trtexec profiles"
    where: str = ""  # the device the latencies describe when it is not ``target`` (a profiled CPU)

    def with_measured(self, seconds: Mapping[tuple[str, Precision], float], by: str, where: str = "") -> CostModel:
        """The same model with measured unit times (seconds per (unit, precision)) from ``by``."""
        return replace(self, measured=dict(seconds), measured_by=by, where=where)

    @property
    def device(self) -> str:
        return self.where or self.target.name

    @property
    def resolution(self) -> float:
        """Seconds below which two mixes' latencies are not told apart: one kernel's launch overhead, the
        granularity the estimate itself assumes (and about the run-to-run spread of a per-layer profile)."""
        return KERNEL_US * 1e-6

    @property
    def label(self) -> str:
        """estimated, measured or partly measured."""
        if not self.measured:
            return "estimated"
        ps = {Precision.FP32, Precision.FP16, Precision.INT8} | {p for _, p in self.measured}
        return "measured" if all((u, p) in self.measured for u in self.costs for p in ps) else "partly measured"

    @property
    def kind(self) -> str:
        """The label with where measured figures come from, for reports."""
        if not self.measured:
            return self.label
        return f"{self.label} ({self.measured_by}), precision boundaries estimated"

    def unit_seconds(self, unit: str, p: Precision) -> float:
        if (unit, p) in self.measured:
            return self.measured[(unit, p)]
        c = self.costs[unit]
        compute = c.flops * _padding(c.channels, p) / (self.target.peak(p) * COMPUTE_EFF)
        read = c.weight_elems if c.weights_read is None else c.weights_read
        moved = c.activation_elems * ELEMENT_BYTES[p] + read * WEIGHT_BYTES[p]
        memory = moved / (self.target.bandwidth_gbs * 1e9 * MEMORY_EFF)
        return max(compute, memory) + OVERLAP_LOSS * min(compute, memory) + KERNEL_US * 1e-6

    def reformat_seconds(self, elems: float, written: Precision, needed: Precision) -> float:
        """One kernel that reads ``elems`` in the written format and writes them in the needed one."""
        moved = elems * (ELEMENT_BYTES[written] + ELEMENT_BYTES[needed])
        return moved / (self.target.bandwidth_gbs * 1e9 * REFORMAT_EFF) + REFORMAT_US * 1e-6

    def border_seconds(self, precisions: Mapping[str, Precision]) -> float:
        return sum(crossing_seconds(c, precisions, self.reformat_seconds) for c in self.crossings)

    def plan_seconds(self, precisions: Mapping[str, Precision]) -> float:
        units = sum(self.unit_seconds(u, precisions.get(u, Precision.FP32)) for u in self.costs)
        return units + self.border_seconds(precisions)


def cost_model(model: onnx.ModelProto, units: list[Unit], target: str, batch: int = 1,
               tensors: TensorTable | None = None, observed: Mapping[str, tuple[int, ...]] | None = None
               ) -> CostModel:
    """Costs at ``batch`` samples per run (activations and FLOPs scale with it, weights do not); ``tensors``:
    the model's inferred tensors when already known (``LoadedModel.tensors``); ``observed``: per-sample shapes
    seen when the model ran (``Ranges.shapes``), for what static inference cannot follow."""
    shapes = {**(observed or {}), **(tensors or infer_tensors(model)).shapes}
    by_name = {n.name: n for n in model.graph.node}
    inits = {t.name for t in model.graph.initializer}
    producer_unit = {o: u.name for u in units for o in u.outputs}
    prod = producers(model.graph)

    def source(t: str) -> str:
        """Follow a tensor back through precision-transparent ops to where it was computed."""
        while t in prod and model.graph.node[prod[t]].op_type in TRANSPARENT and model.graph.node[prod[t]].input:
            t = model.graph.node[prod[t]].input[0]
        return t

    costs: dict[str, UnitCost] = {}
    read: dict[str, tuple[float, list[str]]] = {}  # source tensor -> (elements, reading units)
    for u in units:
        main = by_name[u.name]
        moved = (*u.casts, *u.outputs)  # the float tensors it reads and writes (not shapes or masks' booleans)
        missing = [t for t in moved if t not in shapes]
        if missing:
            raise ConfigError(f"the cost model needs static shapes, but '{missing[0]}' (unit {u.name}) has none; "
                              "pass --shape for the dynamic inputs when analysing.")
        elems = {t: batch * float(np.prod(shapes[t])) for t in moved}
        weights = sum(float(np.prod(shapes[n])) for node in u.nodes for n in by_name[node].input if n in inits)
        # a table lookup reads the rows it returns, not the whole table (which still counts for the size)
        rows = elems[u.outputs[0]] if main.op_type == "Gather" else None
        if main.output[0] not in shapes:  # inside the unit: the epilogue keeps the main op's shape
            shapes[main.output[0]] = shapes[u.outputs[0]]
        costs[u.name] = UnitCost(batch * _flops(main, shapes), sum(elems.values()), weights, elems,
                                 _channels(main, shapes), rows)
        for t in u.casts:
            read.setdefault(source(t), (elems[t], []))[1].append(u.name)
    members = {m for v in units for m in v.nodes}
    outputs = {o.name for o in model.graph.output}
    cons = consumers(model.graph)

    def reaches_fp32_op(t: str) -> bool:
        """Does the tensor (through transparent ops) reach an op outside every unit, or a graph output?"""
        if t in outputs:
            return True
        for i in cons.get(t, []):
            node = model.graph.node[i]
            if node.name in members or node.op_type in FORMAT_FREE:
                continue
            if node.op_type not in TRANSPARENT or any(reaches_fp32_op(o) for o in node.output):
                return True
        return False

    kind = {u.name: u.kind for u in units}
    fp32_read = {t: costs[u.name].boundary_elems[t] for u in units for t in u.outputs if reaches_fp32_op(t)}
    crossings = []
    for t in dict.fromkeys([*read, *fp32_read]):
        elems, readers = read.get(t, (fp32_read.get(t, 0.0), []))
        writer = producer_unit.get(t)
        crossings.append(Crossing(t, elems, writer, tuple(dict.fromkeys(readers)), t in fp32_read,
                                  kind.get(writer) in QUANTIZING_KINDS))
    return CostModel(gpu(target), costs, tuple(crossings), batch)
