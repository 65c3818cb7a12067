"""``--calibrator auto``: one threshold per quantized tensor, decided before any sensitivity is measured.

Every candidate threshold of a tensor (max, percentile, entropy, mse: all from the FP32 pass's histogram;
methods within 1 % count once) is tried on the first unit in graph order that reads the tensor: that unit
alone in the quantized precision (its weight quantized, of its inputs only this tensor), the network
downstream of it run from the stored FP32 frontier on ``CHOOSE_BATCHES`` batches (each holds samples from
all over the data; at most a quarter of them, at least one), its outputs compared with the FP32 reference.
The candidate with the least error (each sample's normalised squared error, averaged) wins; a tie goes to the
earlier method of ``CHOICES`` (max first; a Q/DQ file's own "shipped" threshold last). Where the methods
disagree widely (``WIDE``), INT8 tries up to ``REFINE_ROUNDS`` more thresholds between the best and its
neighbours (``refined_threshold``), recorded as the method "refined" when one of them wins. The decision depends on
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
from ..quant.ranges import CHOICES, REFINED, Ranges
from .output_delta import BatchDelta, OutputDelta

# Batches each candidate runs on (8 samples at the default batch). The analysis's batches each hold samples from
# all over the data (``data.views.spread_batches``), so one stands for the whole. Against two batches of
# consecutive samples at both ends of the data (the choice until the eighth session), side by side: all-INT8
# MobileNetV2 agreement 0.926 vs 0.889, MiniLM cosine 0.9875 vs 0.9857, at about half the cost (docs/results.md).
CHOOSE_BATCHES = 1
CHOSEN_BY = (Precision.INT8, Precision.FP8)  # the precisions whose activation thresholds auto chooses
# INT8 thresholds are searched between the methods' candidates too: MiniLM's GELU outputs have candidates 2 to 25
# apart (entropy 2.1, percentile 4.2, mse 18.3, max 24.8) and the best threshold lies between them. FP8 keeps
# its range by its floating spacing: its methods' candidates are enough.
REFINED_FOR = (Precision.INT8,)
REFINE_ROUNDS = 2  # at most; each round one more trial per tensor, next to the best so far, while the last gained
WIDE = 3.0  # ... where the methods' candidates span at least this ratio (MobileNetV2's ReLU6 outputs: 2-2.4, and
# thresholds between them fitted 16 samples, not the data: all-INT8 logit SQNR 0.2 dB lower on the eval photos)
CLOSE = 1.15  # a threshold within 15 % of one tried is not tried
ORDER = (*CHOICES, REFINED)  # ties go to the earlier


def spread(num_batches: int, k: int) -> list[int]:
    """``k`` batch indices spread evenly over the data (data sets are often sorted: by class, by source)."""
    if num_batches <= k:
        return list(range(num_batches))
    return sorted({int(round(i * (num_batches - 1) / (k - 1))) for i in range(k)}) if k > 1 else [0]


def choice_batches(num_batches: int) -> list[int]:
    """The batches candidates run on: ``CHOOSE_BATCHES`` spread over the batches, never more than a quarter of
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


def refined_threshold(tried: Mapping[float, float], best: float) -> float | None:
    """One more threshold worth trying next to ``best`` (``tried``: threshold -> error): the least of the
    parabola through the best and its two neighbours in (log threshold, log error), kept between the
    geometric midpoints toward them, or the midpoint toward the one neighbour of a best at an end; None where
    that point lies within ``CLOSE`` of a threshold already tried (nothing left to gain between them)."""
    pts = sorted((np.log(t), np.log(max(e, 1e-30))) for t, e in tried.items() if t > 0 and np.isfinite(e))
    xs = [x for x, _ in pts]
    if np.log(best) not in xs or len(pts) < 2:
        return None
    i = xs.index(np.log(best))
    lo, hi = pts[i - 1] if i else None, pts[i + 1] if i + 1 < len(pts) else None
    x1, y1 = pts[i]
    if lo and hi:
        (x0, y0), (x2, y2) = lo, hi
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)  # < 0 where the best lies below both (Brent's step)
        x = x1 - 0.5 * ((x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)) / den if den < 0 else x1
        x = min(max(x, (x0 + x1) / 2), (x1 + x2) / 2)
        if abs(x - x1) < np.log(CLOSE):  # a flat best: split the wider side instead
            x = (x1 + x0) / 2 if x1 - x0 > x2 - x1 else (x1 + x2) / 2
    else:
        x = (x1 + (lo or hi)[0]) / 2
    return None if min(abs(x - t) for t in xs) < np.log(CLOSE) else float(np.exp(x))


def _best(tried: Mapping[float, tuple[float, str]]) -> tuple[float, str]:
    """The threshold with the least error (threshold -> (error, method)), ties to the earlier method."""
    th = min(tried, key=lambda t: (tried[t][0], ORDER.index(tried[t][1].split(".")[0])))
    return th, tried[th][1]


@dataclass(frozen=True)
class _Trials:
    """Runs candidate trials of one precision, each tensor on the unit that decides it, through the executor."""

    precision: Precision
    decider: Mapping[str, Unit]  # tensor -> its first reader in graph order
    downstream: Callable[[Unit], onnx.ModelProto]
    batches: tuple[int, ...]
    outputs: tuple[str, ...]
    executor: Executor
    shared: Sequence
    progress: Progress

    def run(self, options: Mapping[str, tuple[str, ...]], ranges: Ranges, what: str) -> Trials:
        by_unit: dict[str, tuple[Unit, dict[str, tuple[str, ...]]]] = {}
        for t, methods in options.items():
            by_unit.setdefault(self.decider[t].name, (self.decider[t], {}))[1][t] = methods
        whole = [ChoiceJob(self.downstream(u), u, self.precision, opts, self.batches, self.outputs)
                 for u, opts in by_unit.values()]
        pieces = chunks_for(self.executor.workers, len(whole), max((j.parts for j in whole), default=1))
        jobs = [piece for j in whole for piece in j.split(pieces)]  # one per unit in one process
        self.progress.start(f"{self.precision.value.upper()} thresholds{what} (--calibrator auto)", len(jobs))
        found = Trials({}, {})
        for _, part in self.executor.map(choice_errors, jobs, [*self.shared, self.executor.share(ranges)],
                                         reads_batches=True):
            for t, e in part.errors.items():
                found.errors.setdefault(t, {}).update(e)
            found.deltas.update(part.deltas)
            self.progress.advance()
        return found


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
        decider: dict[str, Unit] = {}  # tensor -> the unit that decides it: its first reader in graph order
        for u in readers:
            for t in u.activations:
                if t not in choice:
                    decider.setdefault(t, u)

        trials = _Trials(p, decider, downstream, batches, tuple(outputs), executor, shared, progress)
        found = trials.run({t: options[t] for t in decider}, ranges, "")
        tried = {t: {ranges.candidates[t][m]: (e, m) for m, e in errs.items()} for t, errs in found.errors.items()}
        searching = [t for t in tried if p in REFINED_FOR and max(ranges.candidates[t].values())
                     >= WIDE * min(ranges.candidates[t].values())]
        for k in range(REFINE_ROUNDS):
            nxt = {t: x for t in searching
                   if (x := refined_threshold({th: e for th, (e, _) in tried[t].items()}, _best(tried[t])[0]))}
            if not nxt:
                break
            name = f"{REFINED}.{k + 1}"  # one name per round: each round's trials keep their own deltas
            more = trials.run({t: (name,) for t in nxt}, ranges.with_candidate(name, nxt),
                              f", between candidates (round {k + 1})")
            found.deltas.update(more.deltas)
            for t, e in more.errors.items():
                tried[t][nxt[t]] = (e[name], name)
            searching = [t for t in nxt if _best(tried[t])[0] == nxt[t]]  # a search goes on while it gains
        refined: dict[str, float] = {}
        for t, pts in tried.items():  # every candidate's error known: the least, ties to the earlier method
            th, m = _best(pts)
            choice[t] = m.split(".")[0]
            if choice[t] == REFINED:
                refined[t] = th
            if len(decider[t].activations) == 1 and (t, m) in found.deltas:
                measured[(decider[t].name, p)] = found.deltas[(t, m)]  # its trial at the choice: its measurement
        ranges = ranges.with_candidate(REFINED, refined).choose_for(p, choice)
        counts = {m: sum(1 for c in choice.values() if c == m) for m in ORDER}
        progress.log(f"{p.value.upper()} thresholds: " + ", ".join(f"{n} {m}" for m, n in counts.items() if n)
                     + f" (of {len(choice)} tensors; each chosen at the outputs, on {len(batches)} "
                     + ("batches)" if len(batches) > 1 else "batch)"))
    return ranges, measured
