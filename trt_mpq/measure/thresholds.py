"""``--calibrator auto``: one threshold per quantized tensor, decided before any sensitivity is measured.

Every candidate threshold of a tensor (max, percentile, entropy, mse: all from the FP32 pass's histogram;
methods within 1 % count once) is tried on the first unit in graph order that reads the tensor: that unit
alone in the quantized precision (its weight quantized, of its inputs only this tensor), the network
downstream of it run from the stored FP32 frontier on ``CHOOSE_BATCHES`` batches spread over the data (at
most a quarter of them, at least one), its outputs compared with the FP32 reference. The candidate with the
least error (each sample's normalised squared error, averaged) wins; a tie goes to the earlier method of
``CHOICES`` (max first; a Q/DQ file's own "shipped" threshold last). The decision depends on the model and
the data alone, never on the order units are measured in, and a tensor read by several units (Q, K and V of
one LayerNorm) gets one threshold. Measured at the network's outputs rather than at the unit's own: on
MobileNetV2 the unit-local error preferred thresholds that cost 0.8 dB of all-INT8 output SQNR.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from ..backends import Backend
from ..executors import BatchReader, Executor, chunks_for
from ..network.units import Unit
from ..network.weights import Weights
from ..precision import Plan, Precision
from ..progress import Progress
from ..quant.lower import lower
from ..quant.ranges import CHOICES, Ranges
from .output_delta import BatchDelta, OutputDelta

# Batches each candidate runs on (16 samples at the default batch), spread over the data (often sorted by class
# or source). One batch chose as well on the two models measured (all-INT8 MobileNetV2 agreement 0.919 vs 0.889,
# MiniLM cosine 0.9831 vs 0.9822) at half the cost, but it is the first batch only (MobileNetV2's: 8 crops of
# one photo), and MobileNetV2's `run` then searched twice as long for a mix no faster (docs/results.md).
CHOOSE_BATCHES = 2
CHOSEN_BY = (Precision.INT8, Precision.FP8)  # the precisions whose activation thresholds auto chooses


def spread(num_batches: int, k: int) -> list[int]:
    """``k`` batch indices spread evenly over the data (data sets are often sorted: by class, by source)."""
    if num_batches <= k:
        return list(range(num_batches))
    return sorted({int(round(i * (num_batches - 1) / (k - 1))) for i in range(k)}) if k > 1 else [0]


def choice_batches(num_batches: int) -> list[int]:
    """The batches candidates run on: ``CHOOSE_BATCHES`` spread over the data, never more than a quarter of
    them (trying 4 candidates on most of the data would cost more than the analysis itself), at least one."""
    return spread(num_batches, max(1, min(CHOOSE_BATCHES, round(num_batches / 4))))


class _Reference:
    """A batch of FP32 outputs as rows (one per sample, or per leading index), with each row's power."""

    def __init__(self, outputs: Mapping[str, np.ndarray]) -> None:
        self.outputs = dict(outputs)
        self.rows = {n: np.ascontiguousarray(v, np.float32).reshape(v.shape[0] if v.ndim else 1, -1)
                     for n, v in outputs.items() if np.issubdtype(v.dtype, np.floating)}
        self.power = {n: np.einsum("ij,ij->i", r, r, dtype=np.float64) for n, r in self.rows.items()}

    def errors(self, got: Mapping[str, np.ndarray]) -> np.ndarray:
        """Each row's normalised squared error, per output; inf where not finite: every sample counts alike,
        as in the metrics a plan is held to (top-1 agreement, per-sample cosine)."""
        out = []
        for name, ref in self.rows.items():
            d = np.asarray(got[name], np.float32).reshape(ref.shape) - ref
            err, power = np.einsum("ij,ij->i", d, d, dtype=np.float64), self.power[name]
            with np.errstate(divide="ignore", invalid="ignore"):
                e = np.where(power > 0, err / np.where(power > 0, power, 1.0), np.where(err > 0, np.inf, 0.0))
            out.append(np.where(np.isfinite(e), e, np.inf))
        return np.concatenate(out) if out else np.zeros(0)


Trial = tuple[str, str]  # (tensor, method)


@dataclass(frozen=True)
class Trials:
    """What one unit's candidate trials found: each candidate's mean per-sample error, and, where the unit has
    no other quantized input (so a trial is exactly that unit's measurement in the precision), each trial's
    per-batch output deltas: the measurement of the winner need not run those batches again."""

    errors: dict[str, dict[str, float]]
    deltas: dict[Trial, dict[int, dict[str, BatchDelta]]]


def candidate_errors(sub: onnx.ModelProto, weights: Weights, unit: Unit, p: Precision, ranges: Ranges,
                     options: Mapping[str, Iterable[str]], backend: Backend, store: BatchReader,
                     batches: Sequence[int], outputs: Sequence[str]) -> Trials:
    """For each activation of ``unit`` in ``options`` and each of its candidate methods: the mean per-sample
    normalised error of the model's ``outputs`` with ``unit`` alone in ``p``, only that tensor quantized, at
    that threshold. ``sub``: the unit's downstream model (``sensitivity.downstream_model``), fed from ``store``."""
    sub = weights.fill_for(sub, unit.nodes)
    feeds_needed = [i.name for i in sub.graph.input]
    data = [store.read(b, feeds_needed) for b in batches]
    refs = [_Reference(store.read(b, outputs)) for b in batches]
    found = Trials({}, {})
    for tensor, methods in options.items():
        alone = replace(unit, activations=(tensor,))
        found.errors[tensor] = {}
        for method in methods:
            lowered = lower(sub, [alone], Plan.of({unit.name: p}), ranges.choose_for(p, {tensor: method}))
            produced = [o.name for o in lowered.graph.output]
            per_sample, deltas = [], {}
            with backend.compile(lowered, weights) as session:
                for b, feeds, ref in zip(batches, data, refs, strict=True):
                    got = {**ref.outputs, **session.run(feeds, produced)}
                    per_sample.append(ref.errors(got))
                    if unit.activations == (tensor,):
                        deltas[b] = OutputDelta.compare(ref.outputs, got)
            found.errors[tensor][method] = float(np.mean(np.concatenate(per_sample))) if per_sample else 0.0
            if deltas:
                found.deltas[(tensor, method)] = deltas
    return found


@dataclass(frozen=True)
class ChoiceJob:
    """One unit's trial of the candidate thresholds of the tensors it decides (an executor's job)."""

    sub: onnx.ModelProto  # the unit's downstream model, placeholders for weights
    unit: Unit
    precision: Precision
    options: Mapping[str, tuple[str, ...]]  # tensor -> candidate methods
    batches: tuple[int, ...]
    outputs: tuple[str, ...]

    @property
    def parts(self) -> int:
        return sum(len(m) for m in self.options.values())

    def split(self, pieces: int) -> list[ChoiceJob]:
        """The same trials in about ``pieces`` jobs (each tensor's candidates spread over them)."""
        trials = [(t, m) for t, ms in self.options.items() for m in ms]
        size = -(-len(trials) // max(1, min(pieces, len(trials))))
        out = []
        for lo in range(0, len(trials), size):
            options: dict[str, tuple[str, ...]] = {}
            for t, m in trials[lo:lo + size]:
                options[t] = (*options.get(t, ()), m)
            out.append(replace(self, options=options))
        return out


def choice_errors(job: ChoiceJob, backend: Backend, weights: Weights, ranges: Ranges, reader: BatchReader
                  ) -> Trials:
    return candidate_errors(job.sub, weights, job.unit, job.precision, ranges, job.options, backend, reader,
                            job.batches, job.outputs)


Measured = dict[tuple[str, Precision], dict[int, dict[str, BatchDelta]]]  # (unit, p) -> batch -> its deltas


def choose_thresholds(units: Sequence[Unit], downstream: Callable[[Unit], onnx.ModelProto], ranges: Ranges,
                      precisions: Sequence[Precision], num_batches: int, outputs: Sequence[str],
                      executor: Executor, shared: Sequence, progress: Progress | None = None
                      ) -> tuple[Ranges, Measured]:
    """``ranges`` with every quantized tensor of ``precisions`` (INT8, FP8) at its chosen candidate; the
    method of each is recorded (``Ranges.methods`` / ``fp8_methods``). ``units`` in graph order;
    ``downstream(unit)``: the model downstream of a unit, fed from the kept batches; ``shared``: the backend
    and the weight bank, as the executor shares them. Also the batches already measured: a unit with one
    quantized input, in a precision, on the choice's batches, at the threshold chosen (the same model, the
    same batch: the measurement's own numbers)."""
    progress = progress or Progress()
    batches = tuple(choice_batches(num_batches))
    measured: Measured = {}
    for p in (q for q in CHOSEN_BY if q in precisions):
        readers = [u for u in units if p in u.allowed and u.activations]
        options = {t: tuple(ranges.options([t])) for u in readers for t in u.activations}
        choice = {t: o[0] for t, o in options.items() if len(o) == 1}
        deciders: dict[str, list[str]] = {}  # unit -> the tensors it decides: those it is the first reader of
        for u in readers:
            for t in u.activations:
                if t not in choice and not any(t in ts for ts in deciders.values()):
                    deciders.setdefault(u.name, []).append(t)
        whole = [ChoiceJob(downstream(u), u, p, {t: options[t] for t in deciders[u.name]}, batches, tuple(outputs))
                 for u in readers if u.name in deciders]
        pieces = chunks_for(executor.workers, len(whole), max((j.parts for j in whole), default=1))
        jobs = [piece for j in whole for piece in j.split(pieces)]  # one per unit in one process
        progress.start(f"{p.value.upper()} thresholds (--calibrator auto)", len(jobs))
        errors: dict[str, dict[str, float]] = {}
        deltas: dict[Trial, dict[int, dict[str, BatchDelta]]] = {}
        for _, found in executor.map(choice_errors, jobs, [*shared, executor.share(ranges)], reads_batches=True):
            for t, e in found.errors.items():
                errors.setdefault(t, {}).update(e)
            deltas.update(found.deltas)
            progress.advance()
        for t, e in errors.items():  # every candidate's error known: the least, ties to the earlier method
            choice[t] = min(e, key=lambda m, e=e: (e[m], CHOICES.index(m)))
        for u in readers:  # a single-input unit's trial at the chosen threshold is its measurement there
            if u.name in deciders and len(u.activations) == 1 and (u.activations[0], choice[u.activations[0]]) \
                    in deltas:
                measured[(u.name, p)] = deltas[(u.activations[0], choice[u.activations[0]])]
        ranges = ranges.choose_for(p, choice)
        counts = {m: sum(1 for c in choice.values() if c == m) for m in CHOICES}
        progress.log(f"{p.value.upper()} thresholds: " + ", ".join(f"{n} {m}" for m, n in counts.items() if n)
                     + f" (of {len(choice)} tensors; each chosen at the outputs, on {len(batches)} "
                     + ("batches)" if len(batches) > 1 else "batch)"))
    return ranges, measured
