"""A toy decision space for the search tests: the residual CNN's three units with chosen noise and measured-style
unit times where lowering pays."""

from __future__ import annotations

import builders
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision as P
from trt_mpq.search.cost import cost_model
from trt_mpq.search.space import DecisionSpace

TIMES = {P.FP32: 1e-3, P.FP16: 5e-4, P.INT8: 2.5e-4}


def toy_space(noise, times=TIMES) -> DecisionSpace:
    m = builders.conv_bn_relu_residual()
    units = [u for u in find_units(m).units if u.kind == "gemm"]  # the MILP's three weighted units
    # Measured-style unit times where lowering pays (the toy itself is memory-bound: FP32 would win), so the
    # search has a real trade-off; boundary costs stay the cost model's (microseconds, small against these).
    per_unit = all(isinstance(k, tuple) for k in times)  # {precision: s} for every unit, or {(unit, p): s}
    measured = dict(times) if per_unit else {(u.name, p): t for u in units for p, t in times.items()}
    cost = cost_model(m, units, "t4", batch=64).with_measured(measured, "test")
    choices = {u.name: [P.FP32, P.FP16, P.INT8] for u in units}
    full = {(u, p): (0.0 if p is P.FP32 else noise[(u, p)]) for u in choices for p in choices[u]}
    return DecisionSpace([u.name for u in units], choices, full, cost, {u: cost.costs[u].weight_elems for u in choices})


NOISE = {("conv1", P.FP16): 1e-6, ("conv1", P.INT8): 1e-2, ("conv2", P.FP16): 1e-6, ("conv2", P.INT8): 1e-4,
         ("fc", P.FP16): 1e-7, ("fc", P.INT8): 1e-5}
