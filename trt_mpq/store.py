"""An on-disk store of FP32 activations, one folder per batch, so a unit's downstream run can start from
its inputs without recomputing everything upstream, in memory bounded by one batch."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .journal import atomic_write_json


class ActivationStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.meta_path = self.root / "complete.json"
        self.index: dict[str, int] = {}
        self.types: dict[str, tuple[str, int]] = {}
        if self.meta_path.exists():
            meta = json.loads(self.meta_path.read_text())
            self.index = meta["index"]
            self.types = {k: (v[0], v[1]) for k, v in meta["types"].items()}
            self.batches = meta["batches"]
        else:
            self.batches = 0

    @property
    def complete(self) -> bool:
        return self.meta_path.exists()

    def reset(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.index, self.types, self.batches = {}, {}, 0

    def write(self, batch: int, tensors: Mapping[str, np.ndarray]) -> None:
        folder = self.root / f"b{batch:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in tensors.items():
            k = self.index.setdefault(name, len(self.index))
            self.types.setdefault(name, (value.dtype.str, value.ndim))
            np.save(folder / f"{k}.npy", value, allow_pickle=False)
        self.batches = max(self.batches, batch + 1)

    def finish(self) -> None:
        atomic_write_json(self.meta_path, {"index": self.index, "types": self.types, "batches": self.batches})

    def read(self, batch: int, names: Iterable[str]) -> dict[str, np.ndarray]:
        folder = self.root / f"b{batch:05d}"
        return {n: np.load(folder / f"{self.index[n]}.npy", allow_pickle=False) for n in names}

    def dtype_rank(self, name: str) -> tuple[np.dtype, int]:
        dtype, rank = self.types[name]
        return np.dtype(dtype), rank

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
