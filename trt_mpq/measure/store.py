"""An on-disk store of FP32 activations, so a unit's downstream run can start from its inputs without
recomputing everything upstream, in memory bounded by one batch.

One raw file per tensor, batches appended in order; the index (offset, shape per batch) is kept in memory and
written once complete. Few large files keep creation and deletion cheap. A batch is read back as read-only
arrays: a large one mapped from the page cache rather than copied (a 640x640 detector's frontier is tens of
MB per batch, read once per candidate threshold and per measurement), unmapped when its arrays are dropped, so
a run's resident memory stays bounded by the batches in use.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..files import atomic_write_json

MAP_FROM = 1 << 20  # bytes from which a read is mapped, not copied (a mapping costs two system calls)


class ActivationStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.meta_path = self.root / "complete.json"
        self.files: dict[str, str] = {}
        self.dtypes: dict[str, str] = {}
        self.entries: dict[str, list[tuple[int, list[int]]]] = {}  # name -> per batch (offset, shape)
        self._fds: dict[str, int] = {}  # file -> a descriptor open for reading (files only grow at their end)
        self._lock = threading.Lock()  # jobs on threads read concurrently (pread and mmap need no lock; opening does)
        if self.meta_path.exists():
            meta = json.loads(self.meta_path.read_text())
            self.files, self.dtypes = meta["files"], meta["dtypes"]
            self.entries = {k: [(o, s) for o, s in v] for k, v in meta["entries"].items()}

    @property
    def complete(self) -> bool:
        return self.meta_path.exists()

    def reset(self) -> None:
        self._close()
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
            nbytes = count * dtype.itemsize
            if not count:
                out[n] = np.zeros(shape, dtype)
                continue
            fd = self._fd(self.files[n])
            if nbytes < MAP_FROM:
                out[n] = np.frombuffer(os.pread(fd, nbytes, offset), dtype).reshape(shape)
                continue
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            mapped = mmap.mmap(fd, offset - start + nbytes, offset=start, access=mmap.ACCESS_READ)
            out[n] = np.frombuffer(mapped, dtype, count, offset - start).reshape(shape)
        return out

    def dtype_shape(self, name: str) -> tuple[np.dtype, list[int | None]]:
        """dtype and dims of a stored tensor; a dim that differs between batches (the batch axis when the
        last batch is short) is None. Static dims matter to TensorRT, which needs every non-batch dim fixed."""
        shapes = [s for _, s in self.entries[name]]
        dims = [d if all(s[i] == d for s in shapes) else None for i, d in enumerate(shapes[0])]
        return np.dtype(self.dtypes[name]), dims

    def remove(self) -> None:
        self._close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _fd(self, file: str) -> int:
        with self._lock:
            if file not in self._fds:
                self._fds[file] = os.open(self.root / file, os.O_RDONLY)
            return self._fds[file]

    def _close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        self._close()
