"""``run``: the whole job in one call: analyze, plan (verified on held-out data), and on a backend that builds
engines, the engine with its planned-vs-realised check. Finished work is resumed, not repeated."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..artifacts import Analysis, BuildResult, PlanReport
from ..backends import backend_class
from ..data.datasets import data_file
from ..errors import DataError
from ..progress import Progress
from .analyze import AnalyzeOptions, analyze
from .build import BuildOptions, build
from .plan import PlanOptions, plan


@dataclass(frozen=True)
class RunResult:
    analysis: Analysis
    report: PlanReport
    build: BuildResult | None = None  # when the analysis ran on a backend that builds engines


def run(model: str | Path, out: str | Path, analyze_options: AnalyzeOptions, plan_options: PlanOptions,
        progress: Progress | None = None, typing: str = "strong") -> RunResult:
    """Analyse ``model`` into ``out``, plan the fastest mix that meets ``plan_options.budget`` on the evaluation
    data, and build the engine where the backend can (then check what it realised); ``typing``: how that
    engine is built (strong, or weak for TensorRT 10.x, see ``BuildOptions``)."""
    progress = progress or Progress()
    if plan_options.workers is None and plan_options.ray_address is None:  # one cluster setting for both stages
        plan_options = replace(plan_options, workers=analyze_options.workers,
                               ray_address=analyze_options.ray_address)
    if plan_options.jobs is None:
        plan_options = replace(plan_options, jobs=analyze_options.jobs)
    build_options = BuildOptions(typing=typing)  # checked now, not after the long analysis
    if not data_file(plan_options.eval).exists():  # bad plan inputs fail before the long analysis, not after it
        raise DataError(f"evaluation data '{plan_options.eval}' does not exist.")
    analysis = analyze(model, out, analyze_options, progress)
    progress.stop()
    report = plan(out, plan_options, progress)
    engine = None
    if backend_class(analysis.backend.name).capabilities.builds_engines:
        engine = build(out, replace(build_options, backend=analysis.backend.name), progress)
    return RunResult(analysis, report, engine)
