"""The records that cross stages: what a stage writes is what the next one reads back, field for field."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import onnx
import pytest

from trt_mpq import Plan, PlanOptions, plan
from trt_mpq import Precision as P
from trt_mpq.artifacts import Analysis, Budget, BuildResult, CheckRow, PlanReport, RunFolder, UnitResult, planned_units
from trt_mpq.artifacts.record import Record, empty, keep
from trt_mpq.commands.opened import open_analysis, read_analysis
from trt_mpq.errors import ConfigError
from trt_mpq.executors import AUTO_JOBS, cores


def test_analysis_reads_back_what_analyze_wrote(analysed):
    folder = RunFolder(analysed / "run")
    written = json.loads(folder.sensitivity.read_text())
    analysis = Analysis.from_json(written)
    assert analysis.to_json() == written
    assert [u.name for u in analysis.units] == ["conv1", "conv2", "gap", "fc"]
    # jobs side by side on a machine of several cores: each session on its share of them, recorded
    jobs = min(AUTO_JOBS, cores())
    threads = {"ort_threads": cores() // jobs} if jobs > 1 else {}
    assert analysis.backend.name == "onnxruntime" and analysis.backend.settings == {"ort_optimize": "none", **threads}
    assert analysis.calibration.data.samples == 32 and analysis.calibration.calibrator == "auto"
    assert analysis.calibration.bias_correction and analysis.calibration.weight_scales == "mse"
    assert all(isinstance(r, UnitResult) and r.nmse >= 0 for u in analysis.units for r in u.results.values())
    assert all(r.nmse > 0 for u in analysis.units if u.kind == "gemm" for r in u.results.values())
    assert [u.kind for u in analysis.units] == ["gemm", "gemm", "pool", "gemm"]


def test_open_analysis_checks_that_model_and_units_still_match(analysed):
    opened = open_analysis(analysed / "run")
    assert [u.name for u in opened.units] == [u.name for u in opened.analysis.units]
    assert opened.ranges.amax and opened.model.sha256 == opened.analysis.model.sha256
    model = onnx.load(str(analysed / "model.onnx"))
    model.doc_string = "retrained"  # the same graph, other bytes
    onnx.save(model, str(analysed / "model.onnx"))
    with pytest.raises(ConfigError, match="changed since it was analysed"):
        open_analysis(analysed / "run")
    (analysed / "run" / "ranges.json").write_text("{")
    with pytest.raises(ConfigError, match="incomplete or damaged"):
        read_analysis(analysed / "run")


def test_plan_report_record_matches_its_files(analysed):
    report = plan(analysed / "run", PlanOptions(eval=str(analysed / "eval.npz"), budget=Budget(max_drop=0.5)))
    folder = RunFolder(analysed / "run")
    document = json.loads(folder.report_json.read_text())
    assert document == json.loads(json.dumps(report.to_json()))
    back = PlanReport.from_json(document)  # read back by field name: every record, plan and look included
    assert back.to_json() == document and back.plan == report.plan
    assert [s.plan for s in back.verification] == [s.plan for s in report.verification]
    with pytest.raises(ValueError, match="schema"):
        PlanReport.from_json({**document, "schema": "trt-mpq/plan/0"})
    plan_json = json.loads(folder.plan.read_text())
    assert "latency" not in plan_json and plan_json["result"] == json.loads(json.dumps(report.to_json()))["result"]
    assert report.plan == {u["name"]: P(u["precision"]) for u in plan_json["units"] if u["precision"] != "fp32"}
    assert report.result.outcome.value == plan_json["result"]["outcome"]
    assert [s.kind.value for s in report.verification] == [s["note"] for s in plan_json["verification"]]
    assert planned_units(plan_json) == report.units  # plan.json's units read back typed, as check and build do
    with pytest.raises(ValueError, match="schema"):
        planned_units({**plan_json, "schema": "trt-mpq/plan/0"})
    conf = plan_json["result"]["confirmation"]  # the proof: split, interval, replicas, margin, every look
    assert conf["search_samples"] + conf["confirm_samples"] == 40 and conf["replicas"] == 4
    chosen = conf["chosen"]
    assert chosen is None or (chosen["interval"][0] <= chosen["score"] and len(chosen["replicas"]) == 4)
    assert conf["looks"] == [] or conf["looks"][-1]["passed"] == (chosen is not None)
    assert "Proof on held-out samples" in folder.report_html.read_text()


def test_unit_result_json_keeps_only_what_was_measured():
    clean = UnitResult(0.9, 20.0, 0.01, 0.5)
    assert clean.to_json() == {"cosine": 0.9, "sqnr_db": 20.0, "nmse": 0.01, "max_abs": 0.5}
    assert clean.severity == 0.01 and UnitResult.from_json(clean.to_json()) == clean
    broken = UnitResult(None, None, None, None, nonfinite=3).with_fp16_overflow(["w"])
    assert broken.severity == float("inf") and broken.to_json()["fp16_overflow"] == ["w"]
    assert UnitResult.from_json(broken.to_json()) == broken


def test_plan_is_a_frozen_mapping_of_lowered_units():
    plan_ = Plan.of({"a": P.INT8, "b": "fp32", "c": "fp16"})
    assert plan_ == {"a": P.INT8, "c": P.FP16} == plan_ and plan_ == {"a": "int8", "b": "fp32", "c": "fp16"}
    assert len(plan_) == 2 and plan_.precision("b") is P.FP32 and plan_.count(P.INT8) == 1
    assert plan_.digest() == Plan.of({"c": P.FP16, "a": P.INT8}).digest() != Plan().digest()
    assert len({plan_, Plan.of({"c": "fp16", "a": "int8"})}) == 1  # hashable, order-free
    with pytest.raises(KeyError):
        plan_["b"]


def test_build_result_and_check_rows_round_trip():
    rows = (CheckRow("conv1", P.INT8, "fp32"), CheckRow("fc", P.FP16, "fp16"), CheckRow("x", P.FP32, None))
    assert [r.matches for r in rows] == [False, True, False]
    result = BuildResult("model.engine", rows)
    assert not result.all_match and BuildResult.from_json(result.to_json()) == result
    assert result.to_json()["schema"] == "trt-mpq/build/1"


def test_budget_round_trips_and_validates_when_asked():
    budget = Budget(max_drop=0.01, relative=True, speedup_vs="fp16", max_size_mb=3)
    assert Budget.from_json(budget.to_json()) == budget and budget.speedup_vs is P.FP16
    with pytest.raises(ConfigError, match="give a budget"):
        PlanOptions(eval="eval.npz")  # options check their budget once, on construction


@dataclass(frozen=True)
class _Inner(Record):
    name: str
    details: dict = keep(flatten=True, default_factory=dict)


@dataclass(frozen=True)
class _Outer(Record):
    inner: _Inner
    per: dict[P, float] = keep(round=2, default_factory=dict)
    plans: tuple[Plan, ...] = ()
    ms: float = keep(key="latency_ms", default=0.0)
    notes: tuple[str, ...] = keep(empty, default=())
    extra: dict = field(default_factory=dict)


def test_records_serialise_by_field_name_and_read_back_by_type():
    x = _Outer(_Inner("a", {"seed": 3}), {P.INT8: 1.234}, (Plan.of({"u": "fp16"}),), 2.5)
    doc = x.to_json()
    assert doc == {"inner": {"name": "a", "seed": 3}, "per": {"int8": 1.23}, "plans": [{"u": "fp16"}],
                   "latency_ms": 2.5, "extra": {}}
    back = _Outer.from_json({**doc, "derived": 7})  # keys a record does not have are ignored
    assert back.inner == x.inner and back.per == {P.INT8: 1.23} and back.plans == x.plans and back.ms == 2.5
    assert _Outer.from_json({"inner": {"name": "b"}}).notes == ()  # absent: the field's default
