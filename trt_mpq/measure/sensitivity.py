"""Per-unit sensitivity: how much the model's outputs move when one unit alone runs in a lower precision.

The fast path gives the same answer as the naive one (a whole lowered model and a new session per unit,
every sample through the whole network) for less work:

1. The samples are taken in batches that each hold samples from all over the data (``data.views.spread_batches``:
   data sets are often sorted by class or source), so one batch stands for the whole where one is enough.
   One FP32 pass over the data records, per batch and on disk, every tensor that some unit's downstream
   region reads from upstream (the region's *frontier*), plus the reference outputs. Ranges come from the
   same pass, so memory is bounded by one batch whatever the number of samples.
2. With ``--calibrator auto`` every quantized tensor's threshold is decided next, once, at the outputs, with
   the first unit that reads it lowered (``measure.thresholds``); ranges.json then holds every threshold a
   measurement uses.
3. For each (unit, precision), the lowered model is cut to the nodes downstream of the unit; that smaller
   model runs from the stored FP32 frontier. Kernels and batch shapes match the full run, so outputs agree
   with the naive path bit for bit (checked by ``scripts/benchmark.py``). The weights stay in one bank
   (``network.weights``) that every session shares, so a measurement copies none of them. Each measurement is
   a pure function of (unit, precision, ranges, data): the order of the loop changes nothing.
4. FP16, BF16 and TF32 errors are roundings, three to four orders smaller than INT8's and steady from one
   sample to the next: by default they are measured on a spread quarter of the batches (at least 16
   samples, 8 for dense predictions, at most 32), which ranks the units as all of them do (``FLOAT_SAMPLES``);
   the record says how many.
5. Each result is journalled as soon as it is measured; a rerun with the same settings skips it.

Every step is a set of independent jobs (``measure.jobs``) that an executor runs here, one after another,
or spread over a Ray cluster (``executors``); results fold in a fixed order, so the answer is the same.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .. import __version__
from ..artifacts import AnalysedUnit, Analysis, Calibration, ModelInfo, RunFolder, UnitResult
from ..backends import Backend
from ..data.datasets import Dataset
from ..data.views import spread_batches
from ..executors import Executor, Serial, chunks_for
from ..files import atomic_write_json
from ..network.graph import consumers, descendants, extract_region, region_inputs
from ..network.model import LoadedModel
from ..network.units import Unit, UnitTable, find_units
from ..network.weights import split_weights
from ..precision import Plan, Precision
from ..progress import Progress
from ..quant.lower import lower
from ..quant.ranges import FP16_MAX, INT4_BLOCK, Ranges
from .fp32_pass import Layout, fp32_pass
from .jobs import ROUNDINGS, MeasureJob, measure_batches
from .journal import Journal
from .output_delta import OutputDelta
from .store import ActivationStore
from .thresholds import Measured, choose_thresholds, spread

METRICS_VERSION = 3  # part of the resume key: results measured under other metric definitions are not reused
DENSE_OUTPUTS = 100_000  # output values per sample from which 8 samples rank FP16 as 16 do (float_floor)
FLOAT_SAMPLES = ("auto", "all")  # --float-samples: a spread quarter (16..32), every sample, or a number
# The most samples auto spends on a rounding: a ranking needs a number of samples, not a share of the data.
# MiniLM-L6's FP16 ranking on 16 / 32 / 64 of its 256 sentences against all: Spearman 0.9991 / 0.9992 /
# 0.9996, the same top 10 each time; MobileNetV2 needs more than 16 (0.980; 24 photos: 0.991).
FLOAT_CAP = 32

@dataclass(frozen=True)
class Settings:
    precisions: tuple[Precision, ...] = (Precision.INT8, Precision.FP16)
    calibrator: str = "max"
    batch: int = 8
    weight_scales: str = "max"
    bias_correction: bool = False
    int4_block: int = INT4_BLOCK
    float_samples: int | str = "auto"  # samples the FP16/BF16/TF32 measurements run on (FLOAT_SAMPLES or N)

    def to_json(self) -> dict:
        d = asdict(self)
        d["precisions"] = [p.value for p in self.precisions]
        return d


@dataclass
class UnitRegion:
    """What a unit's downstream run needs: its nodes in the original graph and their frontier."""

    unit: Unit
    nodes: set[int] = field(default_factory=set)
    frontier: list[str] = field(default_factory=list)


def unit_regions(model: onnx.ModelProto, units: Sequence[Unit], all_units: Sequence[Unit]) -> list[UnitRegion]:
    """Each unit's downstream region. A region never splits another unit: if it holds a unit's residual Add,
    it holds that unit's Conv too, so the backend fuses the region exactly as it fuses the whole model."""
    index = {n.name: i for i, n in enumerate(model.graph.node)}
    members = [{index[n] for n in u.nodes} for u in all_units]
    cons = consumers(model.graph)
    out = []
    for u in units:
        region = descendants(model.graph, [index[n] for n in u.nodes], cons)
        for group in members:
            if region & group and not group <= region:
                region |= group
        out.append(UnitRegion(u, region, region_inputs(model.graph, region)))
    return out


def fp16_overflow(model: onnx.ModelProto, unit: Unit, ranges: Ranges) -> list[str]:
    """Tensors and constants of a unit whose magnitude exceeds the FP16 range (65504)."""
    by_name = {n.name: n for n in model.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    members = [by_name[n] for n in unit.nodes]
    flagged = ranges.exceeds_fp16([*unit.inputs, *unit.outputs])
    for node in members:
        for name in node.input:
            t = inits.get(name)
            if t is not None and t.data_type == onnx.TensorProto.FLOAT:
                a = numpy_helper.to_array(t)
                if a.size and float(np.max(np.abs(a))) > FP16_MAX:
                    flagged.append(name)
    return list(dict.fromkeys(flagged))


def float_floor(model: LoadedModel) -> int:
    """The fewest samples ``--float-samples auto`` measures FP16/BF16/TF32 on: 16, or 8 where each sample's
    outputs hold ``DENSE_OUTPUTS`` values or more (a dense prediction: one sample's error already averages
    that many; PP-OCRv4 at 640x640 ranks its units the same on 8 samples as on 16, Spearman 0.9999, while
    MobileNetV2's 1,000 logits need more: 0.973). Outputs of unknown size count as none."""
    per_sample = 0
    for o in model.proto.graph.output:
        shape = model.tensors.shapes.get(o.name)  # static per-sample shapes (batch 1), --shape applied
        if shape and o.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            per_sample += int(np.prod(shape))
    return 8 if per_sample >= DENSE_OUTPUTS else 16


def rounding_batches(counts: Sequence[int], float_samples: int | str, floor: int = 16) -> list[int]:
    """The batches FP16/BF16/TF32 are measured on: all for ``"all"``, else whole batches spread over the data
    holding at least ``float_samples`` samples (``"auto"``: a quarter of the batches, rounded, at least
    ``floor`` samples, at most ``FLOAT_CAP``). Each batch holds samples from all over the data
    (``spread_batches``): on MobileNetV2 16 such samples rank its units' FP16 error as all 72 do (Spearman
    0.998, the same top 10), where 24 consecutive ones gave 0.991."""
    total = sum(counts)
    per = max(1, max(counts, default=1))
    auto = max(floor, min(FLOAT_CAP, (len(counts) + 2) // 4 * per))
    want = {"all": total, "auto": auto}.get(str(float_samples)) or int(float_samples)
    if want >= total:
        return list(range(len(counts)))
    return spread(len(counts), max(1, -(-want // per)))


def _run_key(model: LoadedModel, dataset: Dataset, backend: Backend, settings: Settings) -> str:
    blob = json.dumps([__version__, METRICS_VERSION, model.sha256, dataset.fingerprint, backend.describe(),
                       settings.to_json(), [i.describe() for i in model.inputs], model.fixed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def downstream_model(model: onnx.ModelProto, region: UnitRegion, layout: Layout) -> onnx.ModelProto:
    """The FP32 nodes downstream of a unit (the unit included), fed by its frontier from the kept batches."""
    types = {n: layout.dtype_shape(n) for n in region.frontier}
    return extract_region(model, region.nodes, types, name=f"downstream_of_{region.unit.name}")


def measure_jobs(skeleton: onnx.ModelProto, regions: dict[str, UnitRegion], layout: Layout, pairs, units,
                 outputs: Sequence[str], num_batches: int, rounding: Collection[int], chunks: int,
                 measured: Measured | None = None) -> list[MeasureJob]:
    """The measurement jobs of ``units`` (each with its pending precisions from ``pairs``), each unit's batches
    cut into ``chunks`` consecutive parts (more jobs than units keep many workers busy); the (unit, precision,
    batch) runs in ``measured`` (the threshold choice's) are not run again."""
    size = -(-num_batches // max(1, min(chunks, num_batches)))
    parts = [tuple(range(lo, min(lo + size, num_batches))) for lo in range(0, num_batches, size)]
    jobs = []
    for unit in units:
        todo = tuple(p for q, p in pairs if q is unit)
        known = frozenset((p, b) for p in todo for b in (measured or {}).get((unit.name, p), {}))
        sub = downstream_model(skeleton, regions[unit.name], layout)
        needed = [b for b in parts if any((p not in ROUNDINGS or set(b) & set(rounding)) and
                                          any((p, k) not in known for k in b) for p in todo)]
        jobs += [MeasureJob(sub, unit, todo, b, tuple(outputs), frozenset(rounding),
                            len(rounding) == num_batches, known) for b in needed]
    return jobs


def measure_naive(model: LoadedModel, units: Sequence[Unit], pairs: Sequence[tuple[Unit, Precision]],
                  ranges: Ranges, backend: Backend, dataset: Dataset, batch: int = 8, reference_once: bool = False,
                  progress: Progress | None = None) -> dict[tuple[str, str], dict]:
    """The baseline the fast path is measured against: for every (unit, precision) a whole lowered model and a
    new session, every sample through the whole network, in the same batches as the fast path (ONNX Runtime's
    GEMM rounding depends on the batch size, and the two must compute the same numbers). Without
    ``reference_once`` each measurement also runs the FP32 model, as the method is written; with it the FP32
    outputs are computed once up front and kept."""
    progress = progress or Progress()
    dataset = spread_batches(dataset, batch)
    spans = dataset.spans(batch)
    results = {}
    with backend.compile(model.proto) as fp32:
        refs = [fp32.run(dataset.take(lo, hi)) for lo, hi in spans] if reference_once else None
        progress.start("naive per-unit runs", len(pairs))
        for unit, precision in pairs:
            delta = OutputDelta()
            with backend.compile(lower(model.proto, units, Plan.of({unit.name: precision}), ranges)) as session:
                for k, (lo, hi) in enumerate(spans):
                    feeds = dataset.take(lo, hi)
                    ref = refs[k] if refs is not None else fp32.run(feeds)
                    delta.update(ref, session.run(feeds), hi - lo)
            results[(unit.name, precision.value)] = delta.result().to_json()
            progress.advance()
    return results


def analyze(model: LoadedModel, dataset: Dataset, backend: Backend, out_dir: str | Path,
            settings: Settings = Settings(), progress: Progress | None = None,
            order: Callable[[list[Unit]], list[Unit]] | None = None, executor: Executor | None = None) -> Analysis:
    """Measure every unit at every precision in ``settings``; write the analysis into ``out_dir``
    (sensitivity.json, ranges.json); resume from ``out_dir/.trt-mpq/<run key>/`` when an earlier run with the
    same inputs and settings was cut short. ``order`` rearranges the units to measure and ``executor`` says
    where the jobs run (``executors``; default: here, one after another): neither changes any result."""
    progress = progress or Progress()
    executor = executor or Serial()
    if executor.threads:  # what the jobs run on, recorded and keyed as such
        backend = backend.with_threads(executor.threads)
    start = time.perf_counter()
    folder = RunFolder(out_dir)
    table = find_units(model.proto, model.tensors)
    recorded, dataset = dataset, spread_batches(dataset, settings.batch)
    work = folder.work / _run_key(model, dataset, backend, settings)
    journal = Journal(work / "results.jsonl")
    done = {k: UnitResult.from_json(v) for k, v in journal.load().items()}
    pairs = [(u, p) for u in table.units for p in settings.precisions
             if p in u.allowed and (u.name, p.value) not in done]
    store = ActivationStore(work / "activations")
    ranges_path = work / "ranges.json"  # written once thresholds are decided: a resumed run measures with them
    ranges = Ranges.from_json(json.loads(ranges_path.read_text())) if ranges_path.exists() else None
    if done:
        progress.log(f"resuming: {len(done)} of {len(done) + len(pairs)} measurements already done")
    pending = [u for u in table.units if any(u is q for q, _ in pairs)]
    kept_before = bool(pairs) and ranges is not None and executor.resume(store)
    fresh = bool(pairs) and not kept_before  # an FP32 pass to come (and auto's choice, unless decided)
    regions = {r.unit.name: r for r in unit_regions(model.proto, table.units if fresh else pending, table.units)}
    skeleton, weights = split_weights(model.proto)
    counts = [hi - lo for lo, hi in dataset.spans(settings.batch)]
    rounding = rounding_batches(counts, settings.float_samples, float_floor(model))
    if len(rounding) < len(counts) and any(p in ROUNDINGS for p in settings.precisions):
        batches = f"{len(rounding)} batch{'es' if len(rounding) > 1 else ''}"
        progress.log(f"FP16/BF16/TF32 measured on {sum(counts[b] for b in rounding)} of {sum(counts)} samples "
                     f"({batches}; --float-samples all for every sample)")
    outputs = [o.name for o in model.proto.graph.output]
    measured: Measured = {}  # (unit, precision) -> batches the threshold choice measured already
    executor.use_gpus(backend.capabilities.gpu)
    shared = [executor.share(backend), executor.share(weights)]
    layout = Layout({n: store.dtype_shape(n) for r in regions.values() for n in r.frontier}) if kept_before \
        else None
    if fresh:
        kept = list(dict.fromkeys([n for r in regions.values() for n in r.frontier] + outputs))
        found, layout = fp32_pass(model, skeleton, weights, table, kept, dataset, backend, settings, store,
                                  executor, progress)
        if ranges is None:
            ranges = found.with_shipped(model.shipped) if model.shipped else found
            if settings.calibrator == "auto":
                ranges, measured = choose_thresholds(
                    table.units, lambda u: downstream_model(skeleton, regions[u.name], layout), ranges,
                    settings.precisions, len(counts), outputs, executor, shared, progress)
            atomic_write_json(ranges_path, ranges.to_json())
    elif ranges is None:
        ranges = Ranges(settings.calibrator)
    units = (order or list)(pending)
    chunks = chunks_for(executor.workers, len(units), len(counts))
    pending_pairs = {(u.name, p) for u, p in pairs}
    measured = {k: v for k, v in measured.items() if k in pending_pairs}
    jobs = measure_jobs(skeleton, regions, layout, pairs, units, outputs, len(counts), rounding, chunks,
                        measured) if pairs else []
    progress.start(f"per-unit sensitivity{'' if executor.workers <= 1 else ' ' + executor.where}", len(pairs))
    parts: dict[str, list] = {u.name: [{p: d for (n, p), d in measured.items() if n == u.name}] for u in units}
    left = {u.name: sum(1 for j in jobs if j.unit is u) for u in units}

    def finish(unit: Unit) -> None:  # every batch of every pending precision of ``unit`` is in: fold them
        for precision in (p for q, p in pairs if q is unit):
            result = _fold([d.get(precision, {}) for d in parts[unit.name]], ranges, unit, precision)
            if precision.activations is Precision.FP16:  # FP16, and INT4's FP16 activations
                flagged = fp16_overflow(model.proto, unit, ranges)
                if flagged:
                    result = result.with_fp16_overflow(flagged)
            journal.append(unit.name, precision.value, result.to_json())
            done[(unit.name, precision.value)] = result
            progress.advance()
        del parts[unit.name]

    for unit in (u for u in units if not left[u.name]):  # measured whole by the threshold choice
        finish(unit)
    for i, deltas in executor.map(measure_batches, jobs, [*shared, executor.share(ranges)], reads_batches=True):
        unit = jobs[i].unit
        parts[unit.name].append(deltas)
        left[unit.name] -= 1
        if not left[unit.name]:
            finish(unit)
    executor.drop_batches()
    store.remove()
    rounding_samples = sum(counts[b] for b in rounding) if len(rounding) < len(counts) else None
    analysis = _analysis(model, table, recorded, backend, settings, done, time.perf_counter() - start,
                         rounding_samples)
    atomic_write_json(folder.ranges, ranges.to_json())
    atomic_write_json(folder.sensitivity, analysis.to_json())
    return analysis


def _fold(parts: Sequence[dict[int, dict]], ranges: Ranges, unit: Unit, p: Precision) -> UnitResult:
    """One (unit, precision)'s result from its jobs' per-batch deltas, folded in batch order."""
    delta = OutputDelta()
    batches = {b: d for part in parts for b, d in part.items()}
    for b in sorted(batches):
        delta.add(batches[b])
    result = delta.result()
    methods = ranges.methods_for(p) if p.quantized else {}
    chosen = {t: methods[t] for t in unit.activations if t in methods}
    if ranges.calibrator == "auto" and chosen:
        result = result.with_thresholds(chosen, None)
    return result


def _versions(backend: Backend) -> dict[str, str]:
    return {"trt_mpq": __version__, "onnx": onnx.__version__, **backend.versions(), "numpy": np.__version__}


def _analysis(model: LoadedModel, table: UnitTable, dataset: Dataset, backend: Backend, settings: Settings,
              results: dict[tuple[str, str], UnitResult], elapsed: float,
              rounding_samples: int | None = None) -> Analysis:
    units = tuple(
        AnalysedUnit(u.name, u.main_op, u.nodes, u.op_types,
                     {p: results[(u.name, p.value)] for p in settings.precisions if (u.name, p.value) in results},
                     u.kind)
        for u in table.units)
    info = ModelInfo(str(model.path), model.sha256, tuple(i.describe() for i in model.inputs),
                     tuple(o.describe() for o in model.outputs), tuple(model.notes), dict(model.shapes),
                     dict(model.fixed), model.measured)
    calibration = Calibration(dataset.record(), settings.calibrator, dataset.effective_batch(settings.batch),
                              settings.weight_scales, settings.bias_correction,
                              rounding_samples if any(p in ROUNDINGS for p in settings.precisions) else None)
    return Analysis(info, backend.record(), settings.precisions, calibration, units, tuple(table.skipped),
                    _versions(backend), round(elapsed, 2))
