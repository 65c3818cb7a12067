"""The unit: one decision point of the plan (a main op and what TensorRT fuses into it, or a float region),
and the table ``units.find_units`` returns. Kept apart so that both finders (``units``, ``regions``) build
units without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..artifacts import SkippedLayer as Skipped
from ..precision import Precision


@dataclass(frozen=True)
class Unit:
    """One decision point: a main op plus its fused epilogue, named after its main ONNX node."""

    name: str
    main_op: str
    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    activations: tuple[str, ...]  # tensors quantized per-tensor for INT8 (main inputs + residual input)
    weight: str | None  # initializer quantized per-channel for INT8
    weight_axis: int | None  # per-channel axis of ``weight``; None means per-tensor
    inputs: tuple[str, ...]  # non-constant tensors the unit reads
    outputs: tuple[str, ...]  # tensors the unit hands to the rest of the graph
    kind: str = "gemm"  # gemm, norm, softmax, pool, resize, recurrent, region (see network.regions)
    allowed: tuple[Precision, ...] = (Precision.INT8, Precision.FP16, Precision.BF16)  # what TensorRT can run
    half_inputs: tuple[str, ...] | None = None  # inputs cast for FP16 (None: all of ``inputs``)

    @property
    def casts(self) -> tuple[str, ...]:
        """The inputs an FP16 lowering casts: the float ones (never masks' booleans, shapes or indices)."""
        return self.inputs if self.half_inputs is None else self.half_inputs


@dataclass
class UnitTable:
    units: list[Unit] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
