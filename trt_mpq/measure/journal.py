"""Crash safety for the sensitivity loop: an append-only journal of finished measurements."""

from __future__ import annotations

import json
import os
from pathlib import Path


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
