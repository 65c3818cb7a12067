"""Terminal output (report/console.py): the progress lines, the ranked sensitivity table, the analysis summary,
the model inspection, the plan summary with its measured line, and the check of an engine against its plan;
each checked for the figures of the records it is given, formatted as the user reads them."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

from rich.console import Console

import builders
from trt_mpq.artifacts import (
    AnalysedUnit,
    Analysis,
    BackendRecord,
    Budget,
    Calibration,
    CheckRow,
    Compared,
    Confirmation,
    DataInfo,
    Evaluation,
    LatencySummary,
    Look,
    ModelInfo,
    Outcome,
    PlannedUnit,
    PlanReport,
    PlanResult,
    SkippedLayer,
    UnitResult,
)
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan
from trt_mpq.precision import Precision as P
from trt_mpq.report.console import (
    ConsoleProgress,
    measured_line,
    print_analysis,
    print_check,
    print_inspection,
    print_plan,
    sensitivity_table,
    uniform_label,
)


def _console(width: int = 250) -> Console:
    return Console(file=io.StringIO(), width=width, record=True)


def _rows(text: str) -> list[list[str]]:
    """The body rows of the tables in ``text``, each as its stripped cells."""
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in text.splitlines() if "│" in line]


def _row(text: str, first: str, column: int = 1) -> list[str]:
    return next(r for r in _rows(text) if r[column] == first)


def _flat(text: str) -> str:
    """The text with runs of white space as one space (a title wraps to its table's width)."""
    return " ".join(text.split())


def test_progress_in_a_log_prints_the_start_and_the_end_and_nothing_when_quiet():
    console = _console()
    progress = ConsoleProgress(console=console)
    progress.start("per-unit sensitivity", 3)
    progress.advance()
    progress.advance()  # within 10 s of the last line: rate-limited, nothing printed
    progress.log("resuming: [2] done")
    progress.advance()
    assert console.export_text().splitlines() == ["per-unit sensitivity: 0/3", "resuming: [2] done",
                                                  "per-unit sensitivity: 3/3"]
    quiet = _console()
    silent = ConsoleProgress(quiet=True, console=quiet)
    silent.start("calibration", 2)
    silent.advance(2)
    silent.log("a message")
    assert quiet.export_text() == ""
    empty = _console()
    ConsoleProgress(console=empty).start("nothing to do", 0)
    assert empty.export_text() == ""


def test_progress_on_a_terminal_draws_a_bar_that_ends_with_the_work():
    console = Console(file=io.StringIO(), width=120, force_terminal=True)
    progress = ConsoleProgress(console=console)
    progress.start("FP32 reference and ranges", 2)
    assert progress.bar is not None and progress.bar.tasks[0].total == 2
    progress.advance()
    assert progress.bar.tasks[0].completed == 1
    progress.advance()
    assert progress.bar is None and progress.done == 2  # done: the bar stops itself
    assert "FP32 reference and ranges" in console.file.getvalue()


def _results():
    int8 = UnitResult(cosine=0.999123, sqnr_db=30.46, nmse=9.0e-4, max_abs=0.1, top1_agreement=0.975)
    fp16 = UnitResult(cosine=0.99999999, sqnr_db=70.04, nmse=1.0e-7, max_abs=1e-4, top1_agreement=1.0)
    return int8, fp16


def _analysed_units():
    int8, fp16 = _results()
    worse = UnitResult(0.99, 23.0, 5.0e-3, 0.3, 0.9).with_thresholds({"f": "entropy"}, 1.0e-2)
    broken = UnitResult(None, None, None, None, 0.5, nonfinite=3).with_fp16_overflow(["bn.var", "c1", "c2"])
    return (AnalysedUnit("conv1", "Conv", ("conv1",), ("Conv", "Relu"), {P.INT8: int8, P.FP16: fp16}),
            AnalysedUnit("fc", "Gemm", ("fc",), ("Gemm",), {P.INT8: worse, P.FP16: fp16}),
            AnalysedUnit("norm", "LayerNormalization", ("norm",), ("LayerNormalization",), {P.FP16: fp16}, "norm"),
            AnalysedUnit("bad[red]", "Conv", ("bad",), ("Conv",), {P.INT8: int8, P.FP16: broken}),
            AnalysedUnit("silent", "Conv", ("silent",), ("Conv",), {}))


def _table_text(units, precisions=(P.INT8, P.FP16), top=None) -> str:
    console = _console()
    console.print(sensitivity_table(SimpleNamespace(precisions=precisions, units=units), top))
    return console.export_text()


def test_the_sensitivity_table_ranks_units_and_shows_their_figures_and_notes():
    text = _table_text(_analysed_units())
    assert "Units ranked by sensitivity to INT8 (most sensitive first)" in text
    # by INT8 NMSE (5e-3, then 9e-4 twice in the order given); then the unit without an INT8 result
    assert [r[:2] for r in _rows(text)] == [["1", "fc"], ["2", "conv1"], ["3", "bad[red]"], ["4", "norm"]]
    assert "silent" not in text  # nothing measured: not listed
    assert _row(text, "conv1") == ["2", "conv1", "Conv+Relu", "30.5", "0.99912", "0.975", "70.0", "1.00000", "1.000",
                                   ""]
    assert _row(text, "fc") == ["1", "fc", "Gemm", "23.0", "0.99000", "0.900", "70.0", "1.00000", "1.000",
                                "INT8 threshold: entropy (NMSE 2.0x lower than max)"]
    bad = _row(text, "bad[red]")  # markup in a name is shown as written
    assert bad[3:6] == ["30.5", "0.99912", "0.975"] and bad[7:9] == ["-", "0.500"]  # no FP16 cosine, its top-1
    assert bad[9] == "FP16 output has NaN/Inf; exceeds FP16 range: bn.var, c1"  # the first two tensors
    assert _row(text, "norm")[2:6] == ["LayerNormalization", "-", "-", "-"]  # not measured in INT8


def test_a_null_sqnr_reads_inf_only_for_identical_outputs():
    results = {"same": UnitResult(1.0, None, 0.0, 0.0), "broken": UnitResult(None, None, None, None, nonfinite=3),
               "silent_ref": UnitResult(0.0, None, None, 1.0)}
    units = tuple(AnalysedUnit(n, "Conv", (n,), ("Conv",), {P.FP16: r}) for n, r in results.items())
    text = _table_text(units, (P.FP16,))
    assert _row(text, "same")[3] == "inf" and _row(text, "broken")[3] == "-" and _row(text, "silent_ref")[3] == "-"


def test_the_table_has_no_top1_column_without_class_scores_and_keeps_the_top_rows():
    plain = UnitResult(0.9, 20.0, 1e-2, 1.0)
    units = tuple(AnalysedUnit(f"u{k}", "Conv", (f"u{k}",), ("Conv",), {P.FP16: UnitResult(0.9, 20.0 + k,
                                                                                            1e-2 / (k + 1), 1.0)})
                  for k in range(4)) + (AnalysedUnit("same", "Conv", ("same",), ("Conv",), {P.FP16: plain}),)
    text = _table_text(units, (P.FP16,), top=2)
    assert "top-1" not in text and "Units ranked by sensitivity to FP16" in text
    assert _rows(text) == [["1", "u0", "Conv", "20.0", "0.90000", ""], ["2", "same", "Conv", "20.0", "0.90000", ""]]


def _analysis(units=(), skipped=(), float_samples=16) -> Analysis:
    data = DataInfo("calib.npz", "npz", 32, "f" * 64)
    return Analysis(ModelInfo("m.onnx", "0" * 64), BackendRecord("onnxruntime", "onnxruntime 9.9 (CPU)"),
                    (P.INT8, P.FP16), Calibration(data, "auto", 8, float_samples=float_samples), tuple(units),
                    tuple(skipped), elapsed_s=12.345)


def test_the_analysis_summary_says_what_was_measured_on_what_and_where_it_went():
    console = _console()
    skipped = [SkippedLayer(f"loop{k}", "Loop", "control flow [not lowered]") for k in range(12)]
    print_analysis(_analysis(_analysed_units(), skipped), "out/sensitivity.json", console)
    text = console.export_text()
    assert "Units ranked by sensitivity to INT8" in text and "Skipped 12 layers:" in text
    assert "  loop9 (Loop): control flow [not lowered]" in text and "loop10" not in text
    assert "  ... and 2 more (see sensitivity.json)" in text
    assert text.rstrip().endswith("5 units x 2 precisions on 32 samples (calib.npz; FP16/BF16/TF32 on 16 of them), "
                                  "onnxruntime 9.9 (CPU), 12.3 s. Wrote out/sensitivity.json")
    console = _console()
    print_analysis(_analysis(float_samples=None), "run", console, top=3)
    text = console.export_text()
    assert text.splitlines()[0] == "No units were analysed." and "Skipped" not in text
    assert "0 units x 2 precisions on 32 samples (calib.npz), onnxruntime 9.9 (CPU), 12.3 s. Wrote run" in text


def test_a_finished_analysis_prints_every_units_figures_from_sensitivity_json(analysed):
    doc = json.loads((analysed / "run" / "sensitivity.json").read_text())
    console = _console()
    print_analysis(Analysis.from_json(doc), "run/sensitivity.json", console)
    text = console.export_text()
    assert len(doc["units"]) == 4
    for u in doc["units"]:
        row = _row(text, u["name"])
        ops = "+".join(u["op_types"])
        assert row[2] == (ops if len(ops) <= 24 else ops[:23] + "…")  # a long fusion is cut to 24 characters
        int8, fp16 = u["results"]["int8"], u["results"]["fp16"]
        assert row[3:6] == [f"{int8['sqnr_db']:.1f}", f"{int8['cosine']:.5f}", f"{int8['top1_agreement']:.3f}"]
        assert row[7:9] == [f"{fp16['cosine']:.5f}", f"{fp16['top1_agreement']:.3f}"]
        assert row[6] == ("inf" if fp16["sqnr_db"] is None else f"{fp16['sqnr_db']:.1f}")  # identical: infinite
    assert f"4 units x 2 precisions on {doc['calibration']['samples']} samples" in text


def test_the_inspection_lists_inputs_units_where_other_ops_stand_and_skips(tmp_path):
    model = load_model(builders.save(builders.conv_bn_relu_residual(), tmp_path))
    console = _console()
    print_inspection(model, find_units(model.proto, model.tensors), console, every_op=True)
    text = console.export_text()
    assert f"{model.path}  sha256 {model.sha256[:16]}" in text
    assert _row(text, "input", 0) == ["input", "x", "float32", "[N, 3, 8, 8]"]
    assert _row(text, "output", 0) == ["output", "y", "float32", "[N, 5]"]
    assert "4 units" in text and "10 ops: 9 in the 4 units, 1 outside (no precision decision):" in text
    assert _row(text, "conv2") == ["2", "conv2", "gemm", "int8, fp16, bf16, tf32, fp8", "Conv+Relu+Add+Relu",
                                   "conv2, relu2, add, relu3", "r1", "0"]  # its INT8 input, its weight's axis
    assert _row(text, "gap")[-2:] == ["r3", "-"]  # no weight
    assert "  moves data: runs in the precision its input arrives in: Flatten x1" in text
    assert "Every op" in text and _row(text, "flatten") == [
        "9", "flatten", "Flatten", "- (moves data: runs in the precision its input arrives in)"]
    branches = load_model(builders.save(builders.if_subgraph(), tmp_path, "if.onnx"))
    console = _console()
    print_inspection(branches, find_units(branches.proto, branches.tensors), console)
    text = console.export_text()
    assert "0 units" in text and "2 skipped" in text and "conv_then" in text and "Every op" not in text


def _look(high=1.0, replicas=(0.97, 0.99), bound=None) -> Look:
    return Look(Plan.of({"conv1": "int8", "fc": "int8", "conv2": "fp16"}), 1.2, 0.98, 0.9, high, replicas, bound,
                True)


def _confirmation(look, confidence=None, changed=(), limits=("40 evaluation samples",)) -> Confirmation:
    level = None if confidence is None else 0.9975
    return Confirmation(20, 20, len(look.replicas) if look else 2, 2 ** -20, confidence, level, level or 0.95,
                        1.0, 0.95, look, (look,) if look else (), tuple(changed), tuple(limits))


def _report(confirmation=None, tf32=True, all_ms=None, note="", compared=(), allowed=0.05) -> PlanReport:
    int8, fp16 = _results()
    units = (PlannedUnit("conv1", P.INT8, ("conv1",), 1.234e-3, int8.with_thresholds({"x": "entropy"}, 2.468e-3),
                         {}, "gemm", 0.25),
             PlannedUnit("conv2", P.FP16, ("conv2",), 1e-7, fp16, {}, "gemm", 0.5),
             PlannedUnit("gap", P.FP32, ("gap",), 0.0, None, {}, "pool", 0.0),
             PlannedUnit("fc", P.INT8, ("fc",), 5e-3, UnitResult(0.99, 25.0, 5e-3, 0.2), {}, "gemm", 0.01))
    result = PlanResult(Outcome.LOWERED, 1.0, 0.98, allowed, {P.INT8: 2, P.FP16: 1, P.FP32: 1},
                        "Lowered 3 of 4 units", confirmation)
    latency = LatencySummary("estimated", "estimated", "T4", "datasheet", 8,
                             all_ms or {P.FP32: 2.0, P.TF32: 1.5, P.FP16: 1.0}, 1.234, note, tf32)
    return PlanReport(model_path="m.onnx", model_sha256="0" * 64, evaluation=Evaluation(DataInfo("eval.npz", "npz",
                      40), "agreement"), calibration=Calibration(DataInfo("calib.npz", "npz", 32), "auto", 8),
                      budget=Budget(max_drop=allowed), result=result, latency=latency, units=units, verification=(),
                      backend="onnxruntime", compared=tuple(compared))


def test_the_measured_line_without_a_confirm_part():
    assert measured_line(_report()) == ("measured agreement on 40 held-out samples: FP32 1.0000, mix 0.9800, "
                                        "drop 0.0200 (allowed 0.0500)")
    assert measured_line(_report(allowed=None)).endswith("mix 0.9800, drop 0.0200")


def test_the_measured_line_gives_the_interval_replicas_and_margin_of_the_deciding_look():
    where = ("measured agreement on the 20 confirm samples (of 40; the search selected on the other 20): "
             "FP32 1.0000, mix 0.9800")
    line = measured_line(_report(_confirmation(_look())))
    assert line == f"{where} (95% interval 0.9000-1.0000), 2 replicas 0.9700-0.9900, drop 0.0200 (allowed 0.0500, " \
        "margin 0.0200)"  # the margin: the worst replica 0.97 over the threshold 0.95
    bound = measured_line(_report(_confirmation(_look(math.inf, (), 0.93), confidence=0.99)))
    assert bound == f"{where} (one-sided 0.9975 bound 0.9000), drop 0.0200 (allowed 0.0500, margin -0.0200)"
    assert measured_line(_report(_confirmation(None))) == f"{where} (all-FP32: nothing lowered)"


def test_the_plan_summary_shows_each_units_choice_the_counts_the_weights_and_the_latencies():
    console = _console()
    print_plan(_report(note="all-FP16 is estimated faster but cannot be used"), "run", console)
    text = console.export_text()
    assert _rows(text) == [
        ["1", "conv1", "INT8", "9.00e-04", "0.975", "INT8 threshold: entropy (NMSE 2.7x lower than max)"],
        ["2", "conv2", "FP16", "1.00e-07", "1.000", ""],  # no threshold note but for INT8
        ["3", "gap", "FP32", "-", "-", ""],  # FP32: nothing to report
        ["4", "fc", "INT8", "5.00e-03", "-", ""]]  # no class scores: no top-1
    assert "units: 1 FP16, 2 INT8, 1 FP32 (of 4)" in text
    assert "by kind: gemm 3 (1 FP16, 2 INT8); pool 1 (1 FP32)" in text
    assert "weights: 0.76 MB (FP16 0.50, INT8 0.26)" in text
    assert "measured agreement on 40 held-out samples: FP32 1.0000, mix 0.9800, drop 0.0200 (allowed 0.0500)" in text
    assert ("latency on T4 at batch 8 (estimated): mix 1.234 ms; all-FP32 true FP32 2.000, all-FP32 in TF32 "
            "(TensorRT's default here) 1.500, all-FP16 1.000 ms") in text
    assert "note: all-FP16 is estimated faster but cannot be used" in text
    assert "TF32: on (the FP32 GEMMs of the mix were verified in TF32)" in text
    assert text.rstrip().endswith("Lowered 3 of 4 units. 0 search verifications. Wrote run/plan.json, "
                                  "model.mixed.onnx, model.weak.onnx, trtexec.txt, report.json, report.html")


def test_the_plan_summary_names_changed_samples_notes_and_what_it_was_compared_with():
    changed = [f"img{k}.jpg" for k in range(10)]
    conf = _confirmation(_look(), changed=changed, limits=("the split, said above", "only 20 confirm samples"))
    compared = [Compared("as shipped", "53 INT8 units (the file's Q/DQ)", 0.97, 1.1)]
    console = _console()
    print_plan(_report(conf, tf32=None, all_ms={P.FP32: 2.0, P.FP16: 1.0}, compared=compared), "run", console)
    text = console.export_text()
    assert ("top-1 changed on 10 of 40 evaluation samples: img0.jpg, img1.jpg, img2.jpg, img3.jpg, img4.jpg, "
            "img5.jpg, img6.jpg, img7.jpg and 2 more") in text
    assert "note: only 20 confirm samples" in text and "the split, said above" not in text  # said once, elsewhere
    assert "as shipped: 53 INT8 units (the file's Q/DQ): agreement 0.9700 on the confirm part, 1.100 ms (estimated)" \
        in text
    assert "all-FP32 2.000, all-FP16 1.000 ms" in text and "TF32" not in text  # no TF32 figure: no TF32 line
    assert "Lowered 3 of 4 units. 0 search verifications, 1 confirm looks." in text


def test_uniform_labels_tell_the_two_fp32_references_apart_only_when_tf32_is_among_them():
    assert uniform_label(P.FP16, {P.FP32: 1.0, P.FP16: 0.5}) == "all-FP16"
    assert uniform_label(P.FP32, {P.FP32: 1.0, P.FP16: 0.5}) == "all-FP32"
    assert uniform_label(P.FP32, {P.FP32: 1.0, P.TF32: 0.8}) == "all-FP32 true FP32"
    assert uniform_label(P.TF32, {P.TF32: 0.8}) == "all-FP32 in TF32 (TensorRT's default here)"


def test_the_check_lists_units_that_differ_and_counts_those_the_engine_does_not_tell():
    rows = [CheckRow("conv1", P.INT8, "int8"), CheckRow("conv2", P.INT8, "fp16"), CheckRow("fc", P.INT4, "fp16"),
            CheckRow("proj", P.TF32, "fp32"), CheckRow("gap", P.FP16, None), CheckRow("soft", P.FP16, "N/A")]
    console = _console()
    print_check(rows, console)
    text = console.export_text()
    assert "Units whose realised precision differs from the plan" in _flat(text)
    assert _rows(text) == [["conv2", "INT8", "FP16"]]  # the others match or are not told
    assert "3 of 6 units run in their planned precision; 1 differ." in text  # INT4 reads FP16, TF32 is FP32
    assert "2 not told by the engine (fused with another unit, format N/A, or not found): gap, soft" in text
    unknown = [CheckRow(f"u{k}", P.INT8, None) for k in range(7)]
    console = _console()
    print_check([CheckRow("ok", P.FP16, "fp16"), *unknown], console)
    text = console.export_text()
    assert "│" not in text and "1 of 8 units run in their planned precision; 0 differ." in text
    assert "7 not told by the engine (fused with another unit, format N/A, or not found): u0, u1, u2, u3, u4 ..." \
        in text
