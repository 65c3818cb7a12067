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

PLAN_SCHEMA = "trt-mpq/plan/1"


@dataclass(frozen=True)
class Budget:
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

    def to_json(self) -> dict:
        return {"max_drop": self.max_drop, "relative": self.relative, "max_latency_ms": self.max_latency_ms,
                "min_speedup": self.min_speedup, "speedup_vs": self.speedup_vs.value,
                "max_size_mb": self.max_size_mb}

    @classmethod
    def from_json(cls, d: Mapping) -> Budget:
        return cls(d.get("max_drop"), bool(d.get("relative")), d.get("max_latency_ms"), d.get("min_speedup"),
                   Precision(d.get("speedup_vs", "fp32")), d.get("max_size_mb"))


class StepKind(str, Enum):
    """Why a candidate mix was verified."""

    FASTEST = "fastest mix allowed"
    BISECTION = ""  # a step of the noise-budget bisection
    LATENCY = "least predicted noise within the latency budget"
    REPAIR = "between a mix the confirm check rejected and a safer one"


def _counts(plan: Plan) -> dict[str, int]:
    return {p.value: n for p, n in plan.counts().items()}


@dataclass(frozen=True)
class VerificationStep:
    """One verification: a candidate mix, what was predicted, what was measured."""

    plan: Plan
    kind: StepKind
    noise_budget: float | None
    predicted_noise: float
    estimated_ms: float  # latency of the mix under the cost model (estimated, or measured per unit)
    score: float  # what the search decided on (the smooth surrogate of a top-1 metric)
    passed: bool
    exact: float | None = None  # the exact metric on the same samples, where it differs from ``score``

    @property
    def note(self) -> str:
        return self.kind.value

    def to_json(self) -> dict:
        return {"noise_budget": self.noise_budget, "predicted_noise": self.predicted_noise,
                "latency_ms": round(self.estimated_ms, 4), "score": self.score, "exact": self.exact,
                "passed": self.passed,
                **_counts(self.plan), "note": self.kind.value, "plan_digest": self.plan.digest()}


@dataclass(frozen=True)
class ParetoPoint:
    """A measured mix of the --pareto sweep."""

    plan: Plan
    estimated_ms: float
    size_mb: float
    score: float
    on_front: bool = False

    def to_json(self) -> dict:
        return {"latency_ms": round(self.estimated_ms, 4), "size_mb": round(self.size_mb, 3), "score": self.score,
                "on_front": self.on_front, **_counts(self.plan), "plan": self.plan.to_json()}


@dataclass(frozen=True)
class Look:
    """One candidate checked on the confirm part of the evaluation data."""

    plan: Plan
    estimated_ms: float
    score: float  # on the confirm part as given
    low: float  # its interval (one-sided: the lower bound, high is +inf)
    high: float
    replicas: tuple[float, ...]  # on each jittered replica
    bound: float | None  # with a confidence level: the worst lower bound, which decides
    passed: bool
    changed: tuple[int, ...] = ()  # confirm samples whose top-1 decision differs from FP32's

    @property
    def worst(self) -> float:
        return min((self.score, *self.replicas))

    @property
    def decision(self) -> float:
        """The figure held against the budget: the worst replica, or the worst lower bound."""
        return self.bound if self.bound is not None else self.worst

    def to_json(self) -> dict:
        return {**_counts(self.plan), "latency_ms": round(self.estimated_ms, 4), "score": self.score,
                "interval": [self.low, None if math.isinf(self.high) else self.high],
                "replicas": list(self.replicas), "bound": self.bound, "decision": self.decision,
                "passed": self.passed, "plan_digest": self.plan.digest()}


@dataclass(frozen=True)
class Confirmation:
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
        return {"search_samples": self.search_samples, "confirm_samples": self.confirm_samples,
                "replicas": self.replicas, "jitter": self.jitter, "confidence": self.confidence,
                "look_confidence": self.look_confidence, "interval_confidence": self.interval_confidence,
                "fp32_score": self.fp32_score, "threshold": self.threshold, "margin": self.margin,
                "chosen": self.chosen.to_json() if self.chosen else None, "looks": [x.to_json() for x in self.looks],
                "changed": list(self.changed), "limits": list(self.limits)}


class Outcome(str, Enum):
    """How the search ended."""

    LOWERED = "lowered"  # a verified mix with lowered units
    NOT_CONFIRMED = "not-confirmed"  # mixes passed the search but none the confirm check
    FP32_FASTEST = "fp32-fastest"  # all-FP32 is the fastest mix under the latency source
    ONLY_FP32 = "only-fp32"  # only all-FP32 meets the accuracy budget
    LATENCY = "latency"  # a latency budget alone: the least predicted noise within it


@dataclass(frozen=True)
class PlanResult:
    outcome: Outcome
    fp32_score: float  # FP32 on all evaluation samples
    score: float  # the mix, on the confirm part (data the search did not select on)
    allowed_drop: float | None
    units: Mapping[Precision, int]  # how many units run in each precision
    message: str
    confirmation: Confirmation | None = None

    @property
    def drop(self) -> float:
        """On the samples ``score`` was measured on (the confirm part, when there is one)."""
        reference = self.confirmation.fp32_score if self.confirmation else self.fp32_score
        return reference - self.score

    def to_json(self) -> dict:
        out = {"fp32_score": self.fp32_score, "score": self.score, "drop": self.drop,
               "allowed_drop": self.allowed_drop, "units": {p.value: n for p, n in self.units.items()},
               "message": self.message, "outcome": self.outcome.value}
        if self.confirmation is not None:
            out["confirmation"] = self.confirmation.to_json()
        return out


@dataclass(frozen=True)
class LatencySummary:
    """Latency of the mix and of the uniform mixes, with where the figures come from."""

    kind: str  # "estimated", or "measured (...), precision boundaries estimated"
    label: str  # the first word(s) of ``kind``: estimated, measured, partly measured
    target: str  # the device the figures describe
    source: str  # the datasheet of the cost model's peak rates
    batch: int
    all_ms: Mapping[Precision, float]
    mix_ms: float
    note: str = ""  # why a faster uniform mix (all-FP16) was not the answer, when one is
    tf32: bool | None = None  # the engine's TF32 flag: on, off (--noTF32), None: no GEMM stays FP32

    def to_json(self) -> dict:
        out = {"kind": self.kind, "label": self.label, "target": self.target, "source": self.source,
               "batch": self.batch, "all_ms": {p.value: round(v, 4) for p, v in self.all_ms.items()},
               "mix_ms": round(self.mix_ms, 4), "tf32": self.tf32}
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class PlannedUnit:
    name: str
    precision: Precision
    nodes: tuple[str, ...]
    predicted_noise: float  # the unit's NMSE measured alone; a mix is predicted to add them up
    measured_alone: UnitResult | None
    latency_ms: Mapping[Precision, float]
    kind: str = "gemm"
    weight_mb: float = 0.0  # its weights at its precision

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "precision": self.precision.value, "nodes": list(self.nodes),
                "weight_mb": self.weight_mb,
                "predicted_noise": self.predicted_noise,
                "measured_alone": self.measured_alone.to_json() if self.measured_alone else None,
                "latency_ms": {p.value: v for p, v in self.latency_ms.items()}}


@dataclass(frozen=True)
class Evaluation:
    data: DataInfo
    metric: str

    def to_json(self) -> dict:
        return {**self.data.to_json(), "metric": self.metric}


@dataclass(frozen=True)
class PlanReport:
    """Everything ``plan`` decided and measured. plan.json is this without the latency summary, which is an
    estimate or an import, not part of the decision's proof; report.json has it all."""

    model_path: str
    model_sha256: str
    evaluation: Evaluation
    calibration: Calibration
    budget: Budget
    result: PlanResult
    latency: LatencySummary
    units: tuple[PlannedUnit, ...]
    verification: tuple[VerificationStep, ...]
    backend: str
    versions: Mapping[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    pareto: tuple[ParetoPoint, ...] = ()

    @property
    def plan(self) -> Plan:
        return Plan.of({u.name: u.precision for u in self.units})

    def to_json(self) -> dict[str, Any]:
        out = {
            "schema": PLAN_SCHEMA,
            "model": {"path": self.model_path, "sha256": self.model_sha256},
            "evaluation": self.evaluation.to_json(),
            "calibration": self.calibration.to_json(),
            "budget": self.budget.to_json(),
            "result": self.result.to_json(),
            "latency": self.latency.to_json(),
            "units": [u.to_json() for u in self.units],
            "verification": [s.to_json() for s in self.verification],
            "backend": self.backend,
            "versions": dict(self.versions),
            "elapsed_s": round(self.elapsed_s, 2),
        }
        if self.pareto:
            out["pareto"] = [q.to_json() for q in self.pareto]
        return out

    def plan_json(self) -> dict[str, Any]:
        """plan.json: the report less its latency figures, but with the deployment the plan was made for."""
        out = {k: v for k, v in self.to_json().items() if k != "latency"}
        out["deployment"] = {"batch": self.latency.batch, "target": self.latency.target, "tf32": self.latency.tf32}
        return out
