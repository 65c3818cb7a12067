"""The decision space: what each unit may choose, what it costs, and what it is predicted to add.

Prediction: per-unit sensitivities add up as output noise power. A unit lowered alone adds normalised noise
nmse[u,p] to the outputs; independent quantization errors add in power, so a mix is predicted to add
sum(nmse[u,p]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..artifacts import Analysis
from ..precision import Precision
from .cost import WEIGHT_BYTES, CostModel


@dataclass(frozen=True)
class DecisionSpace:
    """Units in graph order, each unit's allowed precisions, their predicted noise and costs."""

    units: list[str]
    choices: Mapping[str, list[Precision]]
    noise: Mapping[tuple[str, Precision], float]  # predicted added NMSE, FP32 = 0
    cost: CostModel
    weight_elems: Mapping[str, float] = field(default_factory=dict)
    tf32_units: frozenset[str] = frozenset()  # GEMM units whose FP32 math TF32 changes (one flag for them all)

    @classmethod
    def from_analysis(cls, analysis: Analysis, cost: CostModel) -> DecisionSpace:
        """Every finite measured result whose precision the cost model's GPU runs (a T4 has no FP8 or BF16)."""
        units, choices, noise, weights = [], {}, {}, {}
        for u in analysis.units:
            units.append(u.name)
            choices[u.name] = [Precision.FP32]
            noise[(u.name, Precision.FP32)] = 0.0
            for p, result in u.results.items():
                # a unit whose lowering produced NaN/Inf never gets p, nor one the target GPU cannot run
                if math.isfinite(result.severity) and cost.target.runs(p):
                    choices[u.name].append(p)
                    noise[(u.name, p)] = result.severity
            weights[u.name] = cost.costs[u.name].weight_elems
        gemms = frozenset(u.name for u in analysis.units if u.kind == "gemm") if cost.target.runs(
            Precision.TF32) else frozenset()
        return cls(units, choices, noise, cost, weights, gemms)

    def with_cost(self, cost: CostModel) -> DecisionSpace:
        return DecisionSpace(self.units, self.choices, self.noise, cost, self.weight_elems, self.tf32_units)

    def feasible(self, plan: Mapping[str, Precision]) -> bool:
        """TF32 is one builder flag: no GEMM unit may need true FP32 while another runs TF32."""
        used = {plan.get(u, Precision.FP32) for u in self.tf32_units}
        return not {Precision.FP32, Precision.TF32} <= used

    def tf32(self, plan: Mapping[str, Precision]) -> bool | None:
        """Whether the plan's engine runs with TF32 on: True when a unit uses it, False when a GEMM unit needs
        true FP32, None when no GEMM unit stays in FP32 (the flag changes nothing)."""
        used = {plan.get(u, Precision.FP32) for u in self.tf32_units}
        return True if Precision.TF32 in used else False if Precision.FP32 in used else None

    def uniform(self, p: Precision) -> dict[str, Precision]:
        """Every unit that may run in ``p`` runs in it."""
        return {u: p for u in self.units if p in self.choices[u]}

    def size_mb(self, plan: Mapping[str, Precision]) -> float:
        return sum(self.weight_elems[u] * WEIGHT_BYTES[plan.get(u, Precision.FP32)] for u in self.units) / 1e6

    def predicted_noise(self, plan: Mapping[str, Precision]) -> float:
        return sum(self.noise[(u, plan.get(u, Precision.FP32))] for u in self.units)

    def seconds(self, plan: Mapping[str, Precision]) -> float:
        return self.cost.plan_seconds(plan)
