"""``trt-mpq plan``: from a finished analysis to a verified mixed-precision model and its artifacts."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from . import __version__
from .api import TIMING_CACHE, chosen
from .backends import BackendOptions, get_backend
from .data import load_dataset
from .errors import ConfigError
from .evaluate import Evaluator, load_metric_fn
from .images import load_preprocess
from .journal import atomic_write_bytes, atomic_write_json
from .latency import cost_model
from .lower import lower, trt_rule_violations
from .model import load_model
from .plan import Plan, Precision
from .ranges import Ranges
from .report_html import render
from .search import Budget, Options, pareto, search
from .sensitivity import RANGES_FILE, Progress
from .trtexec import attribute, parse_pairs, read_layer_nodes, read_profile, read_realized
from .units import find_units

PLAN_SCHEMA = "trt-mpq/plan/1"
TRTEXEC = """# Build the planned mix with TensorRT (10.x or 11.x). Precision lives in the ONNX (Q/DQ and Cast):
# strongly typed networks honour it exactly (--stronglyTyped is needed on 10.x, a no-op on 11.x).
# --noTF32 keeps the FP32 units in true FP32, as they were verified on the CPU.
trtexec --onnx={onnx} --stronglyTyped --noTF32 --saveEngine=model.engine \\
        --timingCacheFile=timing.cache --profilingVerbosity=detailed \\
        --exportLayerInfo=layers.json --exportProfile=profile.json
"""


@dataclass(frozen=True)
class PlanOptions:
    eval: str
    preprocess: str | None = None
    metric: str = "agreement"
    metric_fn: str | None = None
    budget: Budget = Budget()
    target: str = "t4"
    latency_batch: int = 1  # samples per inference in deployment, for the latency estimate
    batch: int = 8
    pareto: bool = False
    latency_from: tuple[str, ...] = ()  # PRECISION=trtexec --exportProfile file
    layer_info: tuple[str, ...] = ()  # PRECISION=trtexec --exportLayerInfo file
    measure_latency: bool = False  # profile per node on the backend in use (always on for tensorrt)
    backend: str | None = None  # None: the backend the analysis measured with


def load_analysis(run_dir: Path) -> tuple[dict, Ranges]:
    doc_path = run_dir / "sensitivity.json"
    if not doc_path.is_file():
        raise ConfigError(f"'{run_dir}' holds no sensitivity.json; run 'trt-mpq analyze MODEL --out {run_dir}' first.")
    try:
        doc = json.loads(doc_path.read_text())
        ranges = Ranges.from_json(json.loads((run_dir / doc.get("ranges", RANGES_FILE)).read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"the analysis in '{run_dir}' is incomplete or damaged ({exc}); run analyze again.") from None
    return doc, ranges


def plan_from_analysis(run_dir: str | Path, opts: PlanOptions, progress: Progress | None = None) -> dict:
    """Search the fastest mix that meets the budget on the evaluation data; write plan.json,
    model.mixed.onnx, trtexec.txt, report.json and report.html into ``run_dir``."""
    progress = progress or Progress()
    start = time.perf_counter()
    run_dir = Path(run_dir)
    opts.budget.check()
    if opts.latency_from and opts.measure_latency:
        raise ConfigError("give --latency-from (a GPU run) or --measure-latency (this backend), not both.")
    doc, ranges = load_analysis(run_dir)
    shapes = {k: tuple(v) for k, v in doc["model"].get("shapes", {}).items()}
    model = load_model(doc["model"]["path"], shapes)
    if model.sha256 != doc["model"]["sha256"]:
        raise ConfigError(f"'{model.path}' changed since it was analysed (sha256 differs); run analyze again.")
    units = find_units(model.proto).units
    if [u.name for u in units] != [u["name"] for u in doc["units"]]:
        raise ConfigError("the units of the model no longer match the analysis; run analyze again.")
    data = load_dataset(model, opts.eval, load_preprocess(opts.preprocess))
    if data.fingerprint == doc["calibration"].get("fingerprint"):
        raise ConfigError("the evaluation data is the calibration data; verify on held-out samples the analysis "
                          "did not see (the point is to prove the mix on data it was not tuned on).")
    metric_fn = load_metric_fn(opts.metric_fn) if opts.metric_fn else None
    backend = plan_backend(doc, opts, run_dir)
    evaluator = Evaluator(data, backend, opts.metric, opts.batch, metric_fn)
    fp32_score = evaluator.fp32_score(model.proto)
    progress.log(f"verifying on: {backend.describe()}{chosen(backend, opts.backend or '')}")
    progress.log(f"FP32 {evaluator.name} on {data.num_samples} evaluation samples: {fp32_score:.4f}")
    cost = cost_model(model.proto, units, opts.target, opts.latency_batch)
    on_gpu = backend.name == "tensorrt"
    if opts.latency_from or opts.measure_latency or on_gpu:
        order = [n.name for n in model.proto.graph.node]
        if opts.latency_from:
            imported, cost.measured_by = import_latency(opts, units, order), "trtexec profiles"
        else:
            imported = profile_latency(model, units, ranges, backend, data, opts.latency_batch, order)
            cost.measured_by = f"{backend.describe()} profiling, batch {opts.latency_batch}"
            cost.where = "this GPU" if on_gpu else "this machine (CPU emulation, not a GPU)"
        cost.measured = {k: ms / 1e3 for k, ms in imported.ms.items()}
        for p, ms in imported.unattributed_ms.items():
            progress.log(f"{p.value}: {ms:.3f} of {imported.total_ms[p]:.3f} ms measured outside any unit")
    options = Options.from_sensitivity(doc, cost)

    measured: dict[str, float] = {}  # plan digest -> score, shared by the search and the sweep

    def measure(plan: dict[str, Precision]) -> float:
        key = Plan.of(plan).digest()
        if key not in measured:
            measured[key] = evaluator.score(lower(model.proto, units, Plan.of(plan), ranges))
        return measured[key]

    result = search(options, opts.budget, fp32_score, measure, progress.log)
    if not result.plan and result.message.startswith("all-FP32 is the fastest") and not cost.measured:
        result.message += (f" (at batch {opts.latency_batch} the quantize/reformat kernels are estimated to cost "
                           "more than lowering saves on this model; --latency-batch sets the deployment batch)")
    front = pareto(options, measure, log=progress.log) if opts.pareto else []
    mixed = lower(model.proto, units, Plan.of(result.plan), ranges)
    problems = trt_rule_violations(mixed)
    if problems:  # a bug in the lowering, never the user's input
        raise RuntimeError(f"the lowered mix breaks TensorRT's Q/DQ rules: {problems[0]}")
    report = _report(doc, model, data, opts, evaluator.name, result, options, backend.describe(),
                     time.perf_counter() - start)
    if front:
        report["pareto"] = [q.to_json() for q in front]
    atomic_write_bytes(run_dir / "model.mixed.onnx", mixed.SerializeToString())
    atomic_write_bytes(run_dir / "trtexec.txt", TRTEXEC.format(onnx="model.mixed.onnx").encode())
    atomic_write_json(run_dir / "report.json", report)
    atomic_write_json(run_dir / "plan.json", {k: v for k, v in report.items() if k != "latency"})
    atomic_write_bytes(run_dir / "report.html", render(report, doc).encode())
    return report


def plan_backend(doc: dict, opts: PlanOptions, run_dir: Path):
    """The backend that verifies the plan: the one the analysis measured with, with its settings, unless
    ``opts.backend`` names another. TensorRT verifies at the final optimisation level (what is deployed)."""
    from .backends.tensorrt import FINAL_OPT_LEVEL

    settings = doc.get("backend_settings", {})
    name = opts.backend or settings.get("name") or "onnxruntime"
    return get_backend(name, BackendOptions(ort_optimize=settings.get("ort_optimize") or "none",
                                            opt_level=FINAL_OPT_LEVEL, timing_cache=str(run_dir / TIMING_CACHE),
                                            max_batch=max(opts.batch, opts.latency_batch)))


def profile_latency(model, units, ranges, backend, data, batch: int, node_order: list[str]):
    """Per-unit times of all-FP32, all-FP16 and all-INT8 lowered models, profiled node by node on the backend.
    On a CPU this measures the emulation, not a GPU: it is labelled with the backend that produced it."""
    if not hasattr(backend, "profile"):
        raise ConfigError(f"the {backend.name} backend cannot profile per node; use --latency-from or the estimate.")
    feeds = data.take(0, data.effective_batch(batch))
    profiles, nodes = {}, {}
    for p in Precision:
        plan = Plan.of({u.name: p for u in units})
        measured = backend.profile(lower(model.proto, units, plan, ranges), feeds)
        profiles[p], nodes[p] = measured.ms, measured.nodes
    return attribute(profiles, nodes, units, node_order)


def import_latency(opts: PlanOptions, units, node_order: list[str]):
    profiles = {p: read_profile(f) for p, f in parse_pairs(list(opts.latency_from), "--latency-from").items()}
    layers = {p: read_layer_nodes(f) for p, f in parse_pairs(list(opts.layer_info), "--layer-info").items()}
    return attribute(profiles, layers, units, node_order)


def _report(doc, model, data, opts, metric, result, options, backend, elapsed) -> dict:
    by_name = {u["name"]: u for u in doc["units"]}
    units = []
    for name in options.units:
        p = result.plan.get(name, Precision.FP32)
        units.append({
            "name": name,
            "precision": p.value,
            "nodes": by_name[name]["nodes"],
            "predicted_noise": options.noise[(name, p)],  # the unit's NMSE measured alone, added up
            "measured_alone": by_name[name]["results"].get(p.value),
            "latency_ms": {q.value: round(options.cost.unit_seconds(name, q) * 1e3, 5)
                             for q in options.choices[name]},
        })
    analysed = [Precision.FP32] + [Precision(p) for p in doc["precisions"]]
    totals = {q.value: options.seconds({u: q for u in options.units if q in options.choices[u]}) * 1e3
              for q in Precision if q in analysed}
    counts = {q.value: sum(1 for u in units if u["precision"] == q.value) for q in Precision}
    return {
        "schema": PLAN_SCHEMA,
        "model": {"path": str(model.path), "sha256": model.sha256},
        "evaluation": {**data.info, "fingerprint": data.fingerprint, "metric": metric},
        "calibration": doc["calibration"],
        "budget": opts.budget.to_json(),
        "result": {"fp32_score": result.fp32_score, "score": result.score, "drop": result.fp32_score - result.score,
                   "allowed_drop": result.allowed_drop, "units": counts, "message": result.message},
        "latency": {"kind": options.cost.kind, "target": options.cost.device,
                    "source": options.cost.target.source,
                    "batch": options.cost.batch,
                    "all_ms": {k: round(v, 4) for k, v in totals.items()},
                    "mix_ms": round(options.seconds(result.plan) * 1e3, 4)},
        "units": units,
        "verification": [s.to_json() for s in result.steps],
        "backend": backend,
        "versions": {"trt_mpq": __version__, "onnx": onnx.__version__},
        "elapsed_s": round(elapsed, 2),
    }


def check_engine(run_dir: str | Path, layer_info: str | Path) -> list[dict]:
    """Planned vs realised precision per unit, from the layer info of an engine built from model.mixed.onnx."""
    run_dir = Path(run_dir)
    plan_path = run_dir / "plan.json"
    if not plan_path.is_file():
        raise ConfigError(f"'{run_dir}' holds no plan.json; run 'trt-mpq plan' first.")
    plan = json.loads(plan_path.read_text())
    doc, _ = load_analysis(run_dir)
    shapes = {k: tuple(v) for k, v in doc["model"].get("shapes", {}).items()}
    units = find_units(load_model(doc["model"]["path"], shapes).proto).units
    realized = read_realized(layer_info, units)
    rows = []
    for u in plan["units"]:
        got = realized.get(u["name"])
        got_text = got.value if isinstance(got, Precision) else got
        rows.append({"unit": u["name"], "planned": u["precision"], "realized": got_text,
                     "matches": got_text == u["precision"]})
    return rows
