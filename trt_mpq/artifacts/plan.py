"""The plan and its report (plan.json, report.json): the budget, the chosen precision per unit, the measured
result, the latency summary and every verification run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import ConfigError
from ..precision import Plan, Precision
from .analysis import Calibration, DataInfo, UnitResult
from .record import Record, always, empty, keep, none

PLAN_SCHEMA = "trt-mpq/plan/1"


@dataclass(frozen=True)
class Budget(Record):
    """What the plan must meet: an accuracy drop, a latency or speed-up, a weight size (any combination that
    includes an accuracy or a latency budget)."""

    max_drop: float | None = None  # on the evaluation metric, absolute (or a fraction with relative)
    relative: bool = False
    max_latency_ms: float | None = None
    min_speedup: float | None = None
    speedup_vs: Precision = Precision.FP32
    max_size_mb: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "speedup_vs", Precision(self.speedup_vs))

    def check(self) -> None:
        """Raise ConfigError unless the budget makes sense (finite, positive, not contradictory)."""
        for name, value in (("--max-drop", self.max_drop), ("--max-latency-ms", self.max_latency_ms),
                            ("--min-speedup", self.min_speedup), ("--max-size-mb", self.max_size_mb)):
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, not {value}.")
        if self.max_drop is not None and self.max_drop < 0:
            raise ConfigError(f"--max-drop must be zero or positive, not {self.max_drop}.")
        if self.relative and self.max_drop is None:
            raise ConfigError("--relative qualifies --max-drop; give --max-drop too.")
        for name, value in (("--max-latency-ms", self.max_latency_ms), ("--min-speedup", self.min_speedup),
                            ("--max-size-mb", self.max_size_mb)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, not {value}.")
        if self.max_latency_ms is not None and self.min_speedup is not None:
            raise ConfigError("give --max-latency-ms or --min-speedup, not both.")
        if self.max_drop is None and self.max_latency_ms is None and self.min_speedup is None:
            raise ConfigError("give a budget: --max-drop (accuracy), --max-latency-ms or --min-speedup (latency).")

    def allowed_drop(self, fp32_score: float) -> float | None:
        if self.max_drop is None:
            return None
        return self.max_drop * abs(fp32_score) if self.relative else self.max_drop


class StepKind(str, Enum):
    """Why a candidate mix was verified."""

    FASTEST = "fastest mix allowed"
    BISECTION = ""  # a step of the noise-budget bisection
    LATENCY = "least predicted noise within the latency budget"
    REPAIR = "between a mix the confirm check rejected and a safer one"


def _counts(plan: Plan) -> dict[str, int]:
    return {p.value: n for p, n in plan.counts().items()}


@dataclass(frozen=True)
class VerificationStep(Record):
    """One verification: a candidate mix, what was predicted, what was measured."""

    plan: Plan
    kind: StepKind = keep(key="note")
    noise_budget: float | None
    predicted_noise: float
    estimated_ms: float = keep(key="latency_ms", round=4)  # latency of the mix under the cost model
    score: float  # what the search decided on (the smooth surrogate of a top-1 metric)
    passed: bool
    exact: float | None = None  # the exact metric on the same samples, where it differs from ``score``

    @property
    def note(self) -> str:
        return self.kind.value

    def to_json(self) -> dict:
        return {**self.fields_json(), **_counts(self.plan), "plan_digest": self.plan.digest()}


@dataclass(frozen=True)
class ParetoPoint(Record):
    """A measured mix of the --pareto sweep."""

    plan: Plan
    estimated_ms: float = keep(key="latency_ms", round=4)
    size_mb: float = keep(round=3)
    score: float = keep()
    on_front: bool = False

    def to_json(self) -> dict:
        return {**self.fields_json(), **_counts(self.plan)}


@dataclass(frozen=True)
class Look(Record):
    """One candidate checked on the confirm part of the evaluation data."""

    plan: Plan
    estimated_ms: float = keep(key="latency_ms", round=4)
    score: float = keep()  # on the confirm part as given
    low: float = keep(always)  # its interval (one-sided: the lower bound, high is +inf), written as "interval"
    high: float = keep(always)
    replicas: tuple[float, ...]  # on each jittered replica
    bound: float | None  # with a confidence level: the worst lower bound, which decides
    passed: bool
    changed: tuple[int, ...] = keep(always, default=())  # confirm samples whose top-1 differs from FP32's

    @property
    def worst(self) -> float:
        return min((self.score, *self.replicas))

    @property
    def decision(self) -> float:
        """The figure held against the budget: the worst replica, or the worst lower bound."""
        return self.bound if self.bound is not None else self.worst

    def to_json(self) -> dict:
        return {**self.fields_json(), **_counts(self.plan), "decision": self.decision,
                "interval": [self.low, None if math.isinf(self.high) else self.high],
                "plan_digest": self.plan.digest()}

    @classmethod
    def from_json(cls, d: Mapping) -> Look:
        low, high = d["interval"]
        return super().from_json({**d, "low": low, "high": math.inf if high is None else high})


@dataclass(frozen=True)
class Confirmation(Record):
    """How the result was proven: the split, the replicas, the interval, every look, what changed."""

    search_samples: int
    confirm_samples: int
    replicas: int
    jitter: float  # relative to each input's RMS
    confidence: float | None  # asked for (None: the budget is met by the worst replica's point score)
    look_confidence: float | None  # each look's level (Bonferroni over the looks)
    interval_confidence: float  # of the reported interval
    fp32_score: float  # FP32 on the confirm part
    threshold: float | None  # the score the decision must reach: FP32 on the confirm part - allowed drop
    chosen: Look | None  # the look that decided (None: no mix with lowered units was confirmed)
    looks: tuple[Look, ...] = ()
    changed: tuple[str, ...] = ()  # evaluation samples whose top-1 the chosen mix changes (both parts)
    limits: tuple[str, ...] = ()  # what the evaluation data can and cannot resolve

    @property
    def margin(self) -> float | None:
        if self.chosen is None or self.threshold is None:
            return None
        return self.chosen.decision - self.threshold

    def to_json(self) -> dict:
        return {**self.fields_json(), "margin": self.margin}


class Outcome(str, Enum):
    """How the search ended."""

    LOWERED = "lowered"  # a verified mix with lowered units
    NOT_CONFIRMED = "not-confirmed"  # mixes passed the search but none the confirm check
    FP32_FASTEST = "fp32-fastest"  # all-FP32 is the fastest mix under the latency source
    ONLY_FP32 = "only-fp32"  # only all-FP32 meets the accuracy budget
    LATENCY = "latency"  # a latency budget alone: the least predicted noise within it


@dataclass(frozen=True)
class PlanResult(Record):
    outcome: Outcome
    fp32_score: float  # FP32 on all evaluation samples
    score: float  # the mix, on the confirm part (data the search did not select on)
    allowed_drop: float | None
    units: Mapping[Precision, int]  # how many units run in each precision
    message: str
    confirmation: Confirmation | None = keep(none, default=None)

    @property
    def drop(self) -> float:
        """On the samples ``score`` was measured on (the confirm part, when there is one)."""
        reference = self.confirmation.fp32_score if self.confirmation else self.fp32_score
        return reference - self.score

    def to_json(self) -> dict:
        return {**self.fields_json(), "drop": self.drop}


@dataclass(frozen=True)
class Compared(Record):
    """One model beside the plan, for an analysis of an already-quantized file: the file as shipped, the plan,
    all-FP16; each scored on the confirm part, its latency from the same cost model."""

    name: str  # "as shipped", "this plan", "all-FP16"
    what: str  # e.g. "53 INT8 units (the file's Q/DQ)"
    score: float = keep(round=6)
    ms: float = keep(round=4)


@dataclass(frozen=True)
class LatencySummary(Record):
    """Latency of the mix and of the uniform mixes, with where the figures come from."""

    kind: str  # "estimated", or "measured (...), precision boundaries estimated"
    label: str  # the first word(s) of ``kind``: estimated, measured, partly measured
    target: str  # the device the figures describe
    source: str  # the datasheet of the cost model's peak rates
    batch: int
    all_ms: Mapping[Precision, float] = keep(round=4)
    mix_ms: float = keep(round=4)
    note: str = keep(empty, default="")  # why a faster uniform mix (all-FP16) was not the answer, when one is
    tf32: bool | None = None  # the engine's TF32 flag: on, off (--noTF32), None: no GEMM stays FP32


@dataclass(frozen=True)
class PlannedUnit(Record):
    name: str
    precision: Precision
    nodes: tuple[str, ...]
    predicted_noise: float  # the unit's NMSE measured alone; a mix is predicted to add them up
    measured_alone: UnitResult | None
    latency_ms: Mapping[Precision, float]
    kind: str = "gemm"
    weight_mb: float = 0.0  # its weights at its precision


@dataclass(frozen=True)
class Evaluation(Record):
    data: DataInfo = keep(flatten=True)
    metric: str


@dataclass(frozen=True)
class PlanReport(Record):
    """Everything ``plan`` decided and measured. plan.json is this without the latency summary, which is an
    estimate or an import, not part of the decision's proof; report.json has it all."""

    model_path: str = keep(always)  # written as "model": {"path", "sha256"}
    model_sha256: str = keep(always)
    evaluation: Evaluation
    calibration: Calibration
    budget: Budget
    result: PlanResult
    latency: LatencySummary
    units: tuple[PlannedUnit, ...]
    verification: tuple[VerificationStep, ...]
    backend: str
    versions: Mapping[str, str] = field(default_factory=dict)
    elapsed_s: float = keep(round=2, default=0.0)
    pareto: tuple[ParetoPoint, ...] = keep(empty, default=())
    compared: tuple[Compared, ...] = keep(empty, default=())  # an already-quantized file: it, the plan, all-FP16

    @property
    def plan(self) -> Plan:
        return Plan.of({u.name: u.precision for u in self.units})

    def to_json(self) -> dict[str, Any]:
        return {"schema": PLAN_SCHEMA, "model": {"path": self.model_path, "sha256": self.model_sha256},
                **self.fields_json()}

    @classmethod
    def from_json(cls, d: Mapping) -> PlanReport:
        """report.json read back (plan.json lacks the latency summary)."""
        if d.get("schema") != PLAN_SCHEMA:
            raise ValueError(f"schema {d.get('schema')!r} is not {PLAN_SCHEMA}")
        model = d["model"]
        return super().from_json({**d, "model_path": model["path"], "model_sha256": model["sha256"]})

    def plan_json(self) -> dict[str, Any]:
        """plan.json: the report less its latency figures, but with the deployment the plan was made for."""
        out = {k: v for k, v in self.to_json().items() if k != "latency"}
        out["deployment"] = {"batch": self.latency.batch, "target": self.latency.target, "tf32": self.latency.tf32}
        return out


def planned_units(doc: Mapping) -> tuple[PlannedUnit, ...]:
    """The units of a plan.json (or report.json) document, typed; KeyError/TypeError/ValueError when damaged."""
    if doc.get("schema") != PLAN_SCHEMA:
        raise ValueError(f"schema {doc.get('schema')!r} is not {PLAN_SCHEMA}")
    return tuple(PlannedUnit.from_json(u) for u in doc["units"])
