"""``plan``: from a finished analysis to a verified mixed-precision model and its artifacts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx

from ..artifacts import Analysis, Budget, DataInfo, Outcome, PlanReport
from ..backends import Backend, BackendContext, restore_backend
from ..backends.trt_layers import ImportedLatency, attribute, read_layer_nodes, read_profile
from ..data.datasets import load_dataset
from ..data.images import Preprocess, list_images, load_preprocess, parse_preprocess
from ..errors import ConfigError
from ..executors import jobs_for, open_executor
from ..files import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..measure.task_metric import TASK_METRICS, Fanout, TaskMetric, load_metric_fn
from ..network.measured import cut
from ..network.model import LoadedModel
from ..network.weights import split_weights
from ..precision import Plan, Precision, precision_files
from ..progress import Progress
from ..quant.lower import lower, trt_rule_violations
from ..report.html import render
from ..report.summary import plan_report
from ..search.cost import CostModel, Gpu, cost_model, gpu
from ..search.planning import choose, compare_shipped
from ..search.proof import Mixes, Proof
from ..search.space import DecisionSpace
from .opened import OpenedAnalysis, open_analysis
from .trtexec import trtexec_text

PrecisionFiles = Mapping[Precision, Path]


@dataclass(frozen=True)
class PlanOptions:
    """What ``plan`` verifies on and what it must meet. Validated (and string forms parsed) on construction."""

    eval: str  # held-out evaluation data, the same forms as calibration data
    preprocess: str | None = None
    metric: TaskMetric = TaskMetric.AGREEMENT
    metric_fn: str | None = None  # package.module:function, fn(outputs, labels) -> float (runs the user's code)
    budget: Budget = Budget()  # checked: give an accuracy or a latency budget
    target: str = "t4"  # GPU of the latency cost model
    latency_batch: int = 1  # samples per inference in deployment, for the latency
    batch: int = 8  # evaluation batch
    pareto: bool = False
    latency_from: PrecisionFiles = field(default_factory=dict)  # trtexec --exportProfile per all-PREC build
    layer_info: PrecisionFiles = field(default_factory=dict)  # trtexec --exportLayerInfo of the same builds
    measure_latency: bool = False  # profile per node on the backend in use (always on where it is the target)
    backend: str | None = None  # None: the backend the analysis measured with
    replicas: int = 4  # jittered copies of the confirm part each confirmed mix must also pass (0: none)
    confidence: float | None = None  # meet the budget at this one-sided confidence (None: at the worst replica)
    workers: int | None = None  # score mixes on a local Ray cluster of that many workers; None: this process
    ray_address: str | None = None  # or on a running Ray cluster ("auto": the local one); RAY_ADDRESS works too
    jobs: int | None = None  # in this process, batches of a mix that many at a time; None: as many as cores

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.metric not in TASK_METRICS:
            raise ConfigError(f"--metric '{self.metric}' is not one of {', '.join(TASK_METRICS)}.")
        set_(self, "metric", TaskMetric(self.metric))
        set_(self, "latency_from", precision_files(self.latency_from, "--latency-from"))
        set_(self, "layer_info", precision_files(self.layer_info, "--layer-info"))
        self.budget.check()
        gpu(self.target)
        if self.latency_from and self.measure_latency:
            raise ConfigError("give --latency-from (a GPU run) or --measure-latency (this backend), not both.")
        for name in ("latency_batch", "batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1.")
        if self.replicas < 0:
            raise ConfigError(f"--replicas must be zero or more, not {self.replicas}.")
        if self.workers is not None and self.workers < 1:
            raise ConfigError("--workers must be at least 1.")
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError("--jobs must be at least 1.")
        if self.jobs is not None and (self.workers is not None or self.ray_address):
            raise ConfigError("give --jobs (in this process) or --workers/--ray-address (on Ray), not both.")
        if self.confidence is not None and not 0 < self.confidence < 1:
            raise ConfigError(f"--confidence must be between 0 and 1 (e.g. 0.9), not {self.confidence}.")


def plan(run_dir: str | Path, options: PlanOptions, progress: Progress | None = None) -> PlanReport:
    """Search the fastest mix that meets the budget, proven on the evaluation data; write plan.json,
    report.json, report.html, model.mixed.onnx and trtexec.txt into ``run_dir`` (a finished analysis). Mixes
    are scored here, or on a Ray cluster (``options.workers`` / ``ray_address``) with the same results."""
    with contextlib.ExitStack() as closing:  # the executor, once the backend it serves is known
        return _plan(run_dir, options, progress or Progress(), closing)


def _plan(run_dir: str | Path, options: PlanOptions, progress: Progress, closing: contextlib.ExitStack
          ) -> PlanReport:
    start = time.perf_counter()
    opened = open_analysis(run_dir)
    analysis, model, units = opened.analysis, opened.model, opened.units
    _say_what_the_target_cannot_run(analysis, gpu(options.target), progress)
    data = load_dataset(model, options.eval, _preprocess(options, analysis.calibration.data, progress))
    if data.fingerprint == analysis.calibration.data.fingerprint:
        raise ConfigError("the evaluation data is the calibration data; verify on held-out samples the analysis "
                          "did not see (the point is to prove the mix on data it was not tuned on).")
    metric_fn = load_metric_fn(options.metric_fn) if options.metric_fn else None
    context = BackendContext(opened.folder.root, max(options.batch, options.latency_batch), final=True)
    chosen = restore_backend(analysis.backend, options.backend, context)
    threads = chosen.backend.threads_given()  # the analysis's, when its jobs ran side by side
    jobs = jobs_for(options.jobs, chosen.backend.capabilities.gpu, threads)
    executor = closing.enter_context(open_executor(options.workers, options.ray_address, jobs, threads))
    backend = chosen.backend.with_threads(executor.threads) if executor.threads else chosen.backend
    skeleton, weights = split_weights(model.proto)  # every mix compiled shares one copy of the weights
    mixes = Mixes(skeleton, tuple(units), opened.ranges, weights)
    proof = Proof(data, backend, options.metric, options.batch, metric_fn, options.replicas, options.confidence,
                  mixes, Fanout(executor, backend, weights))
    fp32_score, fp32_confirm = proof.fp32_score, proof.fp32_confirm
    progress.log(f"verifying on: {backend.describe()}{chosen.log_line(options.backend or '')}")
    if executor.workers > 1 or options.workers or options.ray_address:
        progress.log(f"mixes are scored {executor.where}")
    progress.log(f"FP32 {proof.name} on {data.num_samples} evaluation samples: {fp32_score:.4f}")
    allowed = options.budget.allowed_drop(fp32_confirm)
    for line in proof.limits(allowed):
        progress.log(line)
    cost = latency_model(opened, options, backend, data, progress)
    space = DecisionSpace.from_analysis(analysis, cost)
    choice = choose(space, options.budget, proof, allowed, options.pareto, progress.log)
    result = choice.result
    if result.outcome is Outcome.FP32_FASTEST and not cost.measured:
        result = replace(result, message=result.message + (
            f" (at batch {options.latency_batch} the quantize/reformat kernels are estimated to cost more than "
            "lowering saves on this model; --latency-batch sets the deployment batch)"))
    confirmation, front = choice.confirmation, list(choice.front)
    compared = compare_shipped(_shipped_file(model), model.shipped, units, space, proof, result.plan,
                               result.score) if model.shipped else ()
    # measured on part of the graph (before a plugin, at --outputs): the mix is written on the whole of it
    mixed = lower(model.whole, units, result.plan, opened.ranges) if model.whole else \
        weights.fill(mixes.model(result.plan))
    problems = trt_rule_violations(mixed)
    if problems:  # a bug in the lowering, never the user's input
        raise RuntimeError(f"the lowered mix breaks TensorRT's Q/DQ rules: {problems[0]}")
    report = plan_report(analysis, data.record(), proof.name, options.budget, result, space,
                         backend.describe(), time.perf_counter() - start, front, fp32_score, confirmation, compared)
    folder = opened.folder
    atomic_write_bytes(folder.mixed_onnx, mixed.SerializeToString())
    kept = {u: p for u, p in result.plan.items()  # what Q/DQ (and TF32's marks) carry
            if p.quantized or p in (Precision.INT4, Precision.TF32)}
    weak = lower(model.whole or model.proto, units, Plan.of(kept),
                 opened.ranges)  # TensorRT 10 weak typing: Q/DQ stay, FP16 is pinned per layer instead of cast
    atomic_write_bytes(folder.weak_onnx, weak.SerializeToString())
    atomic_write_text(folder.trtexec, trtexec_text(folder.mixed_onnx.name, folder.weak_onnx.name, model.inputs,
                                                   data.take(0, 1), options.latency_batch, units, result.plan,
                                                   space.tf32(result.plan)))
    atomic_write_json(folder.report_json, report.to_json())
    atomic_write_json(folder.plan, report.plan_json())
    atomic_write_text(folder.report_html, render(report, analysis, samples_png=folder.calibration_strip()))
    return report


def _shipped_file(model: LoadedModel) -> onnx.ModelProto:
    """The already-quantized file as it is, measured where the analysis measured (``--outputs``, a plugin)."""
    file = onnx.load(str(model.path))
    return cut(file, model.measured, model.tensors) if model.measured else file


def _say_what_the_target_cannot_run(analysis: Analysis, target: Gpu, progress: Progress) -> None:
    """Once in the log: the analysed precisions the target GPU lacks; an error when it runs none of them."""
    lacking = [p for p in analysis.precisions if not target.runs(p)]
    if not lacking:
        return
    names = ", ".join(p.value.upper() for p in lacking)
    if len(lacking) == len(analysis.precisions):
        raise ConfigError(f"the analysis measured only {names}, which the {target.name} cannot run; analyse with "
                          "--precisions int8,fp16 (or plan for a GPU that runs them, e.g. --target h100).")
    progress.log(f"the {target.name} cannot run {names}: the plan does not use {'them' if len(lacking) > 1 else 'it'}")


def _preprocess(options: PlanOptions, calibration: DataInfo, progress: Progress) -> Preprocess:
    """--preprocess, or else the analysis's own for image folders: the same pipeline the ranges were taken with."""
    images = Path(options.eval).is_dir() and list_images(Path(options.eval))
    recorded = "preprocess" in calibration.details  # an image folder's, or generated images' (pink-noise, ...)
    if options.preprocess is not None or not images or not recorded:
        return load_preprocess(options.preprocess)
    progress.log("preprocessing the evaluation images as the analysis did its calibration images "
                 "(sensitivity.json); pass --preprocess to use another")
    return parse_preprocess(dict(calibration.details["preprocess"]), "the analysis's recorded preprocessing")


def latency_model(opened: OpenedAnalysis, options: PlanOptions, backend: Backend, data,
                  progress: Progress) -> CostModel:
    """The cost model at the deployment batch, with measured unit times where there are some: imported from
    trtexec profiles, or profiled on the backend (always where its latencies are the deployment's)."""
    model, units = opened.model, opened.units
    cost = cost_model(model.proto, units, options.target, options.latency_batch, model.tensors,
                      opened.ranges.shapes)
    if not (options.latency_from or options.measure_latency or backend.capabilities.latency_is_deployment):
        return cost
    order = [n.name for n in model.proto.graph.node]
    if options.latency_from:
        imported = import_latency(options.latency_from, options.layer_info, units, order)
        cost = cost.with_measured(_seconds(imported), "trtexec profiles")
    else:
        imported = profile_latency(opened, backend, data, options.latency_batch, order, gpu(options.target))
        cost = cost.with_measured(_seconds(imported), f"{backend.describe()} profiling, batch "
                                  f"{options.latency_batch}", backend.capabilities.device)
    for p, ms in imported.unattributed_ms.items():
        progress.log(f"{p.value}: {ms:.3f} of {imported.total_ms[p]:.3f} ms measured outside any unit")
    return cost


def _seconds(imported: ImportedLatency) -> dict[tuple[str, Precision], float]:
    return {k: ms / 1e3 for k, ms in imported.ms.items()}


def profile_latency(opened: OpenedAnalysis, backend: Backend, data, batch: int,
                    node_order: list[str], target: Gpu) -> ImportedLatency:
    """Per-unit times of the all-FP32 model and of each analysed precision's uniform one, profiled node by node
    on the backend. On a CPU this measures the emulation, not a GPU: it is labelled with the backend."""
    feeds = data.take(0, data.effective_batch(batch))
    profiles, nodes = {}, {}
    for p in (Precision.FP32, *(q for q in opened.analysis.precisions if target.runs(q))):
        uniform = Plan.of({u.name: p for u in opened.units if p in u.allowed or p is Precision.FP32})
        measured = backend.profile(lower(opened.model.proto, opened.units, uniform, opened.ranges), feeds)
        profiles[p], nodes[p] = measured.ms, measured.nodes
    return attribute(profiles, nodes, opened.units, node_order)


def import_latency(profiles: PrecisionFiles, layer_info: PrecisionFiles, units: Iterable,
                   node_order: list[str]) -> ImportedLatency:
    """Per-unit times from trtexec's --exportProfile files (and --exportLayerInfo, to map layers exactly)."""
    return attribute({p: read_profile(f) for p, f in profiles.items()},
                     {p: read_layer_nodes(f) for p, f in layer_info.items()}, units, node_order)
