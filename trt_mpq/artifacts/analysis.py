"""The analysis (sensitivity.json): what ``analyze`` measured per unit, on which data and backend."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..precision import Precision
from .record import Record, empty, keep, none

SENSITIVITY_SCHEMA = "trt-mpq/sensitivity/1"


@dataclass(frozen=True)
class UnitResult(Record):
    """How far the outputs moved with one unit lowered alone (see ``measure.output_delta``).

    JSON has no infinities: identical outputs give ``sqnr_db`` None with ``nmse`` 0; NaN/Inf outputs give
    ``nonfinite`` (how many values) and None for the metrics they make meaningless."""

    cosine: float | None
    sqnr_db: float | None
    nmse: float | None
    max_abs: float | None
    top1_agreement: float | None = keep(none, default=None)
    nonfinite: int = keep(empty, default=0)
    fp16_overflow: tuple[str, ...] = keep(empty, default=())  # tensors and constants beyond the FP16 range
    outputs: Mapping[str, UnitResult] = keep(empty, default_factory=dict)  # per output, when the model has several
    thresholds: Mapping[str, str] = keep(empty, default_factory=dict)  # INT8, --calibrator auto: tensor -> method
    max_nmse: float | None = keep(none, default=None)  # ... and the NMSE the plain max threshold gave

    @property
    def severity(self) -> float:
        """Sort key, larger = more sensitive: NaN/Inf outputs first, then normalised MSE."""
        return math.inf if self.nonfinite else (self.nmse or 0.0)

    def with_fp16_overflow(self, tensors: list[str]) -> UnitResult:
        return replace(self, fp16_overflow=tuple(tensors))

    def with_thresholds(self, thresholds: Mapping[str, str], max_nmse: float | None) -> UnitResult:
        return replace(self, thresholds=dict(thresholds), max_nmse=max_nmse)

    def to_json(self) -> dict:
        out = self.fields_json()
        if self.thresholds:
            out["max_nmse"] = self.max_nmse  # written with the thresholds, None included
        return out


@dataclass(frozen=True)
class AnalysedUnit(Record):
    """A unit as analysed: its ONNX nodes and its result at each precision measured."""

    name: str  # the unit's main ONNX node
    main_op: str  # Conv, Gemm, MatMul, ...
    nodes: tuple[str, ...]  # every ONNX node the decision covers, in graph order
    op_types: tuple[str, ...]  # their op types, in the same order
    results: Mapping[Precision, UnitResult] = field(default_factory=dict)
    kind: str = "gemm"  # gemm, norm, softmax, pool, resize, recurrent, region


@dataclass(frozen=True)
class SkippedLayer:
    """A layer no unit covers, and why."""

    node: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class DataInfo(Record):
    """Where samples came from: source, kind, count, fingerprint, and kind-specific details (preprocessing,
    seed, ...), written beside the others."""

    source: str
    kind: str
    samples: int
    fingerprint: str = ""
    details: Mapping[str, Any] = keep(flatten=True, default_factory=dict)


@dataclass(frozen=True)
class Calibration(Record):
    """The calibration data, the range method, the weight scales, bias correction and the batch the analysis
    measured with; ``float_samples``: how many of the samples FP16/BF16/TF32 were measured on, when fewer
    than all (their errors are roundings, steady across samples)."""

    data: DataInfo = keep(flatten=True)
    calibrator: str
    batch: int
    weight_scales: str = "max"
    bias_correction: bool = False
    float_samples: int | None = keep(none, default=None)


@dataclass(frozen=True)
class BackendRecord:
    """The backend a stage ran on: a line for people, and the settings that recreate it."""

    name: str
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo(Record):
    path: str
    sha256: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # the --shape overrides applied
    fixed: Mapping[str, object] = keep(empty, default_factory=dict)  # the --fix input values applied
    measured: tuple[str, ...] = keep(empty, default=())  # the tensors measured at, when not the outputs


@dataclass(frozen=True)
class Analysis:
    """What ``analyze`` found (sensitivity.json); the INT8 ranges sit beside it in ranges.json."""

    model: ModelInfo
    backend: BackendRecord
    precisions: tuple[Precision, ...]
    calibration: Calibration
    units: tuple[AnalysedUnit, ...]
    skipped: tuple[SkippedLayer, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    ranges_file: str = "ranges.json"

    def unit(self, name: str) -> AnalysedUnit:
        return next(u for u in self.units if u.name == name)

    def to_json(self) -> dict:
        return {
            "schema": SENSITIVITY_SCHEMA,
            "model": self.model.to_json(),
            "backend": self.backend.description,
            "backend_settings": {"name": self.backend.name, **self.backend.settings},
            "precisions": [p.value for p in self.precisions],
            "calibration": self.calibration.to_json(),
            "units": [u.to_json() for u in self.units],
            "skipped": [asdict(s) for s in self.skipped],
            "ranges": self.ranges_file,
            "versions": dict(self.versions),
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_json(cls, d: Mapping) -> Analysis:
        if d.get("schema") != SENSITIVITY_SCHEMA:
            raise ValueError(f"schema {d.get('schema')!r} is not {SENSITIVITY_SCHEMA}")
        settings = dict(d.get("backend_settings") or {})
        name = settings.pop("name", None) or "onnxruntime"
        return cls(model=ModelInfo.from_json(d["model"]), backend=BackendRecord(name, d["backend"], settings),
                   precisions=tuple(Precision(p) for p in d["precisions"]),
                   calibration=Calibration.from_json(d["calibration"]),
                   units=tuple(AnalysedUnit.from_json(u) for u in d["units"]),
                   skipped=tuple(SkippedLayer(**s) for s in d.get("skipped", ())),
                   versions=dict(d.get("versions", {})), elapsed_s=float(d.get("elapsed_s", 0.0)),
                   ranges_file=d.get("ranges", "ranges.json"))
