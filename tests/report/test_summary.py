"""The plan summary's notes (report.summary)."""


def test_a_mix_slower_than_all_fp16_says_why_all_fp16_was_not_the_answer():
    import types

    from trt_mpq.artifacts import UnitResult
    from trt_mpq.precision import Precision
    from trt_mpq.report.summary import fp16_note

    ok = UnitResult(1.0, 80.0, 1e-8, 1e-3)
    overflow = ok.with_fp16_overflow(["bn.var"])
    units = [types.SimpleNamespace(name="a", results={Precision.FP16: ok}),
             types.SimpleNamespace(name="bn", results={Precision.FP16: overflow})]
    analysis = types.SimpleNamespace(units=units)
    assert fp16_note(analysis, 0.7, 0.8).startswith("all-FP16 is estimated faster but cannot be used: 1 unit")
    assert "(bn)" in fp16_note(analysis, 0.7, 0.8)
    assert fp16_note(analysis, 0.8, 0.8) == ""  # not slower: nothing to explain
    units.pop()
    assert "predicted error is beyond the accuracy budget" in fp16_note(analysis, 0.7, 0.8)


def test_threshold_note_names_the_method_and_what_it_gained():
    from trt_mpq.artifacts import UnitResult
    from trt_mpq.report.summary import threshold_note

    r = UnitResult(1.0, 40.0, 1e-4, 0.1)
    assert threshold_note(r.with_thresholds({"x": "entropy"}, 3e-4)) == "INT8 threshold: entropy (NMSE 3.0x lower " \
        "than max)"
    assert "within 5 % of max" in threshold_note(r.with_thresholds({"x": "mse"}, 1.02e-4))
    assert threshold_note(r.with_thresholds({"x": "max"}, 1e-4)) == "INT8 threshold: max"


def test_the_sensitivity_table_lists_units_a_precision_does_not_apply_to():
    """--precisions int4,fp16: units without a weight have no INT4 result; they are listed after the ranked
    ones with "-" where they were not measured, not dropped."""
    from types import SimpleNamespace

    from rich.console import Console

    from trt_mpq.artifacts import AnalysedUnit, UnitResult
    from trt_mpq.precision import Precision as P
    from trt_mpq.report.console import sensitivity_table

    r = UnitResult(cosine=0.999, sqnr_db=40.0, nmse=1e-4, max_abs=0.1)
    units = [AnalysedUnit("proj", "MatMul", ("proj",), ("MatMul",), {P.INT4: r, P.FP16: r}),
             AnalysedUnit("scores", "MatMul", ("scores",), ("MatMul",), {P.FP16: r})]
    console = Console(width=200, record=True)
    console.print(sensitivity_table(SimpleNamespace(precisions=(P.INT4, P.FP16), units=units)))
    text = console.export_text()
    assert text.index("proj") < text.index("scores")
    row = next(line for line in text.splitlines() if "scores" in line)
    assert "-" in row and "inf" not in row
