"""Terminal output: progress for long work, the ranked sensitivity table, the model inspection."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..artifacts import Analysis, CheckRow, PlanReport
from ..network.model import LoadedModel
from ..network.shapes import format_dims
from ..network.units import UnitTable
from ..precision import Precision
from ..progress import Progress as ProgressSink
from .summary import threshold_note


class ConsoleProgress(ProgressSink):
    """A progress bar on a terminal; plain, rate-limited lines in logs and CI; nothing with --quiet."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task = None
        self.label, self.total, self.done, self.last = "", 0, 0, 0.0

    def start(self, label: str, total: int) -> None:
        self.stop()
        self.label, self.total, self.done, self.last = label, total, 0, time.monotonic()
        if self.quiet or total == 0:
            return
        if self.console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total)
        else:
            self.console.print(f"{label}: 0/{total}", markup=False)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.advance(self.task, n)
            if self.done >= self.total:
                self.stop()
        elif not self.quiet and (time.monotonic() - self.last > 10 or self.done >= self.total):
            self.last = time.monotonic()
            self.console.print(f"{self.label}: {self.done}/{self.total}", markup=False)

    def log(self, message: str) -> None:
        if not self.quiet:  # plain text: a bracket in a message ("trt-mpq[datagen]") is not rich markup
            (self.bar.console if self.bar else self.console).print(message, highlight=False, markup=False)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _sqnr(r) -> str:
    """A null SQNR is +inf only for identical outputs (nmse 0); NaN/Inf outputs or a zero reference: unknown."""
    return "inf" if r.sqnr_db is None and r.nmse == 0 else _fmt(r.sqnr_db, 1)


def sensitivity_table(analysis: Analysis, top: int | None = None) -> Table:
    """Units ranked by sensitivity: largest normalised MSE at the first precision first."""
    precisions = analysis.precisions
    key = precisions[0] if precisions else None
    # units measured at the first precision first, by it; then the others (e.g. FP16-only), by their first
    units = sorted((u for u in analysis.units if u.results), key=lambda u: (
        key not in u.results, -(u.results[key] if key in u.results else next(iter(u.results.values()))).severity))
    has_top1 = any(r.top1_agreement is not None for u in units for r in u.results.values())
    title = key.value.upper() if key else "-"
    table = Table(title=f"Units ranked by sensitivity to {title} (most sensitive first)", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("unit", no_wrap=True)
    table.add_column("ops", no_wrap=True, max_width=24, overflow="ellipsis")
    for p in precisions:
        table.add_column(f"{p.value.upper()}\nSQNR dB", justify="right")
        table.add_column(f"{p.value.upper()}\ncosine", justify="right")
        if has_top1:
            table.add_column(f"{p.value.upper()}\ntop-1", justify="right")
    table.add_column("notes")
    for rank, u in enumerate(units[:top] if top else units, 1):
        row = [str(rank), escape(u.name), "+".join(u.op_types)]
        notes = []
        for p in precisions:
            r = u.results.get(p)
            if r is None:  # not measured at p (a precision the unit cannot run)
                row += ["-"] * (3 if has_top1 else 2)
                continue
            row += [_sqnr(r), _fmt(r.cosine, 5)]
            if has_top1:
                row.append(_fmt(r.top1_agreement, 3))
            if r and r.nonfinite:
                notes.append(f"{p.value.upper()} output has NaN/Inf")
            if r and r.fp16_overflow:
                notes.append(f"exceeds FP16 range: {', '.join(r.fp16_overflow[:2])}")
            if r and r.thresholds:
                notes.append(threshold_note(r))
        row.append(escape("; ".join(notes)))
        table.add_row(*row)
    return table


def _stdout() -> Console:
    probe = Console(file=sys.stdout)
    return probe if probe.is_terminal else Console(file=sys.stdout, width=160)


def print_analysis(analysis: Analysis, out_path: str, console: Console | None = None, top: int | None = None) -> None:
    console = console or _stdout()
    if analysis.units:
        console.print(sensitivity_table(analysis, top))
    else:
        console.print("No units were analysed.")
    if analysis.skipped:
        console.print(f"Skipped {len(analysis.skipped)} layers:")
        for s in analysis.skipped[:10]:
            console.print(f"  {s.node} ({s.op_type}): {s.reason}", highlight=False, markup=False)
        if len(analysis.skipped) > 10:
            console.print(f"  ... and {len(analysis.skipped) - 10} more (see sensitivity.json)")
    cal = analysis.calibration.data
    floats = analysis.calibration.float_samples
    subset = f"; FP16/BF16/TF32 on {floats} of them" if floats is not None else ""
    console.print(f"{len(analysis.units)} units x {len(analysis.precisions)} precisions on {cal.samples} samples "
                  f"({cal.source}{subset}), {analysis.backend.description}, {analysis.elapsed_s:.1f} s. "
                  f"Wrote {out_path}",
                  highlight=False, markup=False)


def print_inspection(model: LoadedModel, table: UnitTable, console: Console | None = None,
                     every_op: bool = False) -> None:
    """Inputs and outputs, the units, where every other op stands (``every_op``: one row per op) and the skips."""
    from ..network.placement import outside_summary, placements

    console = console or _stdout()
    console.print(f"[bold]{escape(str(model.path))}[/bold]  sha256 {model.sha256[:16]}")
    for note in model.notes:
        console.print(f"  note: {note}", highlight=False, markup=False)
    io = Table(title="Inputs and outputs", title_justify="left")
    for col in ("kind", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, specs in (("input", model.inputs), ("output", model.outputs)):
        for s in specs:
            io.add_row(kind, escape(s.name), s.dtype.name, escape(format_dims(s.shape)))
    console.print(io)
    units = Table(title=f"{len(table.units)} units", title_justify="left")
    for col in ("#", "unit", "kind", "may run in", "ops", "ONNX nodes", "INT8 inputs", "weight axis"):
        units.add_column(col)
    for i, u in enumerate(table.units, 1):
        axis = "-" if u.weight is None else ("per-tensor" if u.weight_axis is None else str(u.weight_axis))
        units.add_row(str(i), escape(u.name), u.kind, ", ".join(p.value for p in u.allowed), "+".join(u.op_types),
                      escape(", ".join(u.nodes)), escape(", ".join(u.activations)), axis)
    console.print(units)
    places = placements(model.proto, table, model.tensors)
    held = sum(p.unit is not None for p in places)
    console.print(f"{len(places)} ops: {held} in the {len(table.units)} units, {len(places) - held} outside "
                  f"(no precision decision){':' if held < len(places) else ''}", highlight=False)
    for why, ops in outside_summary(places).items():
        console.print(f"  {why}: " + ", ".join(f"{op} x{n}" for op, n in ops.most_common()),
                      highlight=False, markup=False)
    if every_op:
        ops = Table(title="Every op", title_justify="left")
        for col in ("#", "node", "op", "unit"):
            ops.add_column(col)
        for i, p in enumerate(places, 1):
            ops.add_row(str(i), escape(p.node), p.op_type, escape(p.unit) if p.unit else f"- ({escape(p.why)})")
        console.print(ops)
    if table.skipped:
        skipped = Table(title=f"{len(table.skipped)} skipped", title_justify="left")
        for col in ("node", "op", "reason"):
            skipped.add_column(col)
        for s in table.skipped:
            skipped.add_row(escape(s.node), s.op_type, escape(s.reason))
        console.print(skipped)


def uniform_label(p: Precision, all_ms) -> str:
    """all-FP16, ...; with TF32 among them the two FP32 references say which FP32 they are."""
    if p is Precision.TF32:
        return "all-FP32 in TF32 (TensorRT's default here)"
    if p is Precision.FP32 and Precision.TF32 in all_ms:
        return "all-FP32 true FP32"
    return f"all-{p.value.upper()}"


def print_plan(report: PlanReport, run_dir: str, console: Console | None = None) -> None:
    """Summary of a plan: precisions chosen, measured result against the budget, estimated latencies."""
    console = console or _stdout()
    res, lat = report.result, report.latency
    table = Table(title="Chosen precision per unit, in graph order", title_justify="left")
    for col in ("#", "unit", "precision", "alone: NMSE", "alone: top-1", "notes"):
        table.add_column(col, justify="right" if col not in ("unit", "precision", "notes") else "left")
    for i, u in enumerate(report.units, 1):
        alone = u.measured_alone
        fp32 = u.precision is Precision.FP32
        top1 = alone.top1_agreement if alone else None
        note = threshold_note(alone) if alone and alone.thresholds and u.precision is Precision.INT8 else ""
        table.add_row(str(i), escape(u.name), u.precision.value.upper(),
                      "-" if fp32 else f"{(alone.nmse if alone else None) or 0:.2e}",
                      "-" if top1 is None or fp32 else f"{top1:.3f}", escape(note))
    console.print(table)
    n = res.units
    shown = [p for p in Precision if n.get(p) or p in (Precision.INT8, Precision.FP16, Precision.FP32)]
    order = [*(p for p in shown if p is not Precision.FP32), Precision.FP32]
    console.print("units: " + ", ".join(f"{n.get(p, 0)} {p.value.upper()}" for p in order)
                  + f" (of {sum(n.values())})")
    kinds: dict[str, list[Precision]] = {}
    for u in report.units:
        kinds.setdefault(u.kind, []).append(u.precision)
    if len(kinds) > 1:
        console.print("by kind: " + "; ".join(
            f"{k} {len(v)} (" + ", ".join(f"{v.count(p)} {p.value.upper()}" for p in Precision if v.count(p)) + ")"
            for k, v in kinds.items()), highlight=False)
    size = {p: sum(u.weight_mb for u in report.units if u.precision is p) for p in Precision}
    if sum(size.values()) > 0:
        console.print(f"weights: {sum(size.values()):.2f} MB (" + ", ".join(
            f"{p.value.upper()} {mb:.2f}" for p, mb in size.items() if mb >= 0.005) + ")", highlight=False)
    console.print(measured_line(report), highlight=False, markup=False)
    conf = res.confirmation
    if conf is not None:
        if conf.changed:
            more = f" and {len(conf.changed) - 8} more" if len(conf.changed) > 8 else ""
            console.print(f"top-1 changed on {len(conf.changed)} of {report.evaluation.data.samples} evaluation "
                          f"samples: {', '.join(conf.changed[:8])}{more}", highlight=False, markup=False)
        for note in conf.limits[1:]:
            console.print(f"note: {note}", highlight=False, markup=False)
    all_ms = ", ".join(f"{uniform_label(k, lat.all_ms)} {v:.3f}" for k, v in lat.all_ms.items())
    console.print(f"latency on {lat.target} at batch {lat.batch} ({lat.kind}): mix {lat.mix_ms:.3f} ms; "
                  f"{all_ms} ms", highlight=False)
    if lat.note:
        console.print(f"note: {lat.note}", highlight=False, markup=False)
    for row in report.compared:  # an already-quantized file beside the plan
        console.print(f"{row.name}: {row.what}: {report.evaluation.metric} {row.score:.4f} on the confirm part, "
                      f"{row.ms:.3f} ms ({lat.label})", highlight=False, markup=False)
    if Precision.TF32 in lat.all_ms:
        console.print("TF32: " + {True: "on (the FP32 GEMMs of the mix were verified in TF32)",
                                  False: "off (--noTF32: the mix's FP32 GEMMs were verified in true FP32)",
                                  None: "changes nothing (no GEMM stays in FP32)"}[lat.tf32], highlight=False)
    looks = f", {len(res.confirmation.looks)} confirm looks" if res.confirmation is not None else ""
    console.print(f"{res.message}. {len(report.verification)} search verifications{looks}. Wrote {run_dir}/plan.json, "
                  "model.mixed.onnx, model.weak.onnx, trtexec.txt, report.json, report.html",
                  highlight=False, markup=False)


def measured_line(report: PlanReport) -> str:
    """The measured result in one line: where it was measured, its interval, the replicas, the margin."""
    res, metric, n = report.result, report.evaluation.metric, report.evaluation.data.samples
    conf = res.confirmation
    allowed = f"allowed {res.allowed_drop:.4f}" if res.allowed_drop is not None else ""
    if conf is None:
        return (f"measured {metric} on {n} held-out samples: FP32 {res.fp32_score:.4f}, mix {res.score:.4f}, "
                f"drop {res.drop:.4f}{f' ({allowed})' if allowed else ''}")
    look = conf.chosen
    where = (f"measured {metric} on the {conf.confirm_samples} confirm samples (of {n}; the search selected on the "
             f"other {conf.search_samples}): FP32 {conf.fp32_score:.4f}, mix {res.score:.4f}")
    if look is None:
        return f"{where} (all-FP32: nothing lowered)"
    high = "" if look.high == float("inf") else f"-{look.high:.4f}"
    kind = f"{conf.interval_confidence:.0%} interval" if conf.confidence is None else \
        f"one-sided {conf.look_confidence:.4g} bound"
    spread = f", {len(look.replicas)} replicas {min(look.replicas):.4f}-{max(look.replicas):.4f}" if look.replicas \
        else ""
    margin = f", margin {conf.margin:.4f}" if conf.margin is not None else ""
    return (f"{where} ({kind} {look.low:.4f}{high}){spread}, drop {res.drop:.4f}"
            f"{f' ({allowed}{margin})' if allowed else ''}")


def print_check(rows: list[CheckRow] | tuple[CheckRow, ...], console: Console | None = None) -> None:
    """Planned vs realised precision: the units that differ, then the count of those the engine does not tell."""
    console = console or _stdout()
    differ = [r for r in rows if r.differs]
    unknown = [r for r in rows if not r.known]
    table = Table(title="Units whose realised precision differs from the plan", title_justify="left")
    for col in ("unit", "planned", "realised in the engine"):
        table.add_column(col)
    for r in differ:
        table.add_row(escape(r.unit), r.planned.value.upper(), escape(str(r.realized or "not found").upper()))
    if differ:
        console.print(table)
    console.print(f"{sum(r.matches for r in rows)} of {len(rows)} units run in their planned precision; "
                  f"{len(differ)} differ.", highlight=False)
    if unknown:
        console.print(f"{len(unknown)} not told by the engine (fused with another unit, format N/A, or not "
                      f"found): {', '.join(r.unit for r in unknown[:5])}{' ...' if len(unknown) > 5 else ''}",
                      highlight=False, markup=False)
