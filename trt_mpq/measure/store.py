"""An on-disk store of FP32 activations, so a unit's downstream run can start from its inputs without
recomputing everything upstream, in memory bounded by one batch.

One raw file per tensor, batches appended in order and read back memory-mapped (read-only views); the index
(offset, shape per batch) is kept in memory and written once complete. Few large files keep creation and deletion cheap.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..files import atomic_write_json


class ActivationStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.meta_path = self.root / "complete.json"
        self.files: dict[str, str] = {}
        self.dtypes: dict[str, str] = {}
        self.entries: dict[str, list[tuple[int, list[int]]]] = {}  # name -> per batch (offset, shape)
        self._maps: dict[str, np.memmap] = {}  # file -> the whole file mapped once (dropped when it grows)
        if self.meta_path.exists():
            meta = json.loads(self.meta_path.read_text())
            self.files, self.dtypes = meta["files"], meta["dtypes"]
            self.entries = {k: [(o, s) for o, s in v] for k, v in meta["entries"].items()}

    @property
    def complete(self) -> bool:
        return self.meta_path.exists()

    def reset(self) -> None:
        self._maps.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.files, self.dtypes, self.entries = {}, {}, {}

    def write(self, batch: int, tensors: Mapping[str, np.ndarray]) -> None:
        for name, value in tensors.items():
            if name not in self.files:
                self.files[name] = f"{len(self.files)}.bin"
                self.dtypes[name] = value.dtype.str
                self.entries[name] = []
            if len(self.entries[name]) != batch:
                raise ValueError("batches must be written in order")
            value = np.ascontiguousarray(value, dtype=np.dtype(self.dtypes[name]))
            self._maps.pop(self.files[name], None)
            with open(self.root / self.files[name], "ab") as f:
                offset = f.tell()
                f.write(value.data)  # the buffer itself, not a copy of it
            self.entries[name].append((offset, list(value.shape)))

    def finish(self) -> None:
        atomic_write_json(self.meta_path, {"files": self.files, "dtypes": self.dtypes, "entries": self.entries})

    def read(self, batch: int, names: Iterable[str]) -> dict[str, np.ndarray]:
        out = {}
        for n in names:
            offset, shape = self.entries[n][batch]
            dtype = np.dtype(self.dtypes[n])
            count = int(np.prod(shape, dtype=np.int64))
            if not count:  # an empty tensor: nothing to map
                out[n] = np.zeros(shape, dtype)
                continue
            # mapped, not copied: a region's inputs are read where the page cache holds them (a 640x640
            # detector's frontier is tens of MB per batch, read once per candidate and measurement)
            file = self.files[n]
            if file not in self._maps:
                self._maps[file] = np.memmap(self.root / file, dtype=np.uint8, mode="r")
            raw = self._maps[file][offset:offset + count * dtype.itemsize]
            out[n] = raw.view(np.ndarray).view(dtype).reshape(shape)
        return out

    def dtype_shape(self, name: str) -> tuple[np.dtype, list[int | None]]:
        """dtype and dims of a stored tensor; a dim that differs between batches (the batch axis when the
        last batch is short) is None. Static dims matter to TensorRT, which needs every non-batch dim fixed."""
        shapes = [s for _, s in self.entries[name]]
        dims = [d if all(s[i] == d for s in shapes) else None for i, d in enumerate(shapes[0])]
        return np.dtype(self.dtypes[name]), dims

    def remove(self) -> None:
        self._maps.clear()
        shutil.rmtree(self.root, ignore_errors=True)
