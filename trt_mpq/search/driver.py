"""The search driver: choose every unit's precision under a budget, exactly, each candidate measured.

How much predicted noise the task metric tolerates is not known in advance, so it is calibrated against
measured mixes: the fastest mix the other budgets allow is measured first; if it misses, the noise budget is
bisected (in log space), each candidate mix is solved exactly (``milp.solve``), built, and its metric measured
on the evaluation data. Only mixes whose *measured* metric meets the budget are kept. The result is the
fastest measured-passing mix, never a prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..artifacts import Budget, Outcome, ParetoPoint, StepKind, VerificationStep
from ..errors import ConfigError
from ..precision import Plan
from .milp import Objective, solve
from .space import DecisionSpace

Measure = Callable[[Plan], float]  # a mix -> its measured task metric (higher is better)


@dataclass(frozen=True)
class SearchResult:
    plan: Plan
    score: float
    fp32_score: float
    allowed_drop: float | None
    steps: list[VerificationStep]
    message: str
    outcome: Outcome


def _latency_budget(space: DecisionSpace, budget: Budget) -> float | None:
    if budget.max_latency_ms is not None:
        return budget.max_latency_ms / 1e3
    if budget.min_speedup is not None:
        return space.seconds(space.uniform(budget.speedup_vs)) / budget.min_speedup
    return None


class Search:
    """One search: ``run`` finds the fastest mix whose measured metric meets the (checked) budget (see the
    module docstring); ``refine`` later looks for a passing mix between two of its steps. Every measured
    candidate is a step, kept in ``steps`` in the order measured; a mix is measured once."""

    def __init__(self, space: DecisionSpace, budget: Budget, fp32_score: float, measure: Measure,
                 log: Callable[[str], None] = lambda s: None, max_steps: int = 12) -> None:
        self.space, self.budget, self.fp32_score, self.measure, self.log = space, budget, fp32_score, measure, log
        self.max_steps = max_steps
        self.allowed = budget.allowed_drop(fp32_score)
        self.seconds = _latency_budget(space, budget)
        self.steps: list[VerificationStep] = []
        self._seen: dict[str, VerificationStep] = {}

    def verify(self, plan: Plan, noise_budget: float | None, kind: StepKind = StepKind.BISECTION
               ) -> VerificationStep:
        key, space = plan.digest(), self.space
        if key not in self._seen:
            score = self.measure(plan)
            passed = self.allowed is None or self.fp32_score - score <= self.allowed + 1e-12
            s = VerificationStep(plan, kind, noise_budget, space.predicted_noise(plan), space.seconds(plan) * 1e3,
                                 score, passed)
            self._seen[key] = s
            self.steps.append(s)
            self.log(f"verify: {plan.describe()}, predicted "
                     f"noise {s.predicted_noise:.3g}, {s.estimated_ms:.3f} ms ({space.cost.label}) -> measured "
                     f"{score:.4f} ({'meets' if passed else 'misses'} the budget) {kind.value}".rstrip())
        return self._seen[key]

    def refine(self, rejected: VerificationStep, safer: VerificationStep | None) -> VerificationStep | None:
        """A passing mix between a candidate rejected later (by the confirm check) and a safer one."""
        return _between(self.space, self.budget, self.seconds, self.verify, rejected, safer)

    def _result(self, plan: Plan, score: float, message: str, outcome: Outcome) -> SearchResult:
        return SearchResult(plan, score, self.fp32_score, self.allowed, self.steps, message, outcome)

    def run(self) -> SearchResult:
        space, budget, fp32_score, allowed, seconds = (self.space, self.budget, self.fp32_score, self.allowed,
                                                       self.seconds)
        verify, result, label, max_steps = self.verify, self._result, space.cost.label, self.max_steps
        if allowed is None:  # latency budget only: least predicted noise within the latency, then measured
            plan = solve(space, seconds_budget=seconds, size_budget_mb=budget.max_size_mb, minimise=Objective.NOISE)
            if plan is None:
                raise ConfigError("the latency budget cannot be met by any mix of the analysed precisions "
                                  f"(fastest estimate {space.seconds(solve(space) or {}) * 1e3:.3f} ms).")
            step = verify(plan, None, StepKind.LATENCY)
            return result(plan, step.score, f"latency budget met ({label}); the least predicted noise within it",
                          Outcome.LATENCY)

        fastest = solve(space, seconds_budget=seconds, size_budget_mb=budget.max_size_mb)
        if fastest is None:
            raise ConfigError("no mix of the analysed precisions meets the latency/size budget.")
        best: VerificationStep | None = verify(fastest, space.predicted_noise(fastest), StepKind.FASTEST)
        if not best.passed:
            best = _bisect(space, budget, seconds, verify, space.predicted_noise(fastest), max_steps)
        if best is not None and not best.plan and best.kind is StepKind.FASTEST:
            return result(Plan(), fp32_score, "all-FP32 is the fastest mix under this latency source; nothing was "
                          "lowered", Outcome.FP32_FASTEST)
        if best is None or not best.plan:
            if best is None and (seconds is not None or budget.max_size_mb is not None):
                raise ConfigError("no verified mix meets both the accuracy and the latency/size budget; "
                                  "loosen one of them.")
            return result(Plan(), fp32_score, "only all-FP32 meets the accuracy budget on the evaluation data; "
                          "nothing was lowered", Outcome.ONLY_FP32)
        message = (f"{len(best.plan)} of {len(space.units)} units lowered; measured drop {fp32_score - best.score:.4f} "
                   f"within {allowed:.4f}")
        strict = solve(space, noise_budget=best.noise_budget if best.kind is not StepKind.FASTEST else None,
                       seconds_budget=seconds, size_budget_mb=budget.max_size_mb, tie_break=False)
        if strict is not None and space.seconds(strict) < space.seconds(best.plan) - 1e-12:
            gain_us = (space.seconds(best.plan) - space.seconds(strict)) * 1e6
            message += (f"; the strictly fastest mix is {gain_us:.1f} us faster ({label}), within the latency source's "
                        f"resolution ({space.cost.resolution * 1e6:.0f} us), so the smaller weights won")
        return result(best.plan, best.score, message, Outcome.LOWERED)


def search(space: DecisionSpace, budget: Budget, fp32_score: float, measure: Measure,
           log: Callable[[str], None] = lambda s: None, max_steps: int = 12) -> SearchResult:
    """The fastest mix whose measured metric meets the (checked) budget: ``Search(...).run()``."""
    return Search(space, budget, fp32_score, measure, log, max_steps).run()


def _bisect(space: DecisionSpace, budget: Budget, seconds: float | None,
            verify: Callable[[Plan, float | None], VerificationStep], top: float,
            max_steps: int) -> VerificationStep | None:
    """Bisect the noise budget in log space; the fastest measured-passing step, or None."""
    positive = [v for v in space.noise.values() if v > 0]
    lo, hi = math.log(min(positive)) - 1, math.log(top)
    best = None
    for _ in range(max_steps):
        mid = math.exp((lo + hi) / 2)
        plan = solve(space, noise_budget=mid, seconds_budget=seconds, size_budget_mb=budget.max_size_mb,
                     no_tie_break_from_s=None if best is None else best.estimated_ms / 1e3)  # skipped below
        if plan is None:  # infeasible: look higher
            lo = math.log(mid)
            continue
        if best is not None and space.seconds(plan) * 1e3 >= best.estimated_ms:
            # (the solver breaking ties within the latency source's resolution by size) no faster than a mix
            # already measured to pass: measuring it could not change the answer; look higher, as after a pass,
            # until the budget is resolved (the solves near a failing budget are the slowest, up to 1 s each)
            lo = math.log(mid)
            if hi - lo < 0.05:
                break
            continue
        step = verify(plan, mid)
        if step.passed:
            lo = math.log(mid)
            if best is None or step.estimated_ms < best.estimated_ms:
                best = step
        else:
            hi = math.log(mid)
        if hi - lo < 0.05:
            break
    return best


def _between(space: DecisionSpace, budget: Budget, seconds: float | None, verify, rejected: VerificationStep,
             safer: VerificationStep | None, tries: int = 3) -> VerificationStep | None:
    """A mix strictly between a candidate rejected later (by the confirm check) and the next safer passing one
    (all-FP32 when None), that passes here: the noise budget bisected between theirs, at most ``tries`` solves."""
    positive = [v for v in space.noise.values() if v > 0]
    if not positive or rejected.predicted_noise <= 0:
        return None
    lo = math.log(safer.predicted_noise) if safer is not None and safer.predicted_noise > 0 else \
        math.log(min(positive)) - 1
    hi = math.log(rejected.predicted_noise)
    floor = safer.plan if safer is not None else Plan()
    for _ in range(tries):
        mid = math.exp((lo + hi) / 2)
        plan = solve(space, noise_budget=mid, seconds_budget=seconds, size_budget_mb=budget.max_size_mb)
        if plan is not None and plan == rejected.plan:  # not below it yet: lower
            hi = math.log(mid)
            continue
        if plan is None or plan == floor or not plan:  # at or below the safer one: higher
            lo = math.log(mid)
            continue
        step = verify(plan, mid, StepKind.REPAIR)
        if step.passed:
            return step
        hi = math.log(mid)
    return None


def pareto(space: DecisionSpace, measure: Measure, points: int = 10,
           log: Callable[[str], None] = lambda s: None) -> list[ParetoPoint]:
    """Sweep the noise budget from all-FP32 to the fastest mix; measure each distinct optimum; mark the measured
    front (no other point is at least as fast and scores higher)."""
    positive = [v for v in space.noise.values() if v > 0]
    total = sum(max(space.noise[(u, p)] for p in space.choices[u]) for u in space.units)
    budgets = [0.0] + (list(np.geomspace(min(positive) / 2, total, points - 1)) if positive else [])
    seen: dict[str, tuple[Plan, float, float, float]] = {}
    for b in budgets:
        plan = solve(space, noise_budget=b)
        if plan is None or plan.digest() in seen:
            continue
        seen[plan.digest()] = (plan, space.seconds(plan) * 1e3, space.size_mb(plan), measure(plan))
        log(f"pareto: {len(plan)} units lowered, est. {seen[plan.digest()][1]:.3f} ms -> measured "
            f"{seen[plan.digest()][3]:.4f}")
    ordered = sorted(seen.values(), key=lambda q: (q[1], -q[3]))
    out, best = [], -math.inf
    for plan, ms, mb, score in ordered:
        out.append(ParetoPoint(plan, ms, mb, score, on_front=score > best))
        best = max(best, score)
    return out
