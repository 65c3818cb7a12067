"""The journal of finished measurements (measure/journal.py): what a killed run leaves, a rerun reads."""

import json

from trt_mpq.measure.journal import Journal


def test_entries_round_trip_and_the_last_one_wins(tmp_path):
    journal = Journal(tmp_path / "deep" / "results.jsonl")
    assert journal.load() == {}
    journal.append("conv1", "int8", {"nmse": 0.5})
    journal.append("conv1", "fp16", {"nmse": 1e-6})
    journal.append("conv1", "int8", {"nmse": 0.25})  # measured again: the newer result counts
    assert journal.load() == {("conv1", "int8"): {"nmse": 0.25}, ("conv1", "fp16"): {"nmse": 1e-6}}


def test_a_torn_line_is_skipped_and_the_next_entry_starts_clean(tmp_path):
    path = tmp_path / "results.jsonl"
    journal = Journal(path)
    journal.append("a", "int8", {"nmse": 1.0})
    with open(path, "a") as f:
        f.write('{"unit": "b", "precis')  # killed mid-write
    journal.append("c", "fp16", {"nmse": 2.0})
    assert journal.load() == {("a", "int8"): {"nmse": 1.0}, ("c", "fp16"): {"nmse": 2.0}}
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["unit"] == "c" and lines[1].startswith('{"unit": "b"')


def test_lines_that_are_not_entries_are_ignored(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('[1, 2]\n{"unit": "x"}\nnot json\n{"unit": "u", "precision": "int8", "result": {}}\n')
    assert Journal(path).load() == {("u", "int8"): {}}
