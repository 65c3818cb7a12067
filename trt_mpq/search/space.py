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
from ..network.units import MAIN_OPS
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
    fp32_gemms_outside: bool = False  # a GEMM no unit covers stays in FP32, verified true FP32: TF32 must be off

    @classmethod
    def from_analysis(cls, analysis: Analysis, cost: CostModel) -> DecisionSpace:
        """Every finite measured result whose precision the cost model's GPU runs (a T4 has no FP8 or BF16)."""
        units, choices, noise, weights = [], {}, {}, {}
        # a unit whose lowering produced NaN/Inf never gets p, nor one the target GPU cannot run; TF32 is
        # one flag for every GEMM of the engine, so a GEMM outside every unit (true FP32) rules it out
        outside = any(s.op_type in MAIN_OPS for s in getattr(analysis, "skipped", ()))
        for u in analysis.units:
            units.append(u.name)
            choices[u.name] = [Precision.FP32]
            noise[(u.name, Precision.FP32)] = 0.0
            for p, result in u.results.items():
                if math.isfinite(result.severity) and cost.target.runs(p) and not (outside and p is Precision.TF32):
                    choices[u.name].append(p)
                    noise[(u.name, p)] = result.severity
            weights[u.name] = cost.costs[u.name].weight_elems
        gemms = frozenset(u.name for u in analysis.units if u.kind == "gemm")
        return cls(units, choices, noise, cost, weights, gemms, outside)

    def with_cost(self, cost: CostModel) -> DecisionSpace:
        return DecisionSpace(self.units, self.choices, self.noise, cost, self.weight_elems, self.tf32_units,
                             self.fp32_gemms_outside)

    def feasible(self, plan: Mapping[str, Precision]) -> bool:
        """TF32 is one builder flag: no GEMM unit may need true FP32 while another runs TF32."""
        used = {plan.get(u, Precision.FP32) for u in self.tf32_units}
        return not {Precision.FP32, Precision.TF32} <= used

    def tf32(self, plan: Mapping[str, Precision]) -> bool | None:
        """Whether the plan's engine runs with TF32 on: True when a unit uses it, False when a GEMM unit needs
        true FP32, None when no GEMM unit stays in FP32 (the flag changes nothing)."""
        used = {plan.get(u, Precision.FP32) for u in self.tf32_units}
        if Precision.TF32 in used:
            return True
        return False if Precision.FP32 in used or self.fp32_gemms_outside else None

    def uniform(self, p: Precision) -> dict[str, Precision]:
        """Every unit that may run in ``p`` runs in it."""
        return {u: p for u in self.units if p in self.choices[u]}

    def size_mb(self, plan: Mapping[str, Precision]) -> float:
        return sum(self.weight_elems[u] * WEIGHT_BYTES[plan.get(u, Precision.FP32)] for u in self.units) / 1e6

    def predicted_noise(self, plan: Mapping[str, Precision]) -> float:
        return sum(self.noise[(u, plan.get(u, Precision.FP32))] for u in self.units)

    def seconds(self, plan: Mapping[str, Precision]) -> float:
        return self.cost.plan_seconds(plan)
