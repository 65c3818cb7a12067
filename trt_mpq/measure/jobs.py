"""The analysis's independent jobs: each a record plus a pure function of it, of values every job shares (the
backend, the weight bank, the ranges) and of the FP32 batches it reads. An executor runs them here or on
other machines (``executors``); the driver (``measure.sensitivity``) folds their results in a fixed order.

- ``Fp32Job``: the FP32 model on one batch: what the batch adds to the ranges, and the tensors kept for the
  jobs after it (each unit's frontier, the reference outputs).
- ``HistogramJob``: one kept batch's |x| histograms, once every maximum is known.
- ``ThresholdJob``: one tensor's candidate thresholds from its histogram; ``WeightJob``: one weight's clip.
- ``thresholds.ChoiceJob``: ``--calibrator auto``'s trial of one unit's candidate thresholds.
- ``MeasureJob``: one unit at its precisions on some of the batches: per batch, per output, what the
  comparison with the FP32 reference adds (``BatchDelta``), folded in batch order by the driver.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..backends import Backend, Session
from ..executors import BatchReader
from ..network.units import Unit
from ..network.weights import Weights
from ..precision import Plan, Precision
from ..quant.collector import BatchRanges, RangeCollector, batch_histograms, candidate_thresholds
from ..quant.lower import lower
from ..quant.ranges import AbsHistogram, Ranges, weight_amax
from .output_delta import BatchDelta, OutputDelta

ROUNDINGS = (Precision.FP16, Precision.BF16, Precision.TF32)  # no calibration: the format's rounding alone


@dataclass(frozen=True)
class Fp32Plan:
    """What every ``Fp32Job`` shares: the probe model (the FP32 model with every needed tensor an output),
    what it fetches, what is kept, and how ranges are observed."""

    probe: onnx.ModelProto
    key: str  # identifies the probe: a worker compiles it once and reuses the session
    fetch: tuple[str, ...]
    kept: tuple[str, ...]
    collector: RangeCollector
    # the probe compiled once for every batch this object serves: all of them in one process; on a cluster
    # each job gets its own copy (compiled once per job); never sent anywhere, closed with ``close``
    sessions: dict = field(default_factory=dict, compare=False, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)  # jobs on threads

    def session(self, backend: Backend, weights: Weights) -> Session:
        with self.lock:  # concurrent jobs in one process share one compiled probe (its runs are thread-safe)
            if not self.sessions:
                self.sessions["probe"] = backend.compile(self.probe, weights)
            return self.sessions["probe"]

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()
        self.sessions.clear()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "lock"} | {"sessions": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.Lock())


@dataclass(frozen=True)
class Fp32Job:
    batch: int
    feeds: Mapping[str, np.ndarray]
    samples: int


@dataclass(frozen=True)
class Fp32Result:
    ranges: BatchRanges
    layout: Mapping[str, tuple[str, tuple[int, ...]]]  # kept tensor -> (dtype, shape) in this batch


def fp32_batch(job: Fp32Job, plan: Fp32Plan, backend: Backend, weights: Weights
               ) -> tuple[Fp32Result, dict[str, np.ndarray]]:
    session = plan.session(backend, weights)
    values = {**job.feeds, **session.run(job.feeds, list(plan.fetch))}
    kept = {n: values[n] for n in plan.kept}
    layout = {n: (v.dtype.str, tuple(v.shape)) for n, v in kept.items()}
    return Fp32Result(plan.collector.observe(values, job.samples), layout), kept


@dataclass(frozen=True)
class HistogramJob:
    batch: int
    limits: Mapping[str, float]  # tensor -> the range its histogram spans

    @property
    def batches(self) -> tuple[int, ...]:
        return (self.batch,)


def histogram_batch(job: HistogramJob, reader: BatchReader) -> dict[str, np.ndarray]:
    return batch_histograms(job.limits, reader.read(job.batch, list(job.limits)))


@dataclass(frozen=True)
class ThresholdJob:
    tensor: str
    absmax: float
    limit: float
    counts: np.ndarray
    methods: tuple[str, ...]


def thresholds_of(job: ThresholdJob) -> dict[str, float]:
    hist = AbsHistogram(job.limit)
    hist.counts = job.counts
    return candidate_thresholds(hist, job.absmax, job.methods)


@dataclass(frozen=True)
class WeightJob:
    name: str
    array: np.ndarray
    axis: int | None
    method: str


def weight_clip(job: WeightJob) -> tuple[float, ...]:
    return tuple(float(v) for v in np.atleast_1d(weight_amax(job.array, job.axis, job.method)))


@dataclass(frozen=True)
class MeasureJob:
    sub: onnx.ModelProto  # the unit's downstream model, placeholders for weights
    unit: Unit
    precisions: tuple[Precision, ...]
    batches: tuple[int, ...]  # the batches this job reads (FP16/BF16/TF32 run on those in ``rounding`` only)
    outputs: tuple[str, ...]
    rounding: frozenset[int] = field(default_factory=frozenset)
    all_rounding: bool = True  # ``rounding`` is every batch
    known: frozenset[tuple[Precision, int]] = field(default_factory=frozenset)  # measured already (by the choice)

    @property
    def parts(self) -> int:
        return len(self.batches)


Deltas = dict[Precision, dict[int, dict[str, BatchDelta]]]  # precision -> batch -> output -> its delta


def measure_batches(job: MeasureJob, backend: Backend, weights: Weights, ranges: Ranges, reader: BatchReader
                    ) -> Deltas:
    """Lower the unit inside its downstream model at each precision, run it from the stored FP32 frontier
    (read once per batch for every precision), compare with the stored reference, batch by batch."""
    sub = weights.fill_for(job.sub, job.unit.nodes)
    out: Deltas = {p: {} for p in job.precisions}
    with contextlib.ExitStack() as stack:
        sessions = {}
        for p in job.precisions:
            lowered = lower(sub, [job.unit], Plan.of({job.unit.name: p}), ranges)
            sessions[p] = (stack.enter_context(backend.compile(lowered, weights)),
                           [o.name for o in lowered.graph.output])
        feeds_needed = [i.name for i in sub.graph.input]
        for b in job.batches:
            active = [p for p in sessions if (job.all_rounding or p not in ROUNDINGS or b in job.rounding)
                      and (p, b) not in job.known]
            if not active:
                continue
            feeds = reader.read(b, feeds_needed)
            ref = reader.read(b, job.outputs)
            for p in active:
                session, produced = sessions[p]
                out[p][b] = OutputDelta.compare(ref, {**ref, **session.run(feeds, produced)})
    return out
