"""Task metrics on evaluation data: how good a (mixed-precision) model is, higher is better.

- ``accuracy``: top-1 of the first output against the ``labels`` array of the evaluation data.
- ``agreement``: top-1 of the first output agrees with the FP32 model's (FP32 scores 1.0).
- ``cosine``: per-sample cosine similarity of the outputs with FP32, averaged (FP32 scores 1.0).
- ``sqnr``: signal-to-quantization-noise ratio in dB against FP32. FP32 against itself is infinite; it is
  scored as ``SQNR_CEILING`` dB, so ``--max-drop 60`` means "keep at least 40 dB".
- ``--metric-fn package.module:function``: ``function(outputs, labels)`` with ``outputs`` a dict of output name
  to array (all evaluation samples) and ``labels`` the labels array or None; it returns a float.

A model's outputs on evaluation data come from one session here, or (``Fanout``) from jobs that each run
some of the batches on a cluster's workers, put back in batch order: the same arrays either way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np
import onnx

from ..backends import Backend, Session
from ..data.datasets import Dataset
from ..errors import ConfigError, TrtMpqError
from ..executors import Executor, chunks_for, ordered
from ..network.weights import Weights
from .intervals import DISPLAY_CONFIDENCE
from .output_delta import OutputDelta
from .per_sample import SQNR_CEILING, Measured, smooth_metric, top1, user_metric


class TaskMetric(str, Enum):
    ACCURACY = "accuracy"
    AGREEMENT = "agreement"
    COSINE = "cosine"
    SQNR = "sqnr"


TASK_METRICS = tuple(m.value for m in TaskMetric)


def load_metric_fn(spec: str) -> Callable:
    """Import ``package.module:function`` (explicit opt-in to running the user's code)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"--metric-fn '{spec}' is not package.module:function.")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--metric-fn '{spec}' could not be loaded: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"--metric-fn '{spec}' is not a function.")
    return fn


def merge_outputs(parts: list[dict[str, np.ndarray]], indices: list[list[int]], n: int) -> dict[str, np.ndarray]:
    """Outputs of disjoint parts of a dataset (part k holds the samples ``indices[k]``) in the original order."""
    merged = {}
    for name, first in parts[0].items():
        if not first.ndim:
            merged[name] = first
            continue
        out = np.empty((n, *first.shape[1:]), first.dtype)
        for part, idx in zip(parts, indices, strict=True):
            out[idx] = part[name]
        merged[name] = out
    return merged


def _call_user(fn: Callable, outputs, labels):
    """The user's metric: a finite number, or one finite value per sample (an array); errors in one line."""
    try:
        value = fn(outputs, labels)
        value = np.asarray(value, dtype=np.float64) if np.ndim(value) else float(value)
    except Exception as exc:  # the user's code: report it in one line
        raise TrtMpqError(f"the metric function raised {type(exc).__name__}: {exc}") from None
    if not np.all(np.isfinite(value)):
        raise TrtMpqError(f"the metric function returned {value}; it must return a finite number.")
    return value


@dataclass
class Evaluator:
    """Scores models on evaluation data against the FP32 reference, whose outputs are computed once."""

    data: Dataset
    backend: Backend
    metric: TaskMetric | str
    batch: int
    metric_fn: Callable | None = None
    weights: Weights | None = None  # the arrays behind the placeholders of the models it scores
    fanout: Fanout | None = None  # where its batches run (None: one session in this process)

    def __post_init__(self) -> None:
        if self.metric not in TASK_METRICS:
            raise ConfigError(f"--metric '{self.metric}' is not one of {', '.join(TASK_METRICS)}.")
        self.metric = TaskMetric(self.metric)
        if self.metric is TaskMetric.ACCURACY and self.metric_fn is None and self.data.labels is None:
            raise ConfigError("--metric accuracy needs labels: add an array named 'labels' to the evaluation "
                              ".npz, or use --metric agreement.")
        self.reference: dict[str, np.ndarray] | None = None
        self.runs = 0

    @property
    def name(self) -> str:
        return "custom" if self.metric_fn is not None else self.metric.value

    def outputs(self, session: Session) -> dict[str, np.ndarray]:
        """Every output of every sample, from a compiled session (one may serve several evaluators)."""
        return self.assemble([session.run(batch) for batch in self.data.batches(self.batch)])

    def assemble(self, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Every output of every sample, from the outputs of each batch in order."""
        parts: dict[str, list[np.ndarray]] = {}
        for outputs in batches:
            for k, v in outputs.items():
                parts.setdefault(k, []).append(v)
        self.runs += 1
        if not self.data.batchable:  # one sample per run, its outputs without a sample axis: add one
            return {k: np.stack(v) if v[0].ndim else v[0] for k, v in parts.items()}
        return {k: np.concatenate(v, axis=0) if v[0].ndim else v[0] for k, v in parts.items()}

    def _outputs(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        return outputs_on([self], model)[0]

    def fp32_score(self, fp32: onnx.ModelProto, session: Session | None = None,
                   outputs: dict[str, np.ndarray] | None = None) -> float:
        if self.reference is not None:
            raise RuntimeError("the FP32 reference is computed once")
        self.reference = outputs if outputs is not None else \
            self.outputs(session) if session is not None else self._outputs(fp32)
        return self._score(self.reference, self.reference)

    def score_outputs(self, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
        """The metric of outputs already computed (all samples of ``data``), against ``reference``."""
        return self._score(outputs, reference)

    def score(self, model: onnx.ModelProto) -> float:
        if self.reference is None:
            raise RuntimeError("call fp32_score first")
        return self._score(self._outputs(model), self.reference)

    def measure(self, model: onnx.ModelProto, confidence: float = DISPLAY_CONFIDENCE,
                one_sided: bool = False, outputs: dict[str, np.ndarray] | None = None) -> Measured:
        """The score with its interval, the search's smooth surrogate, and the samples whose top-1 changed
        (``outputs``: ``model``'s, already computed)."""
        if self.reference is None:
            raise RuntimeError("call fp32_score first")
        outputs = outputs if outputs is not None else self._outputs(model)
        n = self.data.num_samples
        if self.metric_fn is not None:
            return user_metric(self.metric_fn, outputs, self.data.labels, n, confidence, one_sided, _call_user)
        if self.metric in (TaskMetric.COSINE, TaskMetric.SQNR):
            if any(not np.all(np.isfinite(v)) for v in outputs.values() if np.issubdtype(v.dtype, np.floating)):
                worst = -1.0 if self.metric is TaskMetric.COSINE else -SQNR_CEILING
                return Measured(worst, worst, worst, worst, n)
            return smooth_metric(self.metric.value, outputs, self.reference, n, confidence, one_sided)
        first = next(iter(outputs))
        got, ref = outputs[first], self.reference[first]
        labels = self.data.labels if self.metric is TaskMetric.ACCURACY else None
        measured, correct = top1(got, ref, labels, confidence, one_sided)
        _, fp32_correct = top1(ref, ref, labels, confidence, one_sided)
        changed = tuple(int(i) for i in np.nonzero(correct != fp32_correct)[0])
        return replace(measured, changed=changed)

    def _score(self, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
        first = next(iter(outputs))
        if self.metric_fn is not None:
            values = _call_user(self.metric_fn, outputs, self.data.labels)
            return float(np.mean(values)) if isinstance(values, np.ndarray) else values
        if self.metric is TaskMetric.ACCURACY:
            return float(np.mean(np.argmax(outputs[first], axis=-1) == self.data.labels))
        if self.metric is TaskMetric.AGREEMENT:
            return float(np.mean(np.argmax(outputs[first], axis=-1) == np.argmax(reference[first], axis=-1)))
        delta = OutputDelta()
        delta.update(reference, outputs, self.data.num_samples)
        result = delta.result()
        if self.metric is TaskMetric.COSINE:
            return result.cosine if result.cosine is not None else -1.0
        sqnr = result.sqnr_db
        if result.nonfinite:
            return -SQNR_CEILING
        return SQNR_CEILING if sqnr is None else min(sqnr, SQNR_CEILING)


class Fanout:
    """Evaluations spread over an executor's workers: the backend and the weights are sent once, each data
    set once, each model once per evaluation; every job runs some consecutive batches of one data set."""

    def __init__(self, executor: Executor, backend: Backend, weights: Weights | None) -> None:
        self.executor = executor
        executor.use_gpus(backend.capabilities.gpu)
        self.shared = [executor.share(backend), executor.share(weights)]
        self._data: dict[int, tuple[Dataset, object]] = {}

    def data(self, ds: Dataset):
        if id(ds) not in self._data:
            self._data[id(ds)] = (ds, self.executor.share(ds))  # the data set kept alive with its id
        return self._data[id(ds)][1]


@dataclass(frozen=True)
class OutputsJob:
    """Some consecutive batches of one data set (``data``: its place among the shared values)."""

    data: int
    spans: tuple[tuple[int, int], ...]

    @property
    def parts(self) -> int:
        return len(self.spans)


def outputs_of(job: OutputsJob, backend: Backend, weights: Weights | None, model: onnx.ModelProto,
               *datasets: Dataset) -> list[dict[str, np.ndarray]]:
    """The outputs of each batch of the job (a pure function: it runs anywhere)."""
    data = datasets[job.data]
    with backend.compile(model, weights) as session:
        return [session.run(data.take(lo, hi)) for lo, hi in job.spans]


@dataclass(frozen=True)
class SpanJob:
    """One batch (samples lo..hi-1) of one data set, on a session every job shares (jobs in this process)."""

    data: int
    lo: int
    hi: int


def span_outputs(job: SpanJob, session: Session, *datasets: Dataset) -> dict[str, np.ndarray]:
    return session.run(datasets[job.data].take(job.lo, job.hi))


def outputs_on(evaluators: Sequence[Evaluator], model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    """``model``'s outputs on each evaluator's data: one session here (one build serves them all; with jobs on
    threads, several batches at a time), or jobs on the workers of the first evaluator's ``fanout``."""
    fanout = evaluators[0].fanout
    first = evaluators[0]
    if fanout is None or fanout.executor.workers <= 1:
        with first.backend.compile(model, first.weights) as session:
            return [e.outputs(session) for e in evaluators]
    spans = [e.data.spans(e.batch) for e in evaluators]
    if fanout.executor.in_process:  # one session, several of its batches at a time (its runs are thread-safe)
        jobs: list = [SpanJob(k, lo, hi) for k, s in enumerate(spans) for lo, hi in s]
        with first.backend.compile(model, first.weights) as session:
            done = [[outputs] for outputs in ordered(fanout.executor.map(
                span_outputs, jobs, [session, *(e.data for e in evaluators)]), len(jobs))]
    else:  # each job compiles the model where it runs and runs some consecutive batches
        pieces = chunks_for(fanout.executor.workers, len(evaluators), max(len(s) for s in spans))
        jobs = []
        for k, s in enumerate(spans):
            size = -(-len(s) // min(pieces, len(s)))
            jobs += [OutputsJob(k, tuple(s[lo:lo + size])) for lo in range(0, len(s), size)]
        shared = [*fanout.shared, fanout.executor.share(model), *(fanout.data(e.data) for e in evaluators)]
        done = ordered(fanout.executor.map(outputs_of, jobs, shared), len(jobs))
    batches: list[list[dict[str, np.ndarray]]] = [[] for _ in evaluators]
    for job, outputs in zip(jobs, done, strict=True):
        batches[job.data] += outputs
    return [e.assemble(b) for e, b in zip(evaluators, batches, strict=True)]
