"""Task metrics on evaluation data: how good a (mixed-precision) model is, higher is better.

- ``accuracy``: top-1 of the first output against the ``labels`` array of the evaluation data.
- ``agreement``: top-1 of the first output agrees with the FP32 model's (FP32 scores 1.0).
- ``cosine``: per-sample cosine similarity of the outputs with FP32, averaged (FP32 scores 1.0).
- ``sqnr``: signal-to-quantization-noise ratio in dB against FP32. FP32 against itself is infinite; it is
  scored as ``SQNR_CEILING`` dB, so ``--max-drop 60`` means "keep at least 40 dB".
- ``--metric-fn package.module:function``: ``function(outputs, labels)`` with ``outputs`` a dict of output name
  to array (all evaluation samples) and ``labels`` the labels array or None; it returns a float.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np
import onnx

from ..backends import Backend, Session
from ..data.datasets import Dataset
from ..errors import ConfigError, TrtMpqError
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
        parts: dict[str, list[np.ndarray]] = {}
        for batch in self.data.batches(self.batch):
            for k, v in session.run(batch).items():
                parts.setdefault(k, []).append(v)
        self.runs += 1
        if not self.data.batchable:  # one sample per run, its outputs without a sample axis: add one
            return {k: np.stack(v) if v[0].ndim else v[0] for k, v in parts.items()}
        return {k: np.concatenate(v, axis=0) if v[0].ndim else v[0] for k, v in parts.items()}

    def _outputs(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        with self.backend.compile(model, self.weights) as session:
            return self.outputs(session)

    def fp32_score(self, fp32: onnx.ModelProto, session: Session | None = None) -> float:
        if self.reference is not None:
            raise RuntimeError("the FP32 reference is computed once")
        self.reference = self.outputs(session) if session is not None else self._outputs(fp32)
        return self._score(self.reference, self.reference)

    def score_outputs(self, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
        """The metric of outputs already computed (all samples of ``data``), against ``reference``."""
        return self._score(outputs, reference)

    def score(self, model: onnx.ModelProto) -> float:
        if self.reference is None:
            raise RuntimeError("call fp32_score first")
        return self._score(self._outputs(model), self.reference)

    def measure(self, model: onnx.ModelProto, confidence: float = DISPLAY_CONFIDENCE,
                one_sided: bool = False, session: Session | None = None) -> Measured:
        """The score with its interval, the search's smooth surrogate, and the samples whose top-1 changed
        (``session``: ``model`` already compiled)."""
        if self.reference is None:
            raise RuntimeError("call fp32_score first")
        outputs = self.outputs(session) if session is not None else self._outputs(model)
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
