"""``trt-mpq generate``: calibration data made without a dataset, written to a .npz for reuse (``--calib FILE``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.datasets import DEFAULT_GENERATED_SAMPLES, GENERATOR, Dataset
from ..data.generate import DEAD_LEAVES, GENERATED, NOISE, PINK_AND_LEAVES, PINK_NOISE, SYNTHESIZED
from ..errors import ConfigError, DataError
from ..files import atomic_write_npz
from ..network.model import load_model
from ..network.specialise import parse_fixed
from ..progress import Progress
from .analyze import AnalyzeOptions, Shapes, calibration_data, shapes_of

METHODS = (GENERATED, NOISE, PINK_AND_LEAVES, PINK_NOISE, DEAD_LEAVES, SYNTHESIZED)
CHUNK = 32  # samples drawn and written at a time: memory stays one chunk whatever --samples asks


@dataclass(frozen=True)
class GenerateOptions:
    method: str | None = None  # noise (shaped like the inputs), an image kind (data.generate), synthesized; None or
    # generated: the one an analysis without data uses, chosen by what the model offers (``generator_for``)
    samples: int = DEFAULT_GENERATED_SAMPLES
    seed: int = 0
    preprocess: str | None = None  # the model's image preprocessing (image kinds, synthesized)
    shapes: Shapes = field(default_factory=dict)
    fixed: Mapping[str, object] | Sequence[str] = field(default_factory=dict)  # input values, as analyze's --fix:
    # the data is for the specialised model, which has no such input

    def __post_init__(self) -> None:
        items = self.fixed.items() if isinstance(self.fixed, Mapping) else self.fixed
        object.__setattr__(self, "fixed", {k: v.tolist() for k, v in parse_fixed(items).items()})
        if self.method is None:
            object.__setattr__(self, "method", GENERATED)
        if self.method not in METHODS:
            raise ConfigError(f"--method '{self.method}' is not one of {', '.join(METHODS)}.")
        if self.samples < 1:
            raise ConfigError("--samples must be at least 1.")


def generate(model: str | Path, out: str | Path, options: GenerateOptions = GenerateOptions(),
             progress: Progress | None = None) -> dict:
    """Write ``options.samples`` generated samples to ``out`` (.npz, one array per input; drawn and written
    ``CHUNK`` samples at a time, renamed into place whole) and return what the data is (the record an analysis
    of it would keep). A synthesis keeps its finished batches beside ``out`` until it is written, so running
    the same command again after an interruption resumes."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out '{out}' must name a .npz file.")
    if not out.parent.is_dir():
        raise ConfigError(f"the folder of --out '{out}' does not exist.")
    loaded = load_model(model, shapes_of(options.shapes), dict(options.fixed))
    parts = out.parent / f".{out.name}.parts"  # finished batches of a long synthesis: a rerun resumes there
    try:
        analyze = AnalyzeOptions(calib=options.method, preprocess=options.preprocess, shapes=options.shapes,
                                 fixed=options.fixed, samples=options.samples, seed=options.seed)
        data = calibration_data(loaded, analyze, progress, work=parts)
    except (ConfigError, DataError) as e:  # said as analyze's --calib says it; here the option is --method
        raise type(e)(str(e).replace("--calib", "--method")) from None
    record = {"method": options.method, "samples": data.num_samples, **data.details}
    atomic_write_npz(out, _chunks(data, progress or Progress()),
                     {GENERATOR: np.array(json.dumps(record, default=str))})
    shutil.rmtree(parts, ignore_errors=True)
    return record


def _chunks(data: Dataset, progress: Progress) -> Iterator[dict[str, np.ndarray]]:
    """The samples as the .npz holds them: along the first axis where every input has its batch there, else
    one full input per sample (a scalar, a recurrent state [2, batch, 128]), as ``--calib`` reads them back."""
    progress.start("writing samples", data.num_samples)
    for lo in range(0, data.num_samples, CHUNK):
        hi = min(lo + CHUNK, data.num_samples)
        if data.batchable:
            yield data.take(lo, hi)
        else:
            samples = [data.take(i, i + 1) for i in range(lo, hi)]
            yield {k: np.stack([s[k] for s in samples]) for k in samples[0]}
        progress.advance(hi - lo)
    progress.stop()
