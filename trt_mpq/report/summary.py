"""The plan report: what the search chose, per unit, with the measured result and the latency summary."""

from __future__ import annotations

import onnx

from .. import __version__
from ..artifacts import (
    Analysis,
    Budget,
    Confirmation,
    DataInfo,
    Evaluation,
    LatencySummary,
    ParetoPoint,
    PlannedUnit,
    PlanReport,
    PlanResult,
    UnitResult,
)
from ..precision import Precision
from ..search.cost import WEIGHT_BYTES
from ..search.driver import SearchResult
from ..search.space import DecisionSpace


def fp16_note(analysis: Analysis, fp16_ms: float | None, mix_ms: float) -> str:
    """Why the mix is not the whole graph in FP16 when that is estimated faster: units FP16 cannot run."""
    if fp16_ms is None or mix_ms <= fp16_ms + 1e-9:
        return ""
    broken = [u.name for u in analysis.units
              if (r := u.results.get(Precision.FP16)) is not None and (r.fp16_overflow or r.nonfinite)]
    if broken:
        return (f"all-FP16 is estimated faster but cannot be used: {len(broken)} unit(s) exceed the FP16 range or "
                f"produce NaN/Inf in FP16 ({', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''})")
    return "all-FP16 is estimated faster but its predicted error is beyond the accuracy budget"


def plan_report(analysis: Analysis, evaluation: DataInfo, metric: str, budget: Budget, result: SearchResult,
                space: DecisionSpace, backend: str, elapsed_s: float,
                front: list[ParetoPoint] | tuple[ParetoPoint, ...] = (), fp32_score: float | None = None,
                confirmation: Confirmation | None = None, compared: tuple = ()) -> PlanReport:
    """Everything ``plan`` decided and measured, as one record."""
    units = []
    for name in space.units:
        p = result.plan.precision(name)
        analysed = analysis.unit(name)
        units.append(PlannedUnit(
            name, p, analysed.nodes, space.noise[(name, p)], analysed.results.get(p),
            {q: round(space.cost.unit_seconds(name, q) * 1e3, 5) for q in space.choices[name]}, analysed.kind,
            space.weight_elems.get(name, 0.0) * WEIGHT_BYTES[p] / 1e6))
    analysed_precisions = [Precision.FP32, *analysis.precisions]
    totals = {q: space.seconds(space.uniform(q)) * 1e3 for q in Precision
              if q in analysed_precisions and space.cost.target.runs(q) and q is not Precision.TF32}
    if space.tf32_units and space.cost.target.runs(Precision.TF32):  # TensorRT's default FP32 here: estimated
        totals[Precision.TF32] = space.seconds(dict.fromkeys(space.tf32_units, Precision.TF32)) * 1e3
    counts = {q: sum(1 for u in units if u.precision is q) for q in Precision}
    cost = space.cost
    mix_ms = space.seconds(result.plan) * 1e3
    latency = LatencySummary(cost.kind, cost.label, cost.device, cost.target.source, cost.batch, totals, mix_ms,
                             fp16_note(analysis, totals.get(Precision.FP16), mix_ms), space.tf32(result.plan))
    fp32 = result.fp32_score if fp32_score is None else fp32_score
    allowed = result.allowed_drop if confirmation is None else (
        None if confirmation.threshold is None else confirmation.fp32_score - confirmation.threshold)
    outcome = PlanResult(result.outcome, fp32, result.score, allowed, counts, result.message, confirmation)
    return PlanReport(analysis.model.path, analysis.model.sha256, Evaluation(evaluation, metric),
                      analysis.calibration, budget, outcome, latency, tuple(units), tuple(result.steps), backend,
                      {"trt_mpq": __version__, "onnx": onnx.__version__}, elapsed_s, tuple(front), tuple(compared))


def threshold_note(r: UnitResult) -> str:
    """Which INT8 threshold ``--calibrator auto`` kept for a unit, and what it gained over max."""
    method = "/".join(dict.fromkeys(r.thresholds.values()))
    if method == "max" or not r.max_nmse or not r.nmse:
        return f"INT8 threshold: {method}"
    gain = r.max_nmse / r.nmse
    if gain < 1.05:
        return f"INT8 threshold: {method} (NMSE within 5 % of max's)"
    return f"INT8 threshold: {method} (NMSE {gain:.1f}x lower than max)"
