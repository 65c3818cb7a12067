"""Atomic file writes: readers never see half a file, and a failed write leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename."""
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


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    """JSON with two-space indent; NaN/Inf are refused (JSON has none)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def atomic_write_npz(path: Path, chunks: Iterable[Mapping[str, np.ndarray]],
                     extra: Mapping[str, np.ndarray] | None = None) -> None:
    """A .npz whose arrays arrive in chunks, each chunk's rows appended along the first axis, with one chunk in
    memory at a time (the rows wait in raw files beside ``path``), then ``extra`` arrays; renamed into place
    whole, and nothing is left behind when a chunk fails."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        layout: dict[str, list] = {}  # name -> [raw file, dtype, shape after the first axis, rows]
        try:
            for chunk in chunks:
                for name, a in chunk.items():
                    a = np.ascontiguousarray(a)
                    if name not in layout:
                        layout[name] = [open(Path(tmp) / f"{len(layout)}.raw", "wb"), a.dtype, a.shape[1:], 0]
                    raw, dtype, tail, _ = layout[name]
                    if (a.dtype, a.shape[1:]) != (dtype, tail):
                        raise ValueError(f"array '{name}': a chunk {a.dtype}{list(a.shape)} after {dtype}{list(tail)}")
                    raw.write(a.tobytes())
                    layout[name][3] += a.shape[0]
        finally:
            for raw, *_ in layout.values():
                raw.close()
        staged = Path(tmp) / "staged.npz"
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, (raw, dtype, tail, rows) in layout.items():
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, *tail)}
                with z.open(f"{name}.npy", "w", force_zip64=True) as f, open(raw.name, "rb") as src:
                    np.lib.format.write_array_header_1_0(f, header)
                    shutil.copyfileobj(src, f, 1 << 20)
            for name, a in (extra or {}).items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(staged, 0o666 & ~_umask())
        os.replace(staged, path)
