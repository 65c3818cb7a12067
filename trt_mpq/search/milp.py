"""The exact choice: a multiple-choice knapsack with boundary costs, solved as an integer program (scipy's
HiGHS ``milp``): binary x[u,p] (unit u runs in p, one p per unit) and, for every tensor between units
(search.borders), its reformat cost as a function of the precisions of the units that write and read it.

A tensor with few such combinations (at most JOINT_LIMIT: a chain link, a residual fork) gets one continuous
z[a] per combination a, at the cost ``crossing_seconds`` gives it, with z summing to x[u,p] over the
combinations where u runs in p. For integer x exactly one z is 1; for fractional x this is the marginal
polytope, whose relaxation is tight on chains and trees, so HiGHS proves the optimum almost at its root node
(MobileNetV2: 3 s -> 0.1 s per solve). A tensor with more combinations (a transformer's LayerNorm output read
by Q, K, V and a residual Add in many precisions) keeps the compact rule: need[f] >= x[r,p] for each reader r
whose p reads format f, one binary written format w[f] that the writer's precision allows, and
reformat[s,f] >= need[f] + w[s] - 1 at the cost of reformatting s to f.

Ties: mixes whose latencies differ by less than the latency source's resolution (one kernel launch) are not
told apart by it, so among them the one with the smallest weights wins (lower precision, smaller engine). On
a tiny network at batch 1 every mix is launch-bound and this is what decides. A tie never chooses a mix
estimated slower than the whole graph in FP16 when the fastest one is not.
"""

from __future__ import annotations

import itertools
import math
from enum import Enum

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from ..precision import Plan, Precision
from .borders import Crossing, crossing_seconds, fmt
from .cost import WEIGHT_BYTES
from .space import DecisionSpace

US = 1e6
EXACT = {"mip_rel_gap": 1e-9}  # the optimum, not HiGHS's default 0.01 % of it
JOINT_LIMIT = 256  # a crossing with at most this many precision combinations gets one variable per combination


class Objective(str, Enum):
    LATENCY = "latency"  # fastest mix within the noise (and latency/size) budget
    NOISE = "noise"  # least predicted noise within the latency (and size) budget


def solve(opts: DecisionSpace, noise_budget: float | None = None, seconds_budget: float | None = None,
          size_budget_mb: float | None = None, minimise: Objective | str = Objective.LATENCY,
          tie_break: bool = True, no_tie_break_from_s: float | None = None) -> Plan | None:
    """Exact optimum of the integer program; None when no assignment satisfies the constraints.
    ``no_tie_break_from_s``: a caller that discards any mix estimated at or above these seconds gets the
    strict optimum there without the tie-break's second solve (a tie-broken mix is never faster)."""
    minimise = Objective(minimise)
    var = [(u, p) for u in opts.units for p in opts.choices[u]]
    index = {v: i for i, v in enumerate(var)}
    borders = _Extra(opts, index)
    for c in opts.cost.crossings:
        borders.add(c)
    borders.tf32_flag()
    n = borders.n
    lat = np.zeros(n)  # microseconds: HiGHS stops within an absolute gap of 1e-6, so seconds would hide 1 us
    for (u, p), i in index.items():
        lat[i] = opts.cost.unit_seconds(u, p) * US
    for i, seconds in borders.cost.items():
        lat[i] = seconds * US
    noise = np.zeros(n)
    for (u, p), i in index.items():
        noise[i] = opts.noise[(u, p)]
    rows, lo, hi = [], [], []
    for terms, low, high in borders.rows:
        row = np.zeros(n)
        for i, a in terms.items():
            row[i] += a
        rows.append(row), lo.append(low), hi.append(high)
    for u in opts.units:  # exactly one precision per unit
        row = np.zeros(n)
        row[[index[(u, p)] for p in opts.choices[u]]] = 1
        rows.append(row), lo.append(1), hi.append(1)
    if noise_budget is not None:
        # FP16 noise (~1e-8) is below the solver's feasibility tolerance (~1e-7): scale the row so the smallest
        # non-zero noise is 1, or "noise <= 0" would admit every FP16 unit.
        scale = float(noise[noise > 0].min()) if np.any(noise > 0) else 1.0
        rows.append(noise / scale), lo.append(-np.inf), hi.append(noise_budget / scale)
    if seconds_budget is not None:
        rows.append(lat), lo.append(-np.inf), hi.append(seconds_budget * US)
    size = np.zeros(n)  # MB of weights
    for (u, p), i in index.items():
        size[i] = opts.weight_elems.get(u, 0.0) * WEIGHT_BYTES[p] / 1e6
    if size_budget_mb is not None:
        rows.append(size), lo.append(-np.inf), hi.append(size_budget_mb)
    if minimise is Objective.LATENCY:
        objective = lat
    else:  # scaled like the constraint; ties on noise go to the faster mix
        objective = noise / max(float(noise[noise > 0].min()) if np.any(noise > 0) else 1.0, 1e-300)
        objective = objective + 1e-6 * lat / max(float(lat.max()), 1e-300)
    integrality = np.zeros(n)
    integrality[[*range(len(var)), *borders.binary]] = 1
    res = milp(objective, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integrality,
               bounds=Bounds(0, 1), options=EXACT)
    if not res.success or res.x is None:
        return None
    def picked(x: np.ndarray) -> Plan:
        return Plan.of({u: p for (u, p), i in index.items() if x[i] > 0.5})

    strict = picked(res.x)
    if no_tie_break_from_s is not None and opts.seconds(strict) >= no_tie_break_from_s:
        return strict
    if minimise is Objective.LATENCY and tie_break:  # second pass: smallest weights within the latency resolution
        ceiling = float(lat @ res.x) + opts.cost.resolution * US
        fp16 = opts.seconds(opts.uniform(Precision.FP16)) * US  # the whole graph in FP16, what --fp16 builds
        if float(lat @ res.x) <= fp16:  # a tie never hands back a mix slower than that reference
            ceiling = min(ceiling, fp16)
        rows.append(lat), lo.append(-np.inf), hi.append(ceiling)
        objective = size / max(float(size.max()), 1e-300) + 1e-6 * lat / max(float(lat.max()), 1e-300)
        tied = milp(objective, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=integrality,
                    bounds=Bounds(0, 1), options=EXACT)
        if tied.success and tied.x is not None:
            return picked(tied.x)
    return strict


class _Extra:
    """The variables and rows beyond x: search.borders' rule for every crossing where a choice changes the
    cost, and the engine's TF32 flag."""

    def __init__(self, opts: DecisionSpace, index: dict[tuple[str, Precision], int]):
        self.opts, self.index, self.n = opts, index, len(index)
        self.rows: list[tuple[dict[int, float], float, float]] = []  # (index -> coefficient, low, high)
        self.cost: dict[int, float] = {}
        self.binary: list[int] = []

    def _new(self) -> int:
        self.n += 1
        return self.n - 1

    def _joint(self, c: Crossing, members: list[str]) -> None:
        """One z per combination of the members' precisions at its crossing cost; sum z = x[u,p] per member."""
        choices, reformat = self.opts.choices, self.opts.cost.reformat_seconds
        combos = list(itertools.product(*(choices[u] for u in members)))
        costs = [crossing_seconds(c, dict(zip(members, a, strict=True)), reformat) for a in combos]
        if not any(costs):
            return  # every combination stores what every reader reads
        marginals: dict[int, dict[int, float]] = {}
        for a, seconds in zip(combos, costs, strict=True):
            z = self._new()
            self.cost[z] = seconds
            for u, p in zip(members, a, strict=True):
                marginals.setdefault(self.index[(u, p)], {})[z] = 1.0
        for x, zs in marginals.items():
            self.rows.append(({**zs, x: -1.0}, 0.0, 0.0))

    def tf32_flag(self) -> None:
        """One binary t: x[u, TF32] <= t and x[u, FP32] <= 1 - t for every GEMM unit (--noTF32 is global)."""
        tf32, fp32 = Precision.TF32, Precision.FP32
        if not any((u, tf32) in self.index for u in self.opts.tf32_units):
            return
        t = self._new()
        self.binary.append(t)
        for u in self.opts.tf32_units:
            if (u, tf32) in self.index:
                self.rows.append(({self.index[(u, tf32)]: 1.0, t: -1.0}, -np.inf, 0.0))
            if (u, fp32) in self.index:
                self.rows.append(({self.index[(u, fp32)]: 1.0, t: 1.0}, -np.inf, 1.0))

    def _at(self, unit: str | None, ps: set[Precision]) -> tuple[dict[int, float], float]:
        """sum of x[unit, p] over ps as (terms, constant): a unit without a choice is FP32."""
        choices = self.opts.choices.get(unit) if unit else None
        if not choices:
            return {}, float(Precision.FP32 in ps)
        return {self.index[(unit, p)]: 1.0 for p in choices if p in ps}, 0.0

    def add(self, c: Crossing) -> None:
        choices = self.opts.choices
        members = [u for u in dict.fromkeys(((c.writer,) if c.writer else ()) + c.readers) if choices.get(u)]
        if math.prod(len(choices[u]) for u in members) <= JOINT_LIMIT:
            self._joint(c, members)
            return
        writer = list(choices.get(c.writer, [Precision.FP32])) if c.writer else []
        readers = {fmt(p) for r in c.readers for p in choices.get(r, [Precision.FP32])}
        formats = sorted(readers | ({Precision.FP32} if c.fp32_reader else set()), key=list(Precision).index)
        written = {fmt(p) for p in writer} or {Precision.FP32}
        if any(p.quantized for p in writer):
            written |= set(formats)
        if c.quantizing:
            written |= {f for f in formats if f.quantized}
        written = sorted(written, key=list(Precision).index)
        if len(formats) == 1 and written == formats:
            return  # every choice stores what every reader reads
        need = {}
        for f in formats:  # need[f] >= x[r, p] for each reader r at a p reading f; 1 for an FP32 reader
            need[f] = self._new()
            if c.fp32_reader and f is Precision.FP32:
                self.rows.append(({need[f]: 1.0}, 1.0, 1.0))
            for r in c.readers:
                terms, const = self._at(r, {p for p in Precision if fmt(p) is f})
                if terms or const:
                    self.rows.append(({need[f]: 1.0, **{i: -a for i, a in terms.items()}}, const, np.inf))
        w = {f: self._new() for f in written}
        self.binary += w.values()
        self.rows.append((dict.fromkeys(w.values(), 1.0), 1.0, 1.0))  # one written format
        quantized = {p for p in Precision if p.quantized}
        for f, i in w.items():  # w[f] <= the writer precisions that can store f
            ps = {p for p in Precision if fmt(p) is f} | (quantized if f in formats else set())
            if f.quantized and c.quantizing:
                ps = set(Precision)
            terms, const = self._at(c.writer, ps) if c.writer else ({}, float(f is Precision.FP32))
            self.rows.append(({i: 1.0, **{k: -a for k, a in terms.items()}}, -np.inf, const))
        if c.quantizing:  # a float writer stores a quantized format only when every reader reads that one
            terms, const = self._at(c.writer, quantized)
            for f in (f for f in w if f.quantized):
                for g in formats:
                    if g is not f:
                        self.rows.append(({need[g]: 1.0, w[f]: 1.0, **{k: -a for k, a in terms.items()}},
                                          -np.inf, 1.0 + const))
        for s, ws in w.items():  # reformat[s, f] >= need[f] + w[s] - 1
            for f, nf in need.items():
                if f is not s:
                    r = self._new()
                    self.cost[r] = self.opts.cost.reformat_seconds(c.elems, s, f)
                    self.rows.append(({r: 1.0, nf: -1.0, ws: -1.0}, -1.0, np.inf))
