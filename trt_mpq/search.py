"""Choose every unit's precision under a budget, exactly, then prove the choice on held-out data.

The choice is a multiple-choice knapsack with boundary costs, solved as an integer program (scipy's HiGHS
``milp``): binary x[u,p] (unit u runs in p, one p per unit), continuous y[e] >= x[a,p] - x[b,p] for every
tensor e between units a and b (1 when their precisions differ, which costs a reformat).

Prediction: per-unit sensitivities add up as output noise power. A unit lowered alone adds normalised noise
nmse[u,p] to the outputs; independent quantization errors add in power, so a mix is predicted to add
sum(nmse[u,p]). How much noise the task metric tolerates is not known in advance, so it is calibrated against
measured mixes: the noise budget is bisected (in log space), each candidate mix is built and its metric
measured on the evaluation data, and only mixes whose *measured* metric meets the budget are kept. The result
is the fastest measured-passing mix, never a prediction.

Ties: mixes whose latencies differ by less than the latency source's resolution (one kernel launch) are not
told apart by it, so among them the one with the smallest weights wins (lower precision, smaller engine). On
a tiny network at batch 1 every mix is launch-bound and this is what decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .errors import ConfigError
from .latency import ELEMENT_BYTES, CostModel
from .metrics import severity
from .plan import Plan, Precision


@dataclass(frozen=True)
class Budget:
    max_drop: float | None = None  # on the evaluation metric, absolute (or a fraction with relative)
    relative: bool = False
    max_latency_ms: float | None = None
    min_speedup: float | None = None
    speedup_vs: Precision = Precision.FP32
    max_size_mb: float | None = None

    def check(self) -> None:
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


@dataclass
class Options:
    """What each unit may choose, what it costs, and what it is predicted to add."""

    units: list[str]
    choices: dict[str, list[Precision]]
    noise: dict[tuple[str, Precision], float]  # predicted added NMSE, FP32 = 0
    cost: CostModel
    weight_elems: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_sensitivity(cls, doc: dict, cost: CostModel) -> Options:
        units, choices, noise, weights = [], {}, {}, {}
        for u in doc["units"]:
            name = u["name"]
            units.append(name)
            choices[name] = [Precision.FP32]
            noise[(name, Precision.FP32)] = 0.0
            for p, result in u["results"].items():
                value = severity(result)
                if math.isfinite(value):  # a unit whose lowering produced NaN/Inf never gets that precision
                    choices[name].append(Precision(p))
                    noise[(name, Precision(p))] = value
            weights[name] = cost.costs[name].weight_elems
        return cls(units, choices, noise, cost, weights)

    def size_mb(self, plan: dict[str, Precision]) -> float:
        return sum(self.weight_elems[u] * ELEMENT_BYTES[plan.get(u, Precision.FP32)] for u in self.units) / 1e6

    def predicted_noise(self, plan: dict[str, Precision]) -> float:
        return sum(self.noise[(u, plan.get(u, Precision.FP32))] for u in self.units)

    def seconds(self, plan: dict[str, Precision]) -> float:
        return self.cost.plan_seconds(plan)


def solve(opts: Options, noise_budget: float | None = None, seconds_budget: float | None = None,
          size_budget_mb: float | None = None, minimise: str = "latency",
          tie_break: bool = True) -> dict[str, Precision] | None:
    """Exact optimum of the integer program; None when no assignment satisfies the constraints."""
    var = [(u, p) for u in opts.units for p in opts.choices[u]]
    index = {v: i for i, v in enumerate(var)}
    edges = [(a, b, e) for a, b, e in opts.cost.edges if a in opts.choices and b in opts.choices]
    n = len(var) + len(edges)
    lat = np.zeros(n)
    for (u, p), i in index.items():
        lat[i] = opts.cost.unit_seconds(u, p)
        if p is not Precision.FP32 and u in opts.cost.loose:  # boundary with FP32 ops or graph inputs/outputs
            lat[i] += opts.cost.reformat_seconds(opts.cost.loose[u])
    for k, (_, _, elems) in enumerate(edges):
        lat[len(var) + k] = opts.cost.reformat_seconds(elems)
    noise = np.zeros(n)
    for (u, p), i in index.items():
        noise[i] = opts.noise[(u, p)]
    rows, lo, hi = [], [], []
    for u in opts.units:  # exactly one precision per unit
        row = np.zeros(n)
        row[[index[(u, p)] for p in opts.choices[u]]] = 1
        rows.append(row), lo.append(1), hi.append(1)
    for k, (a, b, _) in enumerate(edges):  # y_e >= x[a,p] - x[b,p]
        for p in set(opts.choices[a]) | set(opts.choices[b]):
            row = np.zeros(n)
            row[len(var) + k] = 1
            if (a, p) in index:
                row[index[(a, p)]] -= 1
            if (b, p) in index:
                row[index[(b, p)]] += 1
            rows.append(row), lo.append(0), hi.append(np.inf)
    if noise_budget is not None:
        # FP16 noise (~1e-8) is below the solver's feasibility tolerance (~1e-7): scale the row so the smallest
        # non-zero noise is 1, or "noise <= 0" would admit every FP16 unit.
        scale = float(noise[noise > 0].min()) if np.any(noise > 0) else 1.0
        rows.append(noise / scale), lo.append(-np.inf), hi.append(noise_budget / scale)
    if seconds_budget is not None:
        rows.append(lat), lo.append(-np.inf), hi.append(seconds_budget)
    if size_budget_mb is not None:
        size = np.zeros(n)
        for (u, p), i in index.items():
            size[i] = opts.weight_elems[u] * ELEMENT_BYTES[p] / 1e6
        rows.append(size), lo.append(-np.inf), hi.append(size_budget_mb)
    if minimise == "latency":
        objective = lat
    else:  # scaled like the constraint; ties on noise go to the faster mix
        objective = noise / max(float(noise[noise > 0].min()) if np.any(noise > 0) else 1.0, 1e-300)
        objective = objective + 1e-6 * lat / max(float(lat.max()), 1e-300)
    integrality = np.r_[np.ones(len(var)), np.zeros(len(edges))]
    res = milp(objective, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integrality,
               bounds=Bounds(0, 1))
    if not res.success or res.x is None:
        return None
    if minimise == "latency" and tie_break:  # second pass: smallest weights within the latency resolution
        size = np.zeros(n)
        for (u, p), i in index.items():
            size[i] = opts.weight_elems.get(u, 0.0) * ELEMENT_BYTES[p]
        rows.append(lat), lo.append(-np.inf), hi.append(float(lat @ res.x) + opts.cost.resolution)
        objective = size / max(float(size.max()), 1e-300) + 1e-6 * lat / max(float(lat.max()), 1e-300)
        tied = milp(objective, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integrality,
                    bounds=Bounds(0, 1))
        if tied.success and tied.x is not None:
            res = tied
    return {u: p for (u, p), i in index.items() if res.x[i] > 0.5 and p is not Precision.FP32}


@dataclass
class Step:
    """One verification: a candidate mix, what was predicted, what was measured."""

    noise_budget: float | None
    plan: dict[str, Precision]
    predicted_noise: float
    estimated_ms: float
    score: float
    passed: bool
    note: str = ""

    def to_json(self) -> dict:
        lowered = [p for p in self.plan.values()]
        return {"noise_budget": self.noise_budget, "predicted_noise": self.predicted_noise,
                "latency_ms": round(self.estimated_ms, 4), "score": self.score, "passed": self.passed,
                "int8": lowered.count(Precision.INT8), "fp16": lowered.count(Precision.FP16), "note": self.note,
                "plan_digest": Plan.of(self.plan).digest()}


@dataclass
class SearchResult:
    plan: dict[str, Precision]
    score: float
    fp32_score: float
    allowed_drop: float | None
    steps: list[Step]
    message: str


def search(opts: Options, budget: Budget, fp32_score: float, measure: Callable[[dict[str, Precision]], float],
           log: Callable[[str], None] = lambda s: None, max_steps: int = 12) -> SearchResult:
    """The fastest mix whose measured metric meets the budget (see the module docstring)."""
    budget.check()
    allowed = budget.allowed_drop(fp32_score)
    seconds = None
    if budget.max_latency_ms is not None:
        seconds = budget.max_latency_ms / 1e3
    elif budget.min_speedup is not None:
        reference = opts.seconds({u: budget.speedup_vs for u in opts.units if budget.speedup_vs in opts.choices[u]})
        seconds = reference / budget.min_speedup
    steps: list[Step] = []
    cache: dict[str, Step] = {}
    kind = opts.cost.kind.split(",")[0]  # "estimated", "measured (...)"

    def verify(plan: dict[str, Precision], noise_budget: float | None, note: str = "") -> Step:
        key = Plan.of(plan).digest()
        if key not in cache:
            score = measure(plan)
            passed = allowed is None or fp32_score - score <= allowed + 1e-12
            cache[key] = Step(noise_budget, plan, opts.predicted_noise(plan), opts.seconds(plan) * 1e3, score,
                              passed, note)
            steps.append(cache[key])
            s = cache[key]
            log(f"verify: {s.to_json()['int8']} INT8 + {s.to_json()['fp16']} FP16 units, predicted noise "
                f"{s.predicted_noise:.3g}, {s.estimated_ms:.3f} ms ({kind}) -> measured {score:.4f} "
                f"({'meets' if passed else 'misses'} the budget) {note}".rstrip())
        return cache[key]

    if allowed is None:  # latency budget only: least predicted noise within the latency, then measured
        plan = solve(opts, seconds_budget=seconds, size_budget_mb=budget.max_size_mb, minimise="noise")
        if plan is None:
            raise ConfigError("the latency budget cannot be met by any mix of the analysed precisions "
                              f"(fastest estimate {opts.seconds(solve(opts) or {}) * 1e3:.3f} ms).")
        step = verify(plan, None, "least predicted noise within the latency budget")
        return SearchResult(plan, step.score, fp32_score, None, steps,
                            f"latency budget met ({kind}); the least predicted noise within it")

    fastest = solve(opts, seconds_budget=seconds, size_budget_mb=budget.max_size_mb)
    if fastest is None:
        raise ConfigError("no mix of the analysed precisions meets the latency/size budget.")
    top = opts.predicted_noise(fastest)
    best = verify(fastest, top, "fastest mix allowed")
    if not best.passed:
        positive = [v for v in opts.noise.values() if v > 0]
        lo, hi = math.log(min(positive)) - 1, math.log(top)
        best = None
        for _ in range(max_steps):
            mid = math.exp((lo + hi) / 2)
            plan = solve(opts, noise_budget=mid, seconds_budget=seconds, size_budget_mb=budget.max_size_mb)
            if plan is None:
                lo = math.log(mid)
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
    if best is not None and not best.plan and best.note == "fastest mix allowed":
        return SearchResult({}, fp32_score, fp32_score, allowed, steps,
                            "all-FP32 is the fastest mix under this latency source; nothing was lowered")
    if best is None or not best.plan:
        if best is None and (seconds is not None or budget.max_size_mb is not None):
            raise ConfigError("no verified mix meets both the accuracy and the latency/size budget; "
                              "loosen one of them.")
        return SearchResult({}, fp32_score, fp32_score, allowed, steps,
                            "only all-FP32 meets the accuracy budget on the evaluation data; nothing was lowered")
    lowered = len(best.plan)
    message = (f"{lowered} of {len(opts.units)} units lowered; measured drop {fp32_score - best.score:.4f} within "
               f"{allowed:.4f}")
    strict = solve(opts, noise_budget=best.noise_budget if best.note != "fastest mix allowed" else None,
                   seconds_budget=seconds, size_budget_mb=budget.max_size_mb, tie_break=False)
    if strict is not None and opts.seconds(strict) < opts.seconds(best.plan) - 1e-12:
        gain_us = (opts.seconds(best.plan) - opts.seconds(strict)) * 1e6
        message += (f"; the strictly fastest mix is {gain_us:.1f} us faster ({kind}), within the latency source's "
                    f"resolution ({opts.cost.resolution * 1e6:.0f} us), so the smaller weights won")
    return SearchResult(best.plan, best.score, fp32_score, allowed, steps, message)


@dataclass
class ParetoPoint:
    plan: dict[str, Precision]
    estimated_ms: float
    size_mb: float
    score: float
    on_front: bool = False

    def to_json(self) -> dict:
        counts = [p for p in self.plan.values()]
        return {"latency_ms": round(self.estimated_ms, 4), "size_mb": round(self.size_mb, 3), "score": self.score,
                "on_front": self.on_front, "int8": counts.count(Precision.INT8),
                "fp16": counts.count(Precision.FP16), "plan": Plan.of(self.plan).to_json()}


def pareto(opts: Options, measure: Callable[[dict[str, Precision]], float], points: int = 10,
           log: Callable[[str], None] = lambda s: None) -> list[ParetoPoint]:
    """Sweep the noise budget from all-FP32 to the fastest mix; measure each distinct optimum; mark the measured
    front (no other point is at least as fast and scores higher)."""
    positive = [v for v in opts.noise.values() if v > 0]
    total = sum(max(opts.noise[(u, p)] for p in opts.choices[u]) for u in opts.units)
    budgets = [0.0] + (list(np.geomspace(min(positive) / 2, total, points - 1)) if positive else [])
    seen: dict[str, ParetoPoint] = {}
    for b in budgets:
        plan = solve(opts, noise_budget=b)
        if plan is None:
            continue
        key = Plan.of(plan).digest()
        if key not in seen:
            full = {u: plan.get(u, Precision.FP32) for u in opts.units}
            seen[key] = ParetoPoint(plan, opts.seconds(full) * 1e3, opts.size_mb(full), measure(plan))
            log(f"pareto: {len(plan)} units lowered, est. {seen[key].estimated_ms:.3f} ms -> measured "
                f"{seen[key].score:.4f}")
    result = sorted(seen.values(), key=lambda q: (q.estimated_ms, -q.score))
    best = -math.inf
    for q in result:
        if q.score > best:
            q.on_front, best = True, q.score
    return result
