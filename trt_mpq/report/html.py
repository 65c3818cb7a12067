"""report.html: one self-contained file (charts inlined as PNG data URIs, no scripts, no network)."""

from __future__ import annotations

import base64
import html
import io
import math

from ..artifacts import AnalysedUnit, Analysis, BuildResult, PlannedUnit, PlanReport, UnitResult
from ..precision import Precision
from .proof_html import mix_text, proof_section
from .summary import threshold_note

COLORS = {"int8": "#2e7d32", "fp16": "#1565c0", "fp32": "#9e9e9e", "bf16": "#6a1b9a", "fp8": "#00838f",
          "int4": "#ad1457", "tf32": "#757575"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _sqnr(result: UnitResult | None) -> float:
    if not result or result.nonfinite:
        return 0.0
    return result.sqnr_db if result.sqnr_db is not None else 100.0


def why(unit: PlannedUnit, sens: AnalysedUnit, rank: dict[str, int], n: int) -> str:
    """Why a unit runs in the precision the plan gave it, in a sentence."""
    p = unit.precision.value
    est = {k.value: v for k, v in unit.latency_ms.items()}
    if p == "int8":
        int8 = sens.results.get(Precision.INT8)
        chosen = f" ({threshold_note(int8)})" if int8 and int8.thresholds else ""
        return f"INT8{chosen}: the budget allows it and it is the fastest option"
    int8 = sens.results.get(Precision.INT8)
    if p == "fp16":
        if "int8" in est and est["int8"] >= est["fp16"]:
            return "INT8 is not estimated faster than FP16 here"
        if int8:
            return (f"INT8 alone: SQNR {_sqnr(int8):.1f} dB, rank {rank[unit.name]} of {n} by sensitivity; "
                    "lowering it further did not fit the measured budget")
        if sens.kind != "gemm":
            return f"FP16: a {sens.kind} unit runs in FP16 or FP32 in TensorRT (no INT8 kernel for it)"
        return "FP16 was the lowest precision analysed"
    if p in ("bf16", "fp8", "int4", "tf32"):
        alone = sens.results.get(Precision(p))
        sqnr = f" (SQNR {_sqnr(alone):.1f} dB alone)" if alone else ""
        return f"{p.upper()}{sqnr}: the fastest option the budgets allow for it on this target"
    fp16 = sens.results.get(Precision.FP16)
    if fp16 and fp16.fp16_overflow:
        return f"values exceed the FP16 range ({', '.join(fp16.fp16_overflow[:2])})"
    if fp16 and fp16.nonfinite:
        return "FP16 produces NaN/Inf"
    return "lowering it does not pay (estimate, precision boundaries included) or does not fit the budget"


def render(report: PlanReport, analysis: Analysis, build: BuildResult | None = None,
           samples_png: bytes | None = None) -> str:
    """The page for a plan (``report``, as report.json holds it), with what ``build`` realised when an engine
    was built."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = report.units
    by_name = {u.name: u for u in analysis.units}
    none = UnitResult(None, None, None, None)
    ranked = sorted(analysis.units, key=lambda u: -u.results.get(Precision.INT8, none).severity)
    rank = {u.name: i + 1 for i, u in enumerate(ranked)}
    n = len(units)
    height = max(3.0, 0.18 * n + 1)

    fig, ax = plt.subplots(figsize=(9, height))
    names = [u.name for u in ranked]
    for p, offset in ((Precision.INT8, -0.2), (Precision.FP16, 0.2)):
        vals = [_sqnr(u.results.get(p)) for u in ranked]
        ax.barh([i + offset for i in range(len(names))], vals, height=0.4, color=COLORS[p.value],
                label=p.value.upper())
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR of the outputs with only this unit lowered (dB, higher = less sensitive)")
    ax.set_title("Sensitivity ranking (most sensitive first)")
    ax.legend()
    chart_sens = _png(fig)

    lat = report.latency
    lat_kind = lat.label
    fig, ax = plt.subplots(figsize=(9, height))
    ms = [u.latency_ms[u.precision] for u in units]
    ax.barh(range(n), ms, color=[COLORS[u.precision.value] for u in units])
    ax.set_yticks(range(n), [u.name for u in units], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel(f"time per unit at its chosen precision (ms, {lat_kind}, {lat.target})")
    ax.set_title("Chosen precision per unit, in graph order (green INT8, blue FP16, grey FP32)")
    chart_units = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 2.6))
    labels = [f"all-{k.value.upper()}" for k in lat.all_ms] + ["mix"]  # all-TF32: every GEMM of FP32 in TF32
    values = list(lat.all_ms.values()) + [lat.mix_ms]
    ax.barh(labels, values, color=[COLORS.get(k.value, "#555") for k in lat.all_ms] + ["#ef6c00"])
    ax.set_xlabel(f"latency (ms, {lat_kind}) on {lat.target}, batch {lat.batch}")
    chart_total = _png(fig)

    steps, res = report.verification, report.result
    allowed = res.allowed_drop
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for s in steps:
        ax.scatter(s.estimated_ms, s.score, color="#2e7d32" if s.passed else "#c62828")
    if allowed is not None:
        ax.axhline(res.fp32_score - allowed, color="#555", linestyle="--", label="budget")
        ax.legend()
    ax.set_xlabel(f"latency (ms, {lat_kind})")
    ax.set_ylabel(f"measured {report.evaluation.metric}")
    ax.set_title("Verification runs (green: meets the budget)")
    chart_steps = _png(fig)

    chart_pareto = ""
    if report.pareto:
        pts = report.pareto
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        for ax, key, label in ((axes[0], "estimated_ms", f"latency (ms, {lat_kind})"),
                               (axes[1], "size_mb", "weights (MB)")):
            ax.scatter([getattr(q, key) for q in pts], [q.score for q in pts], color="#9e9e9e",
                       label="measured mix")
            front = [q for q in pts if q.on_front]
            ax.plot([getattr(q, key) for q in front], [q.score for q in front], "o-", color="#ef6c00",
                    label="front (latency)")
            ax.set_xlabel(label)
            ax.set_ylabel(f"measured {report.evaluation.metric}")
        axes[0].legend()
        fig.suptitle("Pareto sweep: every point measured on the evaluation data")
        chart_pareto = f'<h2>Pareto front</h2><img alt="pareto front" src="{_png(fig)}">'

    esc = html.escape
    kinds: dict[str, dict[str, int]] = {}
    sizes: dict[str, float] = {}
    for u in units:
        p = u.precision.value
        kinds.setdefault(u.kind, {}).setdefault(p, 0)
        kinds[u.kind][p] += 1
        sizes[p] = sizes.get(p, 0.0) + u.weight_mb
    by_kind = "; ".join(f"{k} {sum(c.values())} (" + ", ".join(f"{n} {p.upper()}" for p, n in c.items()) + ")"
                        for k, c in kinds.items())
    weights = f"{sum(sizes.values()):.2f} MB (" + ", ".join(
        f"{p.upper()} {mb:.2f}" for p, mb in sizes.items() if mb >= 0.005) + ")"
    rows = "".join(
        f"<tr><td>{i}</td><td>{esc(u.name)}</td><td class='{u.precision.value}'>{u.precision.value.upper()}</td>"
        f"<td>{esc(', '.join(u.nodes))}</td><td>{esc(why(u, by_name[u.name], rank, n))}</td></tr>"
        for i, u in enumerate(units, 1))
    log_rows = "".join(
        f"<tr><td>{i}</td><td>{mix_text(s.plan)}</td><td>{s.predicted_noise:.3g}</td>"
        f"<td>{s.estimated_ms:.4f}</td><td>{s.score:.4f}</td><td>{'yes' if s.passed else 'no'}</td>"
        f"<td>{esc(s.note)}</td></tr>" for i, s in enumerate(steps, 1))
    realized_html = ""
    if build is not None:
        differ = sum(1 for r in build.units if not r.matches)
        realized_rows = "".join(
            f"<tr><td>{esc(r.unit)}</td><td class='{r.planned.value}'>{r.planned.value.upper()}</td>"
            f"<td>{esc(str(r.realized or 'not found').upper())}</td><td>{'yes' if r.matches else 'NO'}</td></tr>"
            for r in build.units)
        realized_html = (f"<h2>Planned vs realised in the TensorRT engine</h2><p>{esc(build.engine)}: "
                         f"{len(build.units) - differ} of {len(build.units)} units run in their planned "
                         f"precision, {differ} differ.</p><table><tr><th>unit</th><th>planned</th><th>realised</th>"
                         f"<th>matches</th></tr>{realized_rows}</table>")
    floats = report.calibration.float_samples
    floats = "" if floats is None else f" (FP16/BF16/TF32 sensitivities measured on {floats} of them)"
    drop_line = "" if allowed is None or math.isnan(allowed) else f" (allowed {allowed:.4f})"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trt-mpq plan: {esc(report.model_path)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 1em 0; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }}
th {{ background: #f5f5f5; }}
{' '.join(f".{k} {{ color: {c}; font-weight: bold; }}" for k, c in COLORS.items() if k != "fp32")}
.fp32 {{ color: #616161; }} .note {{ color: #555; font-size: 13px; }}
</style></head><body>
<h1>Mixed-precision plan</h1>
<p><b>Model</b> {esc(report.model_path)} (sha256 {report.model_sha256[:16]})<br>
<b>Result</b> {esc(res.message)}: {', '.join(f"{n} {k.value.upper()}" for k, n in res.units.items() if n)} units.<br>
<b>By kind</b> {esc(by_kind)}<br><b>Weights</b> {esc(weights)}<br>
<b>Measured</b> {esc(report.evaluation.metric)} on {report.evaluation.data.samples} held-out samples
({esc(report.evaluation.data.source)}): FP32 {res.fp32_score:.4f}, mix {res.score:.4f},
drop {res.drop:.4f}{drop_line}.<br>
<b>Latency</b> {esc(lat.kind)}, {esc(lat.target)} at batch {lat.batch}: mix
{lat.mix_ms:.3f} ms; {', '.join(f"all-{k.value.upper()} {v:.3f} ms" for k, v in lat.all_ms.items())}.
{esc(lat.note[:1].upper() + lat.note[1:] + '.') if lat.note else ''}</p>
{_compared(report)}
<p class="note">Backend: {esc(report.backend)}. Calibration: {esc(report.calibration.data.source)},
{report.calibration.data.samples} samples{floats}.</p>
{_generated(analysis, samples_png)}
<h2>Sensitivity ranking</h2><img alt="sensitivity ranking" src="{chart_sens}">
<h2>Precision per unit</h2><img alt="precision per unit" src="{chart_units}">
<table><tr><th>#</th><th>unit</th><th>precision</th><th>ONNX nodes</th><th>why</th></tr>{rows}</table>
<h2>Latency</h2><img alt="latency totals" src="{chart_total}">
<h2>Verification log</h2><img alt="verification runs" src="{chart_steps}">
<table><tr><th>#</th><th>lowered units</th><th>predicted noise</th><th>ms ({esc(lat_kind)})</th><th>measured</th>
<th>meets budget</th><th>note</th></tr>{log_rows}</table>
{proof_section(res.confirmation, report.evaluation.data)}
{chart_pareto}
{realized_html}
</body></html>
"""


def _compared(report: PlanReport) -> str:
    """The already-quantized file, the plan and all-FP16 side by side (an analysis of a Q/DQ file only)."""
    if not report.compared:
        return ""
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(c.name)}</td><td>{esc(c.what)}</td><td>{c.score:.4f}</td><td>{c.ms:.3f}</td></tr>"
                   for c in report.compared)
    return (f"<h2>The file as shipped, this plan, all-FP16</h2><table><tr><th></th><th>units</th>"
            f"<th>{esc(report.evaluation.metric)} (confirm part, measured)</th><th>latency ms "
            f"({esc(report.latency.label)})</th></tr>{rows}</table>")


def _generated(analysis: Analysis, png: bytes | None) -> str:
    """Generated calibration data: how it was made, what it optimised, and its first samples."""
    data = analysis.calibration.data
    if data.kind != "generated":
        return ""
    esc, details = html.escape, data.details
    what = esc(str(details.get("generator") or details.get("distribution") or "generated"))
    matched = f"<br>Optimised: {esc(str(details['optimised']))}." if "optimised" in details else ""
    if "statistics" in details:  # images drawn with photos' statistics: how near they came
        matched += f"<br>Drawn images: {esc(str(details['statistics']))}."
    if "chosen" in details:  # --calib generated: the generator the model called for
        matched += f"<br>{esc(str(details['method']))}, chosen because {esc(str(details['chosen']))}."
    image = (f"<br><img alt='generated calibration samples' src='data:image/png;base64,"
             f"{base64.b64encode(png).decode()}'>") if png else ""
    seed = details.get("seed", 0)
    return f"<h2>Generated calibration data</h2><p class='note'>{what}, seed {seed}.{matched}{image}</p>"
