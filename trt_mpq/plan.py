"""The precision plan: which precision each unit runs in. A frozen, JSON-serialisable, hashable value."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from .errors import ConfigError


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

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


@dataclass(frozen=True)
class Plan:
    """Unit name -> precision; units not listed stay FP32."""

    precisions: tuple[tuple[str, Precision], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, Precision | str]) -> Plan:
        items = sorted((k, Precision(v)) for k, v in mapping.items() if Precision(v) is not Precision.FP32)
        return cls(tuple(items))

    def precision(self, unit: str) -> Precision:
        return dict(self.precisions).get(unit, Precision.FP32)

    def lowered(self) -> dict[str, Precision]:
        return dict(self.precisions)

    def to_json(self) -> dict[str, str]:
        return {k: v.value for k, v in self.precisions}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]
