"""The analysis (sensitivity.json): what ``analyze`` measured per unit, on which data and backend."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..precision import Precision

SENSITIVITY_SCHEMA = "trt-mpq/sensitivity/1"


@dataclass(frozen=True)
class UnitResult:
    """How far the outputs moved with one unit lowered alone (see ``measure.output_delta``).

    JSON has no infinities: identical outputs give ``sqnr_db`` None with ``nmse`` 0; NaN/Inf outputs give
    ``nonfinite`` (how many values) and None for the metrics they make meaningless."""

    cosine: float | None
    sqnr_db: float | None
    nmse: float | None
    max_abs: float | None
    top1_agreement: float | None = None
    nonfinite: int = 0
    fp16_overflow: tuple[str, ...] = ()  # tensors and constants beyond the FP16 range
    outputs: Mapping[str, UnitResult] = field(default_factory=dict)  # per output, when the model has several
    thresholds: Mapping[str, str] = field(default_factory=dict)  # INT8 with --calibrator auto: tensor -> method
    max_nmse: float | None = None  # ... and the NMSE the plain max threshold gave, for comparison

    @property
    def severity(self) -> float:
        """Sort key, larger = more sensitive: NaN/Inf outputs first, then normalised MSE."""
        return math.inf if self.nonfinite else (self.nmse or 0.0)

    def with_fp16_overflow(self, tensors: list[str]) -> UnitResult:
        return UnitResult(**{**self.__dict__, "fp16_overflow": tuple(tensors)})

    def with_thresholds(self, thresholds: Mapping[str, str], max_nmse: float | None) -> UnitResult:
        return UnitResult(**{**self.__dict__, "thresholds": dict(thresholds), "max_nmse": max_nmse})

    def to_json(self) -> dict:
        out: dict[str, Any] = {"cosine": self.cosine, "sqnr_db": self.sqnr_db, "nmse": self.nmse,
                               "max_abs": self.max_abs}
        if self.nonfinite:
            out["nonfinite"] = self.nonfinite
        if self.top1_agreement is not None:
            out["top1_agreement"] = self.top1_agreement
        if self.outputs:
            out["outputs"] = {k: v.to_json() for k, v in self.outputs.items()}
        if self.fp16_overflow:
            out["fp16_overflow"] = list(self.fp16_overflow)
        if self.thresholds:
            out["thresholds"] = dict(self.thresholds)
            out["max_nmse"] = self.max_nmse
        return out

    @classmethod
    def from_json(cls, d: Mapping) -> UnitResult:
        return cls(d.get("cosine"), d.get("sqnr_db"), d.get("nmse"), d.get("max_abs"), d.get("top1_agreement"),
                   int(d.get("nonfinite") or 0), tuple(d.get("fp16_overflow", ())),
                   {k: cls.from_json(v) for k, v in d.get("outputs", {}).items()}, dict(d.get("thresholds", {})),
                   d.get("max_nmse"))


@dataclass(frozen=True)
class AnalysedUnit:
    """A unit as analysed: its ONNX nodes and its result at each precision measured."""

    name: str  # the unit's main ONNX node
    main_op: str  # Conv, Gemm, MatMul, ...
    nodes: tuple[str, ...]  # every ONNX node the decision covers, in graph order
    op_types: tuple[str, ...]  # their op types, in the same order
    results: Mapping[Precision, UnitResult] = field(default_factory=dict)
    kind: str = "gemm"  # gemm, norm, softmax, pool, resize, recurrent, region

    def to_json(self) -> dict:
        return {"name": self.name, "main_op": self.main_op, "kind": self.kind, "nodes": list(self.nodes),
                "op_types": list(self.op_types), "results": {p.value: r.to_json() for p, r in self.results.items()}}

    @classmethod
    def from_json(cls, d: Mapping) -> AnalysedUnit:
        return cls(d["name"], d["main_op"], tuple(d["nodes"]), tuple(d["op_types"]),
                   {Precision(p): UnitResult.from_json(r) for p, r in d["results"].items()}, d.get("kind", "gemm"))


@dataclass(frozen=True)
class SkippedLayer:
    """A layer no unit covers, and why."""

    node: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class DataInfo:
    """Where samples came from: source, kind, count, fingerprint, and kind-specific details (preprocessing,
    seed, ...)."""

    source: str
    kind: str
    samples: int
    fingerprint: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"source": self.source, "kind": self.kind, **self.details, "samples": self.samples,
                "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, d: Mapping, extra: tuple[str, ...] = ()) -> DataInfo:
        known = {"source", "kind", "samples", "fingerprint", *extra}
        return cls(d["source"], d["kind"], int(d["samples"]), d.get("fingerprint", ""),
                   {k: v for k, v in d.items() if k not in known})


@dataclass(frozen=True)
class Calibration:
    """The calibration data, the range method, the weight scales, bias correction and the batch the analysis
    measured with; ``float_samples``: how many of the samples FP16/BF16/TF32 were measured on, when fewer
    than all (their errors are roundings, steady across samples)."""

    data: DataInfo
    calibrator: str
    batch: int
    weight_scales: str = "max"
    bias_correction: bool = False
    float_samples: int | None = None

    def to_json(self) -> dict:
        out = {**self.data.to_json(), "calibrator": self.calibrator, "batch": self.batch,
               "weight_scales": self.weight_scales, "bias_correction": self.bias_correction}
        if self.float_samples is not None:
            out["float_samples"] = self.float_samples
        return out

    @classmethod
    def from_json(cls, d: Mapping) -> Calibration:
        extra = ("calibrator", "batch", "weight_scales", "bias_correction", "float_samples")
        floats = d.get("float_samples")
        return cls(DataInfo.from_json(d, extra), d["calibrator"], int(d["batch"]), d.get("weight_scales", "max"),
                   bool(d.get("bias_correction", False)), None if floats is None else int(floats))


@dataclass(frozen=True)
class BackendRecord:
    """The backend a stage ran on: a line for people, and the settings that recreate it."""

    name: str
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    path: str
    sha256: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # the --shape overrides applied
    fixed: Mapping[str, object] = field(default_factory=dict)  # the --fix input values applied

    def to_json(self) -> dict:
        out = {"path": self.path, "sha256": self.sha256, "inputs": list(self.inputs),
               "outputs": list(self.outputs), "notes": list(self.notes),
               "shapes": {k: list(v) for k, v in self.shapes.items()}}
        if self.fixed:
            out["fixed"] = dict(self.fixed)
        return out

    @classmethod
    def from_json(cls, d: Mapping) -> ModelInfo:
        return cls(d["path"], d["sha256"], tuple(d.get("inputs", ())), tuple(d.get("outputs", ())),
                   tuple(d.get("notes", ())), {k: tuple(v) for k, v in d.get("shapes", {}).items()},
                   dict(d.get("fixed", {})))


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
        return cls(ModelInfo.from_json(d["model"]), BackendRecord(name, d["backend"], settings),
                   tuple(Precision(p) for p in d["precisions"]), Calibration.from_json(d["calibration"]),
                   tuple(AnalysedUnit.from_json(u) for u in d["units"]),
                   tuple(SkippedLayer(**s) for s in d.get("skipped", ())), dict(d.get("versions", {})),
                   float(d.get("elapsed_s", 0.0)), d.get("ranges", "ranges.json"))
