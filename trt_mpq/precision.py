"""Precisions, and the plan: which precision each unit runs in. A frozen, JSON-serialisable, hashable value."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .errors import ConfigError


class Precision(str, Enum):
    """How a unit runs. FP16/BF16: Cast islands; INT8/FP8: Q/DQ on activations and weights; INT4: weights
    only (block-wise DequantizeLinear), activations in FP16; TF32: an FP32 GEMM/convolution whose Tensor Core
    math rounds its operands to a 10-bit mantissa (a builder flag, global for an engine: not in the graph)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    BF16 = "bf16"
    FP8 = "fp8"
    INT4 = "int4"
    TF32 = "tf32"

    @property
    def opset(self) -> int:
        """The lowest ONNX opset that can express it: FP8 types need 19, INT4 and block_size 21."""
        return {Precision.FP8: 19, Precision.INT4: 21}.get(self, 13)

    @property
    def quantized(self) -> bool:
        """Q/DQ on its activations: a quantized kernel, which writes any format (its DQ joins its output)."""
        return self in (Precision.INT8, Precision.FP8)

    @property
    def activations(self) -> Precision:
        """The format its activations are read and written in (INT4 is weight-only: FP16)."""
        return {Precision.INT4: Precision.FP16, Precision.TF32: Precision.FP32}.get(self, self)

    @classmethod
    def parse_list(cls, text: str) -> tuple[Precision, ...]:
        """Parse ``int8,fp16`` into precisions, in the order given, without duplicates."""
        names = [t.strip().lower() for t in text.split(",") if t.strip()]
        known = {p.value: p for p in cls}
        bad = [n for n in names if n not in known]
        if bad or not names:
            raise ConfigError(
                f"--precisions '{text}' is not a list of {', '.join(p.value for p in cls if p is not cls.FP32)}."
            )
        out = tuple(dict.fromkeys(known[n] for n in names))
        if Precision.FP32 in out:
            raise ConfigError("--precisions lists lower precisions to try; fp32 is always the reference.")
        return out


def needs_opset(precisions: Iterable[Precision]) -> int:
    """The ONNX opset a model must have for every precision of ``precisions`` (13 at least: per-channel Q/DQ)."""
    return max((Precision(p).opset for p in precisions), default=13)


@dataclass(frozen=True, eq=False)
class Plan(Mapping[str, Precision]):
    """Unit name -> precision for the lowered units; units not listed stay FP32. A frozen, hashable mapping
    (equal to any mapping with the same lowered units), JSON-serialisable, with a digest that keys caches."""

    precisions: tuple[tuple[str, Precision], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, Precision | str]) -> Plan:
        items = sorted((k, Precision(v)) for k, v in mapping.items() if Precision(v) is not Precision.FP32)
        return cls(tuple(items))

    def __getitem__(self, unit: str) -> Precision:
        for name, p in self.precisions:
            if name == unit:
                return p
        raise KeyError(unit)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.precisions)

    def __len__(self) -> int:
        return len(self.precisions)

    def __hash__(self) -> int:
        return hash(self.precisions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        try:
            lowered = {k: Precision(v) for k, v in other.items() if Precision(v) is not Precision.FP32}
        except ValueError:  # a value that is no precision: not equal to any plan
            return False
        return dict(self.precisions) == lowered

    def precision(self, unit: str) -> Precision:
        return self.get(unit, Precision.FP32)

    def count(self, precision: Precision) -> int:
        return sum(1 for _, p in self.precisions if p is precision)

    def counts(self) -> dict[Precision, int]:
        """Lowered units per precision: INT8 and FP16 always, the others where used."""
        return {p: self.count(p) for p in Precision if p in (Precision.INT8, Precision.FP16) or self.count(p)
                and p is not Precision.FP32}

    def describe(self) -> str:
        """``40 FP16 + 3 INT8 + 2 FP8 units`` (in the order of ``Precision``)"""
        return " + ".join(f"{n} {p.value.upper()}" for p, n in self.counts().items()) + " units"

    def to_json(self) -> dict[str, str]:
        return {k: v.value for k, v in self.precisions}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def precision_files(items: Mapping | Iterable[str] | None, flag: str) -> dict[Precision, Path]:
    """``{Precision.INT8: Path(...)}`` from a mapping, or from ``int8=profile_int8.json`` items."""
    if isinstance(items, Mapping):
        items = [f"{k.value if isinstance(k, Precision) else k}={v}" for k, v in items.items()]
    out = {}
    for item in items or []:
        key, sep, path = item.partition("=")
        try:
            precision = Precision(key.strip().lower())
        except ValueError:
            precision = None
        if not sep or precision is None or not path:
            raise ConfigError(f"{flag} '{item}' is not PRECISION=FILE, e.g. int8=profile_int8.json.")
        out[precision] = Path(path)
    return out
