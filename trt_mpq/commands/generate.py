"""``trt-mpq generate``: calibration data made without a dataset, written to a .npz for reuse (``--calib FILE``)."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.datasets import DEFAULT_GENERATED_SAMPLES, GENERATOR
from ..data.generate import DEAD_LEAVES, GENERATED, NOISE, PINK_AND_LEAVES, PINK_NOISE, SYNTHESIZED
from ..errors import ConfigError
from ..files import atomic_write_bytes
from ..network.model import load_model
from ..progress import Progress
from .analyze import AnalyzeOptions, Shapes, calibration_data, shapes_of

METHODS = (GENERATED, NOISE, PINK_AND_LEAVES, PINK_NOISE, DEAD_LEAVES, SYNTHESIZED)


@dataclass(frozen=True)
class GenerateOptions:
    method: str | None = None  # noise (shaped like the inputs), an image kind (data.generate), synthesized; None or
    # generated: the one an analysis without data uses, chosen by what the model offers (``generator_for``)
    samples: int = DEFAULT_GENERATED_SAMPLES
    seed: int = 0
    preprocess: str | None = None  # the model's image preprocessing (image kinds, synthesized)
    shapes: Shapes = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method is None:
            object.__setattr__(self, "method", GENERATED)
        if self.method not in METHODS:
            raise ConfigError(f"--method '{self.method}' is not one of {', '.join(METHODS)}.")
        if self.samples < 1:
            raise ConfigError("--samples must be at least 1.")


def generate(model: str | Path, out: str | Path, options: GenerateOptions = GenerateOptions(),
             progress: Progress | None = None) -> dict:
    """Write ``options.samples`` generated samples to ``out`` (.npz, one array per input; written whole or not
    at all) and return what the data is (the record an analysis of it would keep). A synthesis keeps its
    finished batches beside ``out`` until it is written, so running the same command again after an
    interruption resumes."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out '{out}' must name a .npz file.")
    if not out.parent.is_dir():
        raise ConfigError(f"the folder of --out '{out}' does not exist.")
    loaded = load_model(model, shapes_of(options.shapes))
    analyze = AnalyzeOptions(calib=options.method, preprocess=options.preprocess, shapes=options.shapes,
                             samples=options.samples, seed=options.seed)
    parts = out.parent / f".{out.name}.parts"  # finished batches of a long synthesis: a rerun resumes there
    data = calibration_data(loaded, analyze, progress, work=parts)
    arrays = data.take(0, data.num_samples)
    record = {"method": options.method, "samples": data.num_samples, **data.details}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{GENERATOR: np.array(json.dumps(record, default=str))})
    atomic_write_bytes(out, buffer.getvalue())
    shutil.rmtree(parts, ignore_errors=True)
    return record
