"""Where precisions meet: what a tensor costs when the unit that writes it and the units that read it run in
different precisions.

A tensor exists in every format its readers need (one per precision among them, FP32 for an op outside every
unit or a graph output). The writer stores one format; every other one costs a reformat kernel, which reads the
tensor in the written format and writes it in the needed one. Which formats a writer can store is what
TensorRT's fusions allow, as its real A100 ResNet-18 Q/DQ profiles show (tests/backends/test_captures.py):

- a quantized (INT8, FP8) kernel writes any format: the DequantizeLinear after it fuses into its output (a
  quantized convolution writes FP16 when its reader is FP16), and so does the next unit's QuantizeLinear;
- a float unit writes its own precision, or a quantized one when it is a pointwise, normalisation or softmax
  kernel and every reader reads that one (the QuantizeLinear joins its epilogue, as for a LayerNorm feeding
  quantized GEMMs); a float convolution or GEMM cannot (TensorRT fuses a trailing Q only into a quantized
  one) and neither can pooling (the capture has a separate Q after an FP16 GlobalAveragePool);
- a graph input or an op outside every unit writes FP32.
INT4 is weight-only: its activations, and so its formats, are FP16 (``fmt``); TF32's are FP32.

The last rule's pointwise case is TensorRT's documented fusion, not seen in a capture (there is none of a
transformer): it is what lets a transformer's LayerNorm feed INT8 GEMMs without a separate quantize kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..precision import Precision

QUANTIZING_KINDS = frozenset({"region", "norm", "softmax"})  # unit kinds whose kernel can end in a quantize
Reformat = Callable[[float, Precision, Precision], float]  # (elements, written format, needed format) -> seconds


@dataclass(frozen=True)
class Crossing:
    """A tensor that units read (or that leaves a unit for an FP32 reader), with who writes and reads it."""

    tensor: str
    elems: float  # at the deployment batch
    writer: str | None  # the unit that writes it; None: a graph input or an op outside every unit (FP32)
    readers: tuple[str, ...]  # units that read it
    fp32_reader: bool = False  # an op outside every unit or a graph output reads it
    quantizing: bool = False  # the writer's kernel can end in a quantize (QUANTIZING_KINDS)


def fmt(p: Precision) -> Precision:
    """The format a unit at precision p reads and writes its activations in."""
    return p.activations


def needed(c: Crossing, plan: Mapping[str, Precision]) -> set[Precision]:
    out = {fmt(plan.get(r, Precision.FP32)) for r in c.readers}
    return out | {Precision.FP32} if c.fp32_reader else out


def writable(c: Crossing, p: Precision | None, need: set[Precision]) -> set[Precision]:
    """Formats the writer, running at p (None: fixed FP32), can store given the formats its readers need."""
    if p is None:
        return {Precision.FP32}
    if p.quantized or (c.quantizing and len(need) == 1 and next(iter(need)).quantized):
        return {fmt(p)} | need
    return {fmt(p)}


def crossing_seconds(c: Crossing, plan: Mapping[str, Precision], reformat: Reformat) -> float:
    """The cheapest way to give every reader its format: the written one, and a reformat for each other."""
    need = needed(c, plan)
    p = plan.get(c.writer, Precision.FP32) if c.writer else None
    return min(sum(reformat(c.elems, w, f) for f in need if f != w) for w in writable(c, p, need))
