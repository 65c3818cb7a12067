"""``inspect`` and ``analyze``: a model's units, and every unit's sensitivity to each lower precision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..artifacts import Analysis, RunFolder
from ..backends import Backend, BackendContext, open_backend
from ..data.datasets import DEFAULT_GENERATED_SAMPLES, Dataset, generated_dataset, load_dataset
from ..data.generate import GENERATED, IMAGES, NOISE, PINK_AND_LEAVES, SYNTHESIZED
from ..data.images import load_preprocess
from ..data.thumbnails import thumbnails
from ..errors import ConfigError, DataError
from ..executors import jobs_for, open_executor
from ..files import atomic_write_bytes
from ..measure import sensitivity
from ..measure.sensitivity import FLOAT_SAMPLES
from ..network.measured import measured_at, measured_model
from ..network.model import LoadedModel, load_model, parse_shapes
from ..network.specialise import parse_fixed
from ..network.units import UnitTable, find_units
from ..precision import Precision, needs_opset
from ..progress import Progress
from ..quant.ranges import INT4_BLOCK, WEIGHT_SCALES, check_calibrator

Shapes = Mapping[str, tuple[int, ...]]


def shapes_of(shapes: Shapes | Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``{"x": (1, 3, 640, 640)}``, or the trtexec strings ``["x:1x3x640x640"]`` parsed into it."""
    if isinstance(shapes, Mapping):
        return {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    return parse_shapes(list(shapes))


@dataclass(frozen=True)
class AnalyzeOptions:
    """What ``analyze`` measures on. Validated (and string forms parsed) on construction."""

    calib: str | None = None  # .npz/.npy file or folder, image folder, FILE.npz:input=x; a generator's name; None
    # (or "generated"): generated data, the generator chosen by what the model offers (``generator_for``)
    preprocess: str | None = None  # JSON/YAML preprocessing for image folders
    shapes: Shapes = field(default_factory=dict)  # fixed sizes of dynamic input dims (or "NAME:1x3x224x224")
    fixed: Mapping[str, object] | Sequence[str] = field(default_factory=dict)  # input values ("sr=16000")
    outputs: Sequence[str] | str | None = None  # tensors to measure at (or "a,b"); None: the model's outputs
    precisions: tuple[Precision, ...] = (Precision.INT8, Precision.FP16)  # (or "int8,fp16")
    calibrator: str = "auto"  # max, percentile, entropy, mse, or auto: per unit, the one it measures best with
    weight_scales: str = "mse"  # INT8 weight scales: max, or mse (each channel clipped where its error is least)
    bias_correction: bool = True  # INT8 weight units: fold the mean shift of the quantized weight into the bias
    int4_block: int = INT4_BLOCK  # INT4 weights per scale along K
    backend: str = "auto"  # a registry name or auto
    backend_options: tuple[object, ...] = ()  # backends' options objects; each backend takes its own type
    samples: int | None = None
    float_samples: int | str = "auto"  # FP16/BF16/TF32 measured on: auto (a spread quarter, >= 16 or 8), all, or N
    batch: int = 8
    seed: int = 0
    workers: int | None = None  # a local Ray cluster of that many single-threaded workers; None: this process
    ray_address: str | None = None  # or a running Ray cluster ("auto": the local one); RAY_ADDRESS works too
    jobs: int | None = None  # in this process, that many jobs at a time; None: as many as cores (``jobs_for``)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the accepted forms once, here
        if self.calib in IMAGES and not self.preprocess:
            raise ConfigError(f"--calib {self.calib} draws images in pixel space; give --preprocess with the "
                              "model's resize and normalisation.")
        if self.calib == NOISE and self.preprocess:
            raise ConfigError(f"--calib {NOISE} is noise shaped like the inputs and takes no --preprocess; "
                              f"leave --calib out (or give --calib {PINK_AND_LEAVES}) to generate images with it.")
        if self.calib == GENERATED:
            set_(self, "calib", None)
        set_(self, "shapes", shapes_of(self.shapes))
        items = self.fixed.items() if isinstance(self.fixed, Mapping) else self.fixed
        set_(self, "fixed", {k: v.tolist() for k, v in parse_fixed(items).items()})
        names = self.outputs.split(",") if isinstance(self.outputs, str) else self.outputs or ()
        set_(self, "outputs", tuple(n.strip() for n in names if n.strip()) or None)
        if isinstance(self.precisions, str):
            set_(self, "precisions", Precision.parse_list(self.precisions))
        set_(self, "precisions", tuple(Precision(p) for p in self.precisions))
        check_calibrator(self.calibrator)
        if self.weight_scales not in WEIGHT_SCALES:
            raise ConfigError(f"--weight-scales '{self.weight_scales}' is not one of {', '.join(WEIGHT_SCALES)}.")
        set_(self, "float_samples", _float_samples(self.float_samples))
        if self.samples is not None and self.samples < 1:
            raise ConfigError("--samples must be at least 1.")
        if self.batch < 1:
            raise ConfigError("--batch must be at least 1.")
        if self.workers is not None and self.workers < 1:
            raise ConfigError("--workers must be at least 1.")
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError("--jobs must be at least 1.")
        if self.jobs is not None and (self.workers is not None or self.ray_address):
            raise ConfigError("give --jobs (in this process) or --workers/--ray-address (on Ray), not both.")
        if self.int4_block < 16 or self.int4_block & (self.int4_block - 1):
            raise ConfigError(f"--int4-block must be a power of two of at least 16 (e.g. 128), not {self.int4_block}.")


def _float_samples(value: int | str) -> int | str:
    text = str(value).strip().lower()
    if text in FLOAT_SAMPLES:
        return text
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--float-samples '{value}' is not auto, all or a number of samples (at least 1).")
    return int(text)


def inspect_model(model: str | Path, shapes: Shapes | Sequence[str] = (), fixed: Sequence[str] = ()
                  ) -> tuple[LoadedModel, UnitTable]:
    """Load and normalise ``model``; return it with its units and the layers skipped (and why)."""
    loaded = load_model(model, shapes_of(shapes), parse_fixed(fixed))
    return loaded, find_units(loaded.proto, loaded.tensors)


def fp32_outputs(backend: Backend, model: LoadedModel):
    """feeds -> the model's outputs on ``backend``, in graph order (what a generator's model copy must match)."""
    def run(feeds):
        with backend.compile(model.proto) as session:
            got = session.run(feeds)
        return [got[o.name] for o in model.proto.graph.output]
    return run


def calibration_data(model: LoadedModel, opts: AnalyzeOptions, progress: Progress | None = None,
                     backend: Backend | None = None, work: Path | None = None) -> Dataset:
    """The calibration data ``opts.calib`` names: generated (noise, pink-noise or dead-leaves images, synthesized:
    ``backend`` checks the model's gradient copy; ``work`` keeps its finished batches, so a run resumes) or
    read. Without ``opts.calib`` the generator is ``generator_for`` the model, and the record says why."""
    if opts.calib is None:
        method, why = generator_for(model, opts.preprocess)
        data = calibration_data(model, replace(opts, calib=method), progress, backend, work)
        return replace(data, details={**data.details, "method": method, "chosen": why})
    if opts.calib == NOISE:
        return generated_dataset(model, opts.samples, opts.seed)
    if opts.calib in IMAGES:  # images drawn in pixel space, preprocessed as photos (data.generate)
        return generated_dataset(model, opts.samples, opts.seed, load_preprocess(opts.preprocess), opts.calib)
    if opts.calib == SYNTHESIZED:  # optimised through the model (data.synthesis, trt-mpq[datagen])
        from ..data.synthesis import synthesized_dataset

        pre = load_preprocess(opts.preprocess) if opts.preprocess else None
        backend = backend or open_backend(opts.backend, opts.backend_options).backend
        return synthesized_dataset(model, opts.samples or DEFAULT_GENERATED_SAMPLES, opts.seed, pre,
                                   fp32_outputs(backend, model), progress, work=work)
    return load_dataset(model, opts.calib, load_preprocess(opts.preprocess), opts.samples)


def _synthesizable(model: LoadedModel) -> bool:
    """One float input of fixed sizes: what the synthesizer optimises."""
    from ..data.synthesis import input_dims

    try:
        input_dims(model, "")
    except DataError:
        return False
    return True


def generator_for(model: LoadedModel, preprocess: str | None) -> tuple[str, str]:
    """The generator of ``--calib generated`` (the default without data) for ``model``, and why, in words: what
    the model offers decides (docs/results.md, issue 22). BatchNorm statistics kept in the graph: data
    optimised to match them (PP-OCRv4: Spearman 0.960 against the real images' ranking, noise 0.913), when
    trt-mpq[datagen] is installed and the input is one float tensor of fixed size; else, with ``preprocess``,
    pink-noise and textured dead-leaves images in turns (MobileNetV2 over 20 seeds: Spearman 0.970, all-INT8
    agreement 0.869 against the photos' 0.885, where pink noise alone gives 0.970 and 0.864; optimising pink
    noise toward random classes adds nothing measurable, for 20 s and PyTorch); else
    noise shaped like the inputs."""
    from ..data.autograd import torch_available
    from ..data.synthesis import bn_targets

    kept = len(bn_targets(model.proto))
    if kept and _synthesizable(model) and torch_available():
        return SYNTHESIZED, f"the model keeps {kept} BatchNormalization layer{'s' if kept > 1 else ''}"
    if preprocess:
        return PINK_AND_LEAVES, "--preprocess says how images reach the model"
    return NOISE, "nothing in the model or the options says more"


def generator_hints(model: LoadedModel, method: str) -> list[str]:
    """For data generated without the model's help (``method``): the generator that would serve this model
    better, and what it needs (docs/results.md, issue 22)."""
    if method != NOISE and method not in IMAGES:
        return []
    from ..data.autograd import torch_available
    from ..data.synthesis import bn_targets  # no PyTorch at import: its converter loads when it is used

    hints = []
    specs = model.inputs
    if method == NOISE and len(specs) == 1 and len(specs[0].shape) == 4 and \
            np.issubdtype(specs[0].dtype, np.floating):
        hints.append("the calibration data is noise shaped like the input; for an image model, --preprocess FILE "
                     "(its resize and normalisation) generates images instead (pink noise and textured dead "
                     "leaves), which rank MobileNetV2's units as photos do (Spearman 0.97, noise 0.84)")
    kept = bn_targets(model.proto)
    if kept:
        needs = [] if torch_available() else ["pip install 'trt-mpq[datagen]'"]
        if not _synthesizable(model):
            needs.append("fixed input sizes (--shape)")
        how = f" (needs {' and '.join(needs)})" if needs else ""
        hints.append(f"this model keeps {len(kept)} BatchNormalization layer{'s' if len(kept) > 1 else ''}: --calib "
                     f"{SYNTHESIZED}{how} generates data matching their statistics (PP-OCRv4: Spearman 0.960 "
                     "against noise's 0.913)")
    return hints


def analyze(model: str | Path, out: str | Path, options: AnalyzeOptions = AnalyzeOptions(),
            progress: Progress | None = None) -> Analysis:
    """Measure every unit's sensitivity to each precision in ``options`` on the calibration data; write the
    analysis (sensitivity.json, ranges.json) into ``out``. Re-running after an interruption resumes."""
    progress = progress or Progress()
    folder = RunFolder(out)
    folder.check_writable()
    context = BackendContext(folder.root, options.batch, final=False)
    chosen = open_backend(options.backend, options.backend_options, context)
    loaded = load_model(model, dict(options.shapes), dict(options.fixed), needs_opset(options.precisions))
    at = measured_at(loaded.proto, options.outputs, chosen.backend.runs_op, chosen.backend.name)
    if at is not None:
        loaded = measured_model(loaded, at.outputs, at.note())
    data = calibration_data(loaded, options, progress, chosen.backend, folder.work)
    for note in loaded.notes:
        progress.log(f"model: {note}")
    if Precision.TF32 in options.precisions and not chosen.backend.capabilities.tf32_per_unit:
        raise ConfigError("TensorRT turns TF32 on for a whole engine, so it cannot measure one unit in TF32; "
                          "analyse tf32 with --backend onnxruntime (its emulation), or leave tf32 out.")
    progress.log(f"backend: {chosen.backend.describe()}{chosen.log_line(options.backend)}")
    if not chosen.backend.capabilities.exact_regions:
        progress.log("each unit is measured on the part of the model downstream of it, which this backend "
                     "does not promise to compute bit-for-bit as the whole model would: figures are close, "
                     "not identical, to whole-model runs")
    how = f" ({data.details['generator']})" if "generator" in data.details else ""
    why = f"; {data.details['method']}, chosen because {data.details['chosen']}" if "chosen" in data.details else ""
    progress.log(f"calibration: {data.source}{how}, {data.num_samples} samples{why}")
    for hint in generator_hints(loaded, data.details.get("method", options.calib)):
        progress.log(hint)
    strip = thumbnails(data) if data.kind == "generated" else None
    if strip is not None:  # what generated data looks like, for report.html
        atomic_write_bytes(folder.calibration_png, strip)
    settings = sensitivity.Settings(options.precisions, options.calibrator, options.batch, options.weight_scales,
                                    options.bias_correction, options.int4_block, options.float_samples)
    threads = chosen.backend.threads_given()
    jobs = jobs_for(options.jobs, chosen.backend.capabilities.gpu, threads)
    with open_executor(options.workers, options.ray_address, jobs, threads) as executor:
        if executor.workers > 1 or options.workers or options.ray_address:
            progress.log(f"jobs run {executor.where}")
        return sensitivity.analyze(loaded, data, chosen.backend, folder.root, settings, progress,
                                   executor=executor)
