"""The FP32 pass of an analysis: every batch through the FP32 model once, keeping what later jobs read (each
unit's frontier and the reference outputs) and folding what each batch adds to the ranges; then the
histograms, every tensor's candidate thresholds and the weights' clips. Every step is a set of independent
jobs (``measure.jobs``) run by an executor; results fold in batch order, so the ranges are the same floats
wherever the jobs ran.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from ..backends import Backend
from ..data.datasets import Dataset
from ..executors import Executor, ordered
from ..network.model import LoadedModel
from ..network.units import UnitTable
from ..network.weights import Weights
from ..precision import Precision
from ..progress import Progress
from ..quant.collector import RangeCollector
from ..quant.ranges import Ranges
from .calibration import channel_axes, int8_weights, probe_model
from .jobs import (
    Fp32Job,
    Fp32Plan,
    HistogramJob,
    ThresholdJob,
    WeightJob,
    fp32_batch,
    histogram_batch,
    thresholds_of,
    weight_clip,
)
from .store import ActivationStore


@dataclass(frozen=True)
class Layout:
    """dtype and dims of every kept tensor; a dim that differs between batches (the batch axis when the last
    batch is short) is None. Static dims matter to TensorRT, which needs every non-batch dim fixed."""

    types: Mapping[str, tuple[np.dtype, list[int | None]]]

    def dtype_shape(self, name: str) -> tuple[np.dtype, list[int | None]]:
        return self.types[name]

    @classmethod
    def of(cls, per_batch: Sequence[Mapping[str, tuple[str, tuple[int, ...]]]]) -> Layout:
        types = {}
        for name, (dtype, first) in per_batch[0].items():
            shapes = [b[name][1] for b in per_batch]
            types[name] = (np.dtype(dtype), [d if all(s[i] == d for s in shapes) else None
                                             for i, d in enumerate(first)])
        return cls(types)


def observed_tensors(model: onnx.ModelProto, units) -> list[str]:
    """Tensors whose |x| maxima are recorded: what each unit reads and hands on. Values inside a fused unit
    are not recorded (they would multiply the FP32 pass's memory); constants are checked directly."""
    consts = {t.name for t in model.graph.initializer}
    names = dict.fromkeys(n for u in units for n in (*u.inputs, *u.outputs))
    return [n for n in names if n not in consts]


def _jobs(dataset: Dataset, batch: int) -> Iterator[Fp32Job]:
    for b, (lo, hi) in enumerate(dataset.spans(batch)):  # one batch in memory at a time, in this process
        yield Fp32Job(b, dataset.take(lo, hi), hi - lo)


def fp32_pass(model: LoadedModel, skeleton: onnx.ModelProto, weights: Weights, table: UnitTable,
              kept: Sequence[str], dataset: Dataset, backend: Backend, settings, store: ActivationStore,
              executor: Executor, progress: Progress) -> tuple[Ranges, Layout]:
    """Keep ``kept`` of every batch (the executor keeps them: ``store`` on disk, or a cluster's object store)
    and calibrate ranges. ``skeleton``/``weights``: the model split by ``network.weights``."""
    outputs = [o.name for o in model.proto.graph.output]
    observed = observed_tensors(model.proto, table.units)
    # thresholds for the activations a quantized precision will be measured on
    quantized = list(dict.fromkeys(a for u in table.units for p in (Precision.INT8, Precision.FP8)
                                   if p in settings.precisions and p in u.allowed for a in u.activations))
    collector = RangeCollector(settings.calibrator, observed, quantized, channel_axes(table.units),
                               settings.weight_scales, settings.bias_correction)
    probe, fetched = probe_model(model, list(kept) + observed, skeleton)
    extra = [n for n in fetched if n not in outputs]
    key = hashlib.sha256(probe.SerializeToString()).hexdigest()[:16]
    plan = Fp32Plan(probe, key, tuple(outputs + extra), tuple(kept), collector)
    shared = [executor.share(backend), executor.share(weights)]
    num = len(dataset.spans(settings.batch))
    progress.start("FP32 reference and ranges", num * (2 if collector.needs_histograms else 1))
    results = []
    try:
        for i, result in executor.keep(fp32_batch, _jobs(dataset, settings.batch),
                                       [executor.share(plan), *shared], store):
            results.append((i, result))
            progress.advance()
    finally:
        plan.close()  # the probe compiled here (jobs on a cluster compile and drop their own)
    results = ordered(results, num)
    for r in results:  # in batch order: channel sums are float sums
        collector.fold(r.ranges)
    layout = Layout.of([r.layout for r in results])
    candidates = None
    if collector.needs_histograms:
        collector.start_histograms()
        limits = collector.histogram_limits()
        for _, counts in executor.map(histogram_batch, [HistogramJob(b, limits) for b in range(num)], [],
                                      reads_batches=True):
            collector.fold_histograms(counts)
            progress.advance()
        methods = collector.threshold_methods()
        jobs = [ThresholdJob(n, collector.maxima[n].value, h.amax, h.counts, methods)
                for n, h in collector.hists.items()]
        found = ordered(executor.map(thresholds_of, jobs, []), len(jobs))
        candidates = {j.tensor: c for j, c in zip(jobs, found, strict=True)}
    ranges = collector.result(candidates)
    if settings.weight_scales == "mse":  # each weight's clip, searched once
        jobs = [WeightJob(n, w, axis, "mse") for n, (w, axis) in int8_weights(model.proto, table.units).items()]
        clips = ordered(executor.map(weight_clip, jobs, []), len(jobs))
        ranges = replace(ranges, weight_amax={j.name: c for j, c in zip(jobs, clips, strict=True)})
    return replace(ranges, int4_block=settings.int4_block), layout
