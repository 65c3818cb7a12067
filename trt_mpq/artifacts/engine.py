"""What ``build`` and ``check`` found: planned vs realised precision per unit (build.json)."""

from __future__ import annotations

from dataclasses import dataclass

from ..precision import Precision
from .record import Record

BUILD_SCHEMA = "trt-mpq/build/1"


@dataclass(frozen=True)
class CheckRow(Record):
    """One unit's planned precision against what a built engine runs (None: not found in the engine)."""

    unit: str
    planned: Precision
    realized: str | None

    @property
    def matches(self) -> bool:
        """INT4 is weight-only (the layer reads FP16) and TF32 is FP32 storage: both read as their activations."""
        return self.realized in (self.planned.value, self.planned.activations.value)

    @property
    def known(self) -> bool:
        """Whether the engine said what the unit runs in (not fused with other units, not N/A, found)."""
        return self.realized in {p.value for p in Precision}

    @property
    def differs(self) -> bool:
        """The engine runs the unit in another precision than planned (unknown is not a difference)."""
        return self.known and not self.matches

    def to_json(self) -> dict:
        return {**self.fields_json(), "matches": self.matches}


@dataclass(frozen=True)
class BuildResult(Record):
    """What ``build`` made (build.json): the engine, and planned vs realised per unit."""

    engine: str
    units: tuple[CheckRow, ...]

    @property
    def all_match(self) -> bool:
        return all(r.matches for r in self.units)

    def to_json(self) -> dict:
        return {"schema": BUILD_SCHEMA, **self.fields_json()}
