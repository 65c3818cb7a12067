"""Atomic file writes (files.py): the whole file or the previous one, never half of it; nothing left behind when a
write fails; the usual permissions; JSON with two-space indent and no NaN/Inf."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from trt_mpq.files import _umask, atomic_write_bytes, atomic_write_json, atomic_write_npz, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_the_bytes_creating_folders_and_replacing_an_older_file(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(path, b"\x00first\xff")
    assert path.read_bytes() == b"\x00first\xff"
    atomic_write_bytes(path, b"2")
    assert path.read_bytes() == b"2"
    assert os.listdir(path.parent) == ["out.bin"]  # no temporary file left beside it
    atomic_write_bytes(str(tmp_path / "as_str.bin"), b"")  # a str path, an empty file
    assert (tmp_path / "as_str.bin").read_bytes() == b""


def test_readers_see_the_old_file_until_the_new_one_is_complete(tmp_path, monkeypatch):
    """While the data is being written and synced the target still holds the old file whole; the new data sits
    in a hidden temporary file of the same folder (so the rename is atomic) and replaces it in one step."""
    path = tmp_path / "ranges.json"
    path.write_text("old")
    seen = []
    real_fsync = os.fsync

    def fsync(fd):
        seen.append((path.read_text(), sorted(p.name for p in tmp_path.iterdir())))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_text(path, "new")
    (old, names), = seen
    assert old == "old"
    temp = [n for n in names if n != "ranges.json"]
    assert len(temp) == 1 and temp[0].startswith(".ranges.json.") and temp[0].endswith(".tmp")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["ranges.json"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path, monkeypatch, error):
    path = tmp_path / "plan.json"
    path.write_bytes(b"the old plan")

    def fsync(fd):
        raise error

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(type(error)):
        atomic_write_bytes(path, b"half of a new pl")
    assert path.read_bytes() == b"the old plan" and os.listdir(tmp_path) == ["plan.json"]
    fresh = tmp_path / "new.json"
    with pytest.raises(type(error)):
        atomic_write_bytes(fresh, b"x")
    assert not fresh.exists() and os.listdir(tmp_path) == ["plan.json"]


def test_a_rename_that_fails_removes_the_temporary_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")  # a folder stands where the file should go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and (target / "inside").read_text() == "kept"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_the_file_gets_the_permissions_of_an_ordinary_file_under_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.json", "{}")
        after = os.umask(umask)  # reading the umask means setting it: set it to what it should still be
        with open(tmp_path / "plain.json", "w") as f:  # what open() would have made
            f.write("{}")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "report.json") == 0o666 & ~umask == _mode(tmp_path / "plain.json")
    assert after == umask  # the process umask is left as it was


def test_text_is_written_as_utf8(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "µs → 3.0\n")
    assert (tmp_path / "t.txt").read_bytes() == "µs → 3.0\n".encode()


def test_json_has_two_space_indent_a_final_newline_and_round_trips(tmp_path):
    obj = {"b": [1, 2.5], "a": {"name": "conv1", "ok": True, "none": None}}
    atomic_write_json(tmp_path / "doc.json", obj)
    text = (tmp_path / "doc.json").read_text()
    assert text == json.dumps(obj, indent=2) + "\n" and text.startswith('{\n  "b": [\n    1,')
    assert json.loads(text) == obj


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_json_refuses_nan_and_inf_and_keeps_the_old_file(tmp_path, bad):
    path = tmp_path / "sensitivity.json"
    atomic_write_json(path, {"nmse": 0.5})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"nmse": bad})
    assert json.loads(path.read_text()) == {"nmse": 0.5} and os.listdir(tmp_path) == ["sensitivity.json"]


def test_an_npz_written_in_chunks_reads_back_whole_and_a_failed_chunk_leaves_nothing(tmp_path):
    rng = np.random.default_rng(0)
    x, ids = rng.standard_normal((10, 3, 4)).astype(np.float32), rng.integers(0, 9, (10, 5))
    chunks = ({"x": x[lo:lo + 4], "ids": ids[lo:lo + 4]} for lo in range(0, 10, 4))  # 4 + 4 + 2 rows
    path = tmp_path / "data.npz"
    atomic_write_npz(path, chunks, {"note": np.array("how it was made")})
    with np.load(path) as d:
        assert sorted(d.files) == ["ids", "note", "x"]
        np.testing.assert_array_equal(d["x"], x)
        np.testing.assert_array_equal(d["ids"], ids)
        assert d["x"].dtype == np.float32 and str(d["note"]) == "how it was made"
    assert os.listdir(tmp_path) == ["data.npz"] and _mode(path) == 0o666 & ~_umask()

    def failing():
        yield {"x": x[:4]}
        raise RuntimeError("the generator broke")

    with pytest.raises(RuntimeError, match="broke"):
        atomic_write_npz(path, failing())
    with np.load(path) as d:  # the previous file, whole
        np.testing.assert_array_equal(d["x"], x)
    assert os.listdir(tmp_path) == ["data.npz"]
    with pytest.raises(ValueError, match="a chunk float32"):  # rows of another shape cannot be appended
        atomic_write_npz(tmp_path / "bad.npz", iter([{"x": x[:2]}, {"x": x[:2, :2]}]))
    assert os.listdir(tmp_path) == ["data.npz"]
