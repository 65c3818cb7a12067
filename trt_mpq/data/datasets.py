"""Calibration and evaluation data: generated from the model, .npz/.npy files or folders, image folders.

Every source is a fixed, ordered list of samples served in batches stacked along the model's batch axis
(axis 0 when it is dynamic; otherwise one sample per run). Arrays in files hold samples along their first
axis: either with the model's rank (``[N,3,224,224]`` for an input ``[batch,3,224,224]``) or with one more
axis (``[N,2,1,128]``: each sample a full input). Generated data (the default) is documented in the README:
float inputs ~ N(0, 1), integer inputs inside their valid range, a fixed seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import DataInfo
from ..errors import DataError
from ..network.model import LoadedModel, TensorSpec, file_sha256
from ..network.shapes import format_dims
from .generate import (
    IMAGE_KINDS,
    PINK_NOISE,
    RECIPES,
    describe_statistics,
    draw_image,
    index_bound,
    is_mask,
    padding_mask,
)
from .images import Preprocess, list_images, load_image, preprocess_image

DEFAULT_GENERATED_SAMPLES = 16
LABELS = "labels"
GENERATOR = "trt_mpq_generator"  # a .npz array holding, as JSON, how 'trt-mpq generate' made the data


@dataclass
class Dataset:
    """Samples for a model; ``take(lo, hi)`` returns model-ready feeds for samples lo..hi-1."""

    model_inputs: list[TensorSpec]
    num_samples: int
    take_fn: Callable[[int, int], dict[str, np.ndarray]]
    source: str  # where the samples came from, in words (a path, "generated")
    kind: str  # npz, npy, folder, images, generated
    details: Mapping[str, Any]  # what else the kind records (preprocessing, seed, ...)
    fingerprint: str
    labels: np.ndarray | None = None
    names: list[str] | None = None  # per sample, where the source has them (image file names)

    def name(self, i: int) -> str:
        """What to call sample ``i`` in a report: its file name, or its index in the source."""
        return self.names[i] if self.names is not None else f"sample {i}"

    @property
    def batchable(self) -> bool:
        return all(s.batch_axis == 0 for s in self.model_inputs)

    def effective_batch(self, batch: int) -> int:
        return max(1, min(batch, self.num_samples)) if self.batchable else 1

    def spans(self, batch: int) -> list[tuple[int, int]]:
        b = self.effective_batch(batch)
        return [(lo, min(lo + b, self.num_samples)) for lo in range(0, self.num_samples, b)]

    def take(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        feeds = self.take_fn(lo, hi)
        for spec in self.model_inputs:
            _check_batch(spec, feeds[spec.name], lo, self.source)
        return feeds

    def batches(self, batch: int) -> Iterator[dict[str, np.ndarray]]:
        for lo, hi in self.spans(batch):
            yield self.take(lo, hi)

    def record(self) -> DataInfo:
        """Where the samples came from, for the artifacts."""
        return DataInfo(self.source, self.kind, self.num_samples, self.fingerprint, dict(self.details))


def _check_batch(spec: TensorSpec, a: np.ndarray, lo: int, source: str) -> None:
    if a.dtype != spec.dtype:
        raise DataError(f"input '{spec.name}' expects {spec.dtype.name}; {source} gives {a.dtype.name}.")
    if a.ndim != len(spec.shape) or any(isinstance(d, int) and d != n and k != spec.batch_axis
                                         for k, (d, n) in enumerate(zip(spec.shape, a.shape, strict=True))):
        want = ["N" if k == spec.batch_axis else d for k, d in enumerate(spec.shape)]
        hint = ""
        if a.ndim == 4 and len(spec.shape) == 4 and a.shape[3] == spec.shape[1] and a.shape[1] != spec.shape[1]:
            hint = " — is it NHWC? The model wants NCHW."
        raise DataError(f"input '{spec.name}' expects shape {format_dims(want, ',')}; {source} gives "
                        f"{list(a.shape)}{hint}")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        bad = int(np.argwhere(~np.isfinite(a))[0][0]) + lo if a.ndim else lo
        raise DataError(f"input '{spec.name}' in {source} contains NaN or Inf (sample {bad}).")


def _check_finite(spec: TensorSpec, a: np.ndarray, source: str, used: int | None = None,
                  chunk: int = 256) -> None:
    """Refuse NaN/Inf in the samples that will be used, before any work starts; chunked so a memory-mapped
    file is not loaded whole."""
    if not np.issubdtype(a.dtype, np.floating) or a.ndim == 0:
        return
    for lo in range(0, min(a.shape[0], used or a.shape[0]), chunk):
        part = np.asarray(a[lo:min(lo + chunk, used or a.shape[0])])
        bad = ~np.isfinite(part)
        if bad.any():
            sample = lo + int(np.argwhere(bad)[0][0])
            raise DataError(f"input '{spec.name}' in {source} contains NaN or Inf (sample {sample}).")


def _coerce(spec: TensorSpec, a: np.ndarray, source: str) -> np.ndarray:
    """Accept the lossless conversions users expect (float64 -> float32, int32 -> int64); refuse the rest."""
    if a.dtype == spec.dtype:
        return a
    same_kind = (np.issubdtype(a.dtype, np.floating) and np.issubdtype(spec.dtype, np.floating)) or (
        np.issubdtype(a.dtype, np.integer) and np.issubdtype(spec.dtype, np.integer))
    if same_kind:
        return a.astype(spec.dtype)
    hint = " (raw pixels? give an image folder with --preprocess, or scale them first)" if a.dtype == np.uint8 else ""
    raise DataError(f"input '{spec.name}' expects {spec.dtype.name}; {source} gives {a.dtype.name}{hint}.")


def _sampler(spec: TensorSpec, a: np.ndarray, source: str) -> tuple[int, Callable[[int, int], np.ndarray]]:
    """Sample count and a slicer for an array holding samples along axis 0."""
    rank = len(spec.shape)
    if a.ndim == rank + 1:
        def take(lo: int, hi: int) -> np.ndarray:
            return a[lo] if hi - lo == 1 else np.concatenate(list(a[lo:hi]), axis=0)

        return a.shape[0], take
    if a.ndim == rank and rank > 0:
        return a.shape[0], lambda lo, hi: a[lo:hi]
    raise DataError(
        f"input '{spec.name}' has {rank} dims ({spec.describe()}); {source} gives an array of shape {list(a.shape)}: "
        f"use {rank} dims with samples along the first, or {rank + 1} dims (one full input per sample)."
    )


def _from_arrays(model: LoadedModel, arrays: dict[str, np.ndarray], source: str, kind: str,
                 fingerprint: str, limit: int | None) -> Dataset:
    names = [s.name for s in model.inputs]
    labels = arrays.pop(LABELS, None) if LABELS not in names else None
    made = arrays.pop(GENERATOR, None)  # written by 'trt-mpq generate': what the data is, kept in the record
    try:
        details = {"generated": json.loads(str(made))} if made is not None else {}
    except json.JSONDecodeError:
        raise DataError(f"{source}: its '{GENERATOR}' array is not the record 'trt-mpq generate' writes; "
                        "remove or rename it.") from None
    missing = [n for n in names if n not in arrays]
    if missing:
        have = ", ".join(sorted(arrays)) or "nothing"
        hint = (f"; pick arrays by name with '{source.strip(chr(39))}:{missing[0]}=ARRAY[,labels=ARRAY]'"
                if kind == "npz" and arrays else "")
        raise DataError(f"{source} has no array for input '{missing[0]}' (it has: {have}){hint}.")
    extra = sorted(set(arrays) - set(names))
    if extra:
        raise DataError(
            f"{source} has arrays that are not model inputs: {', '.join(extra)} (inputs: {', '.join(names)})."
        )
    takers, counts = {}, {}
    for spec in model.inputs:
        a = _coerce(spec, np.asarray(arrays[spec.name]), source)
        counts[spec.name], takers[spec.name] = _sampler(spec, a, source)
        _check_finite(spec, a, source, used=limit)
    if len(set(counts.values())) > 1:
        raise DataError(f"{source} holds different sample counts per input: {counts}.")
    n = next(iter(counts.values()))
    if labels is not None and len(labels) != n:
        raise DataError(f"{source} has {len(labels)} labels for {n} samples.")
    return _finish(model, n, lambda lo, hi: {k: t(lo, hi) for k, t in takers.items()},
                   (source, kind, details), fingerprint, limit, labels)


def _finish(model, n, take, origin: tuple[str, str, dict], fingerprint, limit, labels=None, names=None) -> Dataset:
    """The dataset of ``n`` samples (at most ``limit``); ``origin``: its source, kind and details."""
    source, kind, details = origin
    if n == 0:
        raise DataError(f"{source} holds no samples.")
    if limit is not None:
        if limit < 1:
            raise DataError("--samples must be at least 1.")
        n = min(n, limit)
        labels = labels[:n] if labels is not None else None
    fp = hashlib.sha256(json.dumps([fingerprint, n], sort_keys=True).encode()).hexdigest()
    ds = Dataset(model.inputs, n, take, source, kind, details, fp, labels, names[:n] if names is not None else None)
    ds.take(0, 1)  # fail now, with one sentence, rather than in the middle of a long run
    return ds


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataError(f"cannot read '{path}' as .npz: {str(exc).splitlines()[0]}") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read '{path}' as .npy: {str(exc).splitlines()[0]}") from None


def _array_files(model: LoadedModel, files: list[Path], source: str) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for f in files:
        if f.suffix == ".npz":
            loaded = _load_npz(f)
        else:
            if len(model.inputs) != 1:
                raise DataError(f"'{f}' is a .npy file, which can only feed a model with one input; use .npz "
                                f"with one array per input name ({', '.join(s.name for s in model.inputs)}).")
            loaded = {model.inputs[0].name: _load_npy(f)}
        for k, v in loaded.items():
            parts.setdefault(k, []).append(v)
    try:
        return {k: v[0] if len(v) == 1 else np.concatenate(v, axis=0) for k, v in parts.items()}
    except ValueError:
        raise DataError(f"the files in {source} hold arrays of different shapes; they cannot be stacked.") from None


def _image_input(model: LoadedModel, pre: Preprocess, what: str) -> tuple[TensorSpec, tuple[int, int] | None]:
    """The one 4-D float input images feed, and its (h, w) where the model fixes it."""
    float_inputs = [s for s in model.inputs if np.issubdtype(s.dtype, np.floating)]
    if len(model.inputs) != 1 or len(float_inputs) != 1 or len(float_inputs[0].shape) != 4:
        raise DataError(f"{what} can only feed a model with one 4-D float input; this model has "
                        f"{', '.join(s.describe() for s in model.inputs)}. Use .npz files instead.")
    spec = float_inputs[0]
    hw_axes = (2, 3) if pre.layout == "nchw" else (1, 2)
    size = tuple(spec.shape[a] for a in hw_axes)
    return spec, (size if all(isinstance(d, int) for d in size) else None)


def _generated_images(model: LoadedModel, n: int, seed: int, pre: Preprocess, kind: str) -> Dataset:
    from PIL import Image

    spec, size = _image_input(model, pre, f"--calib {kind} (images)")
    if pre.resize is not None:  # drawn at the size the preprocessing resizes to, as photos arrive
        h, w = (pre.resize, pre.resize) if isinstance(pre.resize, int) else pre.resize
    elif size is not None:
        h, w = size
    else:
        raise DataError(f"input '{spec.name}' ({spec.describe()}) has no fixed height and width and the "
                        "preprocessing no 'resize': give one of them to generate images.")
    channels = 1 if pre.color == "gray" else 3

    def take(lo: int, hi: int) -> dict[str, np.ndarray]:
        arrays = [preprocess_image(Image.fromarray(draw_image(kind, seed, i, h, w, channels).squeeze()),
                                   pre, size, f"sample {i}") for i in range(lo, hi)]
        return {spec.name: np.concatenate(arrays, axis=0)}

    first = [draw_image(kind, seed, i, h, w, channels) for i in range(min(n, 8))]
    details = {"seed": seed, "generator": f"{IMAGE_KINDS[kind]}, {w}x{h} pixels, preprocessed as photos",
               "statistics": describe_statistics(first), "preprocess": pre.to_json()}
    fp = ["generated", kind, RECIPES[kind], seed, pre.to_json(), spec.name, str(size)]
    return _finish(model, n, take, ("generated", "generated", details), fp, None)


def _image_dataset(model: LoadedModel, folder: Path, images: list[Path], pre: Preprocess, limit) -> Dataset:
    spec, size = _image_input(model, pre, "an image folder")
    n = len(images)

    def take(lo: int, hi: int) -> dict[str, np.ndarray]:
        arrays = [load_image(p, pre, size) for p in images[lo:hi]]
        if len({a.shape for a in arrays}) > 1:
            raise DataError(f"images in '{folder}' have different sizes after preprocessing; set 'resize' and "
                            "'crop' in --preprocess.")
        return {spec.name: np.concatenate(arrays, axis=0)}

    fp = [str(folder), file_sha256(*images), pre.to_json()]
    origin = (str(folder), "images", {"preprocess": pre.to_json()})
    return _finish(model, n, take, origin, fp, limit, names=[p.name for p in images])


def data_file(path: str | Path) -> Path:
    """The file or folder a data argument names (without a ``:name=array`` selection)."""
    text = str(path)
    if not Path(text).exists() and ".npz:" in text:
        return Path(text.rpartition(":")[0])
    return Path(text)


def load_dataset(model: LoadedModel, path: str | Path, preprocess: Preprocess | None = None,
                 limit: int | None = None) -> Dataset:
    """Data from a .npz/.npy file, a folder of them, or a folder of images (with ``preprocess``).

    ``FILE.npz:input=x_train,labels=y_train`` takes the named arrays of one .npz for each input (and labels)."""
    if data_file(path) != Path(str(path)):
        return _selected_npz(model, data_file(path), str(path).rpartition(":")[2], limit)
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path '{path}' does not exist.")
    if path.is_file():
        if path.suffix not in (".npz", ".npy"):
            raise DataError(f"'{path}' is not a .npz or .npy file, nor a folder of them or of images.")
        arrays = _array_files(model, [path], f"'{path}'")
        return _from_arrays(model, arrays, f"'{path}'", path.suffix[1:], file_sha256(path), limit)
    files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy") and p.is_file())
    images = list_images(path)
    if files and images:
        raise DataError(f"folder '{path}' mixes array files and images; keep one kind per folder.")
    if images:
        return _image_dataset(model, path, images, preprocess or Preprocess(), limit)
    if not files:
        raise DataError(f"folder '{path}' holds no .npz, .npy or image files.")
    arrays = _array_files(model, files, f"folder '{path}'")
    return _from_arrays(model, arrays, f"folder '{path}'", "folder", file_sha256(*files), limit)


def _selected_npz(model: LoadedModel, path: Path, spec: str, limit: int | None) -> Dataset:
    if not path.is_file():
        raise DataError(f"data path '{path}' does not exist.")
    pairs = [p.partition("=") for p in spec.split(",") if p]
    if not pairs or any(not k or not eq or not v for k, eq, v in pairs):
        raise DataError(f"cannot read '{spec}' as arrays to take from '{path}'; write NAME=ARRAY[,NAME=ARRAY], "
                        f"e.g. '{path}:{model.inputs[0].name}=x_train,labels=y_train'.")
    loaded = _load_npz(path)
    unknown = [v for _, _, v in pairs if v not in loaded]
    if unknown:
        raise DataError(f"'{path}' has no array '{unknown[0]}' (it has: {', '.join(sorted(loaded))}).")
    arrays = {k: loaded[v] for k, _, v in pairs}
    source = f"'{path}:{spec}'"
    inputs = sorted(f"{k}={v}" for k, _, v in pairs if k != LABELS)  # labels don't make other data
    return _from_arrays(model, arrays, source, "npz", [file_sha256(path), inputs], limit)


def generated_dataset(model: LoadedModel, samples: int | None = None, seed: int = 0,
                      preprocess: Preprocess | None = None, images: str = PINK_NOISE) -> Dataset:
    """Synthetic samples from the input metadata: floats ~ N(0,1), integer indices inside their table,
    other integers in {0, 1}, booleans fair coins; with ``preprocess`` (a model with one image input),
    ``images`` (pink-noise or dead-leaves) drawn in pixel space and preprocessed as photos would be
    (``data.generate``). Per-sample seeding keeps data independent of batch size."""
    n = DEFAULT_GENERATED_SAMPLES if samples is None else samples
    if preprocess is not None:
        return _generated_images(model, n, seed, preprocess, images)
    # A symbolic dim shared with a batch axis ('batch' in input [batch,576] and state [2,batch,128]) is the
    # per-sample batch size too.
    per_sample = {s.shape[0]: 1 for s in model.inputs if s.batch_axis == 0 and isinstance(s.shape[0], str)}
    # An unnamed dynamic dim of an input whose first axis is fixed (Silero's state [2, ?, 128]) follows the
    # batch the other inputs carry: one per sample.
    batched = any(s.batch_axis == 0 for s in model.inputs)
    plans, assumed = [], []
    for spec in model.inputs:
        unnamed = [k for k, d in enumerate(spec.shape) if d is None and k != spec.batch_axis]
        follows = batched and spec.batch_axis is None and len(unnamed) == 1
        if follows:
            assumed.append(f"{spec.name} axis {unnamed[0]}")
        dims = [1 if k == spec.batch_axis or (follows and k in unnamed) else per_sample.get(d, d)
                if isinstance(d, str) else d for k, d in enumerate(spec.shape)]
        dynamic = [k for k, d in enumerate(dims) if not isinstance(d, int)]
        if dynamic:
            example = "x".join(str(d) if isinstance(d, int) else "?" for d in dims)
            raise DataError(
                f"cannot generate data for input '{spec.name}' ({spec.describe()}): axes {dynamic} are dynamic; "
                f"pass --shape {spec.name}:{example.replace('?', 'N')} with sizes for N, or give --calib data."
            )
        high = index_bound(model.proto, spec.name) if np.issubdtype(spec.dtype, np.integer) else None
        plans.append((spec, tuple(dims), high))

    def one(i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, i])
        out = {}
        for spec, dims, high in plans:
            if np.issubdtype(spec.dtype, np.floating):
                out[spec.name] = rng.standard_normal(dims).astype(spec.dtype)
            elif is_mask(spec):
                out[spec.name] = padding_mask(rng, dims, spec.dtype)
            elif spec.dtype == np.bool_:
                out[spec.name] = rng.random(dims) < 0.5
            else:
                out[spec.name] = rng.integers(0, high if high else 2, size=dims).astype(spec.dtype)
        return out

    def take(lo: int, hi: int) -> dict[str, np.ndarray]:
        parts = [one(i) for i in range(lo, hi)]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    details = {"seed": seed,
               "distribution": "float ~ N(0,1); integer indices uniform in [0, table size); masks: ones then padding; "
                               "other integers in {0,1}"}
    if assumed:
        details["assumed"] = f"unnamed dynamic dims taken as one sample's batch: {', '.join(assumed)}"
    fp = ["generated", seed, [(s.name, str(s.dtype), list(d), h) for s, d, h in plans]]
    return _finish(model, n, take, ("generated", "generated", details), fp, None)
