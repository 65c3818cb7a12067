"""The library calls behind the command line: one options dataclass per command, one function each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backends import BackendOptions, get_backend
from .data import Dataset, generated_dataset, load_dataset
from .errors import ConfigError
from .images import load_preprocess
from .model import LoadedModel, load_model, parse_shapes
from .plan import Precision
from .ranges import check_calibrator
from .sensitivity import Progress, Settings, analyze
from .units import UnitTable, find_units


@dataclass(frozen=True)
class AnalyzeOptions:
    calib: str | None = None  # .npz/.npy file or folder, or image folder; None: generated data
    preprocess: str | None = None  # JSON/YAML preprocessing for image folders
    shapes: tuple[str, ...] = ()  # NAME:1x3x224x224
    precisions: str = "int8,fp16"
    calibrator: str = "max"
    backend: str = "auto"
    samples: int | None = None
    batch: int = 8
    seed: int = 0
    ort_optimize: str = "none"
    probe_opt_level: int | None = None  # tensorrt: builder optimisation level of the per-unit engines


TIMING_CACHE = "timing.cache"  # one per run folder, shared by every TensorRT build of the run


def chosen(backend, asked: str) -> str:
    """How the backend was chosen, for the log line: ``auto`` says why it skipped the ones before."""
    if asked != "auto":
        return ""
    note = getattr(backend, "auto_note", "")
    return f" (chosen by --backend auto{'; ' + note if note else ''})"


def inspect_model(model_path: str | Path, shapes: tuple[str, ...] = ()) -> tuple[LoadedModel, UnitTable]:
    model = load_model(model_path, parse_shapes(list(shapes)))
    return model, find_units(model.proto)


def calibration_data(model: LoadedModel, opts: AnalyzeOptions) -> Dataset:
    if opts.samples is not None and opts.samples < 1:
        raise ConfigError("--samples must be at least 1.")
    if opts.calib is None:
        if opts.preprocess:
            raise ConfigError("--preprocess applies to an image folder given with --calib.")
        return generated_dataset(model, opts.samples, opts.seed)
    return load_dataset(model, opts.calib, load_preprocess(opts.preprocess), opts.samples)


def analyze_model(model_path: str | Path, out_dir: str | Path, opts: AnalyzeOptions = AnalyzeOptions(),
                  progress: Progress | None = None) -> dict:
    """Load the model and data, measure every unit's sensitivity, write ``out_dir/sensitivity.json``."""
    progress = progress or Progress()
    if opts.batch < 1:
        raise ConfigError("--batch must be at least 1.")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out '{out_dir}' exists and is not a folder.")
    settings = Settings(Precision.parse_list(opts.precisions), check_calibrator(opts.calibrator), opts.batch)
    backend = get_backend(opts.backend, BackendOptions(ort_optimize=opts.ort_optimize, opt_level=opts.probe_opt_level,
                                                       timing_cache=str(out_dir / TIMING_CACHE), max_batch=opts.batch))
    model = load_model(model_path, parse_shapes(list(opts.shapes)))
    data = calibration_data(model, opts)
    progress.log(f"backend: {backend.describe()}{chosen(backend, opts.backend)}")
    progress.log(f"calibration: {data.info['source']}, {data.num_samples} samples")
    return analyze(model, data, backend, out_dir, settings, progress)
