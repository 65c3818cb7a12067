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
        return cls(units, choices, noise, cost, weights)

    def with_cost(self, cost: CostModel) -> DecisionSpace:
        return DecisionSpace(self.units, self.choices, self.noise, cost, self.weight_elems)

    def uniform(self, p: Precision) -> dict[str, Precision]:
        """Every unit that may run in ``p`` runs in it."""
        return {u: p for u in self.units if p in self.choices[u]}

    def size_mb(self, plan: Mapping[str, Precision]) -> float:
        return sum(self.weight_elems[u] * WEIGHT_BYTES[plan.get(u, Precision.FP32)] for u in self.units) / 1e6

    def predicted_noise(self, plan: Mapping[str, Precision]) -> float:
        return sum(self.noise[(u, plan.get(u, Precision.FP32))] for u in self.units)

    def seconds(self, plan: Mapping[str, Precision]) -> float:
        return self.cost.plan_seconds(plan)
