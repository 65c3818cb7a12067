"""An on-disk store of FP32 activations, so a unit's downstream run can start from its inputs without
recomputing everything upstream, in memory bounded by one batch.

One raw file per batch, its tensors one after another, written whole by whichever thread made the batch (jobs
on threads write theirs side by side, in any order: the FP32 pass was bound by one thread writing them in
turn); the index (file, offset, shape per tensor and batch) is kept in memory and written once complete. Few
large files keep creation and deletion cheap. A batch is read back as read-only
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
    FORMAT = 2  # one file per batch; a store of another format (an older version's) is made again

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.meta_path = self.root / "complete.json"
        self.files: dict[int, str] = {}  # batch -> its file
        self.dtypes: dict[str, str] = {}
        self.entries: dict[str, dict[int, tuple[int, list[int]]]] = {}  # name -> batch -> (offset, shape)
        self._fds: dict[str, int] = {}  # file -> a descriptor open for reading
        self._lock = threading.Lock()  # jobs on threads write and read concurrently (pread and mmap need none)
        meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}
        self._finished = meta.get("format") == self.FORMAT  # an older version's store is made again
        if self._finished:
            self.files = {int(b): f for b, f in meta["files"].items()}
            self.dtypes = meta["dtypes"]
            self.entries = {k: {int(b): (o, s) for b, (o, s) in v.items()} for k, v in meta["entries"].items()}

    @property
    def complete(self) -> bool:
        """Every batch written and the index on disk, in this version's format."""
        return self._finished and self.meta_path.exists()

    def reset(self) -> None:
        self._close()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.files, self.dtypes, self.entries = {}, {}, {}
        self._finished = False

    def write(self, batch: int, tensors: Mapping[str, np.ndarray]) -> None:
        """Keep ``tensors`` as batch ``batch``; safe from several threads, batches in any order."""
        name = f"{batch:06d}.bin"
        with self._lock:  # a tensor keeps the dtype of the first batch written
            dtypes = {t: np.dtype(self.dtypes.setdefault(t, np.asarray(v).dtype.str)) for t, v in tensors.items()}
        index = {}
        with open(self.root / name, "wb") as f:
            for tensor, value in tensors.items():
                value = np.ascontiguousarray(value, dtype=dtypes[tensor])
                index[tensor] = (f.tell(), list(value.shape))
                f.write(value.data)  # the buffer itself, not a copy of it
        with self._lock:
            for tensor, entry in index.items():
                self.entries.setdefault(tensor, {})[batch] = entry
            self.files[batch] = name

    def finish(self) -> None:
        atomic_write_json(self.meta_path, {"format": self.FORMAT, "files": self.files, "dtypes": self.dtypes,
                                           "entries": self.entries})
        self._finished = True

    def read(self, batch: int, names: Iterable[str]) -> dict[str, np.ndarray]:
        out = {}
        fd = None
        for n in names:
            offset, shape = self.entries[n][batch]
            dtype = np.dtype(self.dtypes[n])
            count = int(np.prod(shape, dtype=np.int64))
            nbytes = count * dtype.itemsize
            if not count:
                out[n] = np.zeros(shape, dtype)
                continue
            fd = fd if fd is not None else self._fd(self.files[batch])
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
        shapes = [s for _, (_, s) in sorted(self.entries[name].items())]
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
