"""Crash safety: atomic file writes and an append-only journal of finished measurements."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes the file private; outputs get the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


class Journal:
    """One JSON line per finished (unit, precision), flushed as soon as it is measured.

    A flushed line survives the process being killed; a run killed half-way leaves at most one torn last line,
    which ``load`` ignores. (No fsync per line: it would cost more than a measurement on slow disks, and a power
    loss only costs the re-measurement of the last few lines.)
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[tuple[str, str], dict]:
        done: dict[tuple[str, str], dict] = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
                done[(entry["unit"], entry["precision"])] = entry["result"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        return done

    def append(self, unit: str, precision: str, result: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"unit": unit, "precision": precision, "result": result}, allow_nan=False)
        with open(self.path, "a+b") as f:
            # A kill mid-write can leave a torn last line; start on a fresh line so this entry stays whole.
            torn = False
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            f.write(("\n" if torn else "").encode() + line.encode() + b"\n")
            f.flush()
