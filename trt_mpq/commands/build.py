"""``build``: the planned mix (DIR/model.mixed.onnx) built into a TensorRT engine, and what it realised.

Writes DIR/model.engine, DIR/layers.json (the engine inspector's layer information), DIR/build.log and
DIR/build.json (planned vs realised per unit), updates DIR/timing.cache (shared with every build of the run)
and renders report.html again with the comparison; the plan's own files are not rewritten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..artifacts import BuildResult, RunFolder, read_json
from ..artifacts.plan import PlanReport
from ..backends import BackendContext, open_backend
from ..errors import ConfigError
from ..files import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..precision import Precision
from ..progress import Progress
from ..report.html import render
from .check import compare
from .opened import read_analysis
from .trtexec import layer_pins

TYPINGS = ("strong", "weak")


@dataclass(frozen=True)
class BuildOptions:
    backend: str = "tensorrt"  # an engine builder: a backend whose ``capabilities.builds_engines`` is true
    backend_options: tuple[object, ...] = ()  # backends' options objects (e.g. the builder optimisation level)
    batch: int | None = None  # largest batch of the engine; None: the plan's deployment batch
    typing: str = "strong"  # strong: model.mixed.onnx as typed; weak (TensorRT 10.x): model.weak.onnx, pinned

    def __post_init__(self) -> None:
        if self.typing not in TYPINGS:
            raise ConfigError(f"--typing must be strong or weak, not '{self.typing}'.")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"--batch must be at least 1, not {self.batch}.")


def weak_pins(report: PlanReport) -> dict[str, Precision]:
    """``layer_pins`` of the planned units."""
    return layer_pins((u.nodes, u.precision) for u in report.units)


def _report(folder: RunFolder) -> PlanReport:
    try:
        return PlanReport.from_json(read_json(folder.report_json, "the plan report"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"'{folder.report_json}' was written by another version of trt-mpq or is damaged "
                          f"({exc}); run 'trt-mpq plan' again.") from None


def build(run_dir: str | Path, options: BuildOptions = BuildOptions(), progress: Progress | None = None
          ) -> BuildResult:
    """Build the planned mix of ``run_dir`` into an engine; return planned vs realised per unit."""
    progress = progress or Progress()
    folder = RunFolder(run_dir)
    if not folder.plan.is_file() or not folder.mixed_onnx.is_file():
        raise ConfigError(f"'{folder.root}' holds no plan.json and model.mixed.onnx; run 'trt-mpq plan' (or run) "
                          "first.")
    report = _report(folder)
    batch = options.batch or report.latency.batch or 1  # plan.json's deployment batch is the report's
    context = BackendContext(folder.root, batch, final=True)
    backend = open_backend(options.backend, options.backend_options, context).backend
    builder = backend.engine_builder()
    source, pins = folder.mixed_onnx, None
    if options.typing == "weak":
        source, pins = folder.weak_onnx, weak_pins(report)
        if not source.is_file():
            raise ConfigError(f"'{folder.root}' holds no model.weak.onnx (plans made before weak typing); run "
                              "'trt-mpq plan' again.")
    progress.log(f"building {source} ({options.typing}ly typed) on {backend.describe()}, batch 1..{batch}")
    start, log = time.perf_counter(), []
    try:
        engine = builder.build_engine(onnx.load(str(source)), log, pins)
    finally:
        atomic_write_text(folder.build_log, "\n".join(log) + "\n")
    elapsed = time.perf_counter() - start
    atomic_write_bytes(folder.engine, builder.serialize(engine))
    layers = builder.inspect(engine)
    atomic_write_json(folder.layers, layers)
    result = BuildResult(f"{folder.engine.name}, {backend.describe()}, built in {elapsed:.1f} s, batch 1..{batch}",
                         tuple(compare(folder.root, layers)))
    atomic_write_json(folder.build, result.to_json())
    atomic_write_text(folder.report_html, render(report, read_analysis(folder.root)[0], result,
                                                      folder.calibration_strip()))
    progress.log(f"wrote {folder.engine}, layers.json, build.log, build.json ({elapsed:.1f} s)")
    return result
