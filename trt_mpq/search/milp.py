"""The exact choice: a multiple-choice knapsack with boundary costs, solved as an integer program (scipy's
HiGHS ``milp``): binary x[u,p] (unit u runs in p, one p per unit), continuous y[e] >= x[a,p] - x[b,p] for every
tensor e between units a and b (1 when their precisions differ, which costs a reformat).

Ties: mixes whose latencies differ by less than the latency source's resolution (one kernel launch) are not
told apart by it, so among them the one with the smallest weights wins (lower precision, smaller engine). On
a tiny network at batch 1 every mix is launch-bound and this is what decides. A tie never chooses a mix
estimated slower than the whole graph in FP16 when the fastest one is not.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from ..precision import Plan, Precision
from .cost import ELEMENT_BYTES
from .space import DecisionSpace


class Objective(str, Enum):
    LATENCY = "latency"  # fastest mix within the noise (and latency/size) budget
    NOISE = "noise"  # least predicted noise within the latency (and size) budget


def solve(opts: DecisionSpace, noise_budget: float | None = None, seconds_budget: float | None = None,
          size_budget_mb: float | None = None, minimise: Objective | str = Objective.LATENCY,
          tie_break: bool = True) -> Plan | None:
    """Exact optimum of the integer program; None when no assignment satisfies the constraints."""
    minimise = Objective(minimise)
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
    if minimise is Objective.LATENCY:
        objective = lat
    else:  # scaled like the constraint; ties on noise go to the faster mix
        objective = noise / max(float(noise[noise > 0].min()) if np.any(noise > 0) else 1.0, 1e-300)
        objective = objective + 1e-6 * lat / max(float(lat.max()), 1e-300)
    integrality = np.r_[np.ones(len(var)), np.zeros(len(edges))]
    res = milp(objective, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integrality,
               bounds=Bounds(0, 1))
    if not res.success or res.x is None:
        return None
    if minimise is Objective.LATENCY and tie_break:  # second pass: smallest weights within the latency resolution
        size = np.zeros(n)
        for (u, p), i in index.items():
            size[i] = opts.weight_elems.get(u, 0.0) * ELEMENT_BYTES[p]
        ceiling = float(lat @ res.x) + opts.cost.resolution
        fp16 = opts.seconds(opts.uniform(Precision.FP16))  # the whole graph in FP16, what --fp16 builds
        if float(lat @ res.x) <= fp16:  # a tie never hands back a mix slower than that reference
            ceiling = min(ceiling, fp16)
        rows.append(lat), lo.append(-np.inf), hi.append(ceiling)
        objective = size / max(float(size.max()), 1e-300) + 1e-6 * lat / max(float(lat.max()), 1e-300)
        tied = milp(objective, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integrality,
                    bounds=Bounds(0, 1))
        if tied.success and tied.x is not None:
            res = tied
    return Plan.of({u: p for (u, p), i in index.items() if res.x[i] > 0.5})
