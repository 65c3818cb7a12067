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
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import onnx

from ..backends import Backend
from ..data.datasets import Dataset
from ..errors import ConfigError, TrtMpqError
from .output_delta import OutputDelta

SQNR_CEILING = 100.0


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


@dataclass
class Evaluator:
    """Scores models on evaluation data against the FP32 reference, whose outputs are computed once."""

    data: Dataset
    backend: Backend
    metric: TaskMetric | str
    batch: int
    metric_fn: Callable | None = None

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

    def _outputs(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {}
        with self.backend.compile(model) as session:
            for batch in self.data.batches(self.batch):
                for k, v in session.run(batch).items():
                    parts.setdefault(k, []).append(v)
        self.runs += 1
        return {k: np.concatenate(v, axis=0) if v[0].ndim else v[0] for k, v in parts.items()}

    def fp32_score(self, fp32: onnx.ModelProto) -> float:
        self.reference = self._outputs(fp32)
        return self._score(self.reference)

    def score(self, model: onnx.ModelProto) -> float:
        if self.reference is None:
            raise RuntimeError("call fp32_score first")
        return self._score(self._outputs(model))

    def _score(self, outputs: dict[str, np.ndarray]) -> float:
        first = next(iter(outputs))
        if self.metric_fn is not None:
            try:
                value = float(self.metric_fn(outputs, self.data.labels))
            except Exception as exc:  # the user's code: report it in one line
                raise TrtMpqError(f"the metric function raised {type(exc).__name__}: {exc}") from None
            if not math.isfinite(value):
                raise TrtMpqError(f"the metric function returned {value}; it must return a finite number.")
            return value
        if self.metric is TaskMetric.ACCURACY:
            return float(np.mean(np.argmax(outputs[first], axis=-1) == self.data.labels))
        if self.metric is TaskMetric.AGREEMENT:
            return float(np.mean(np.argmax(outputs[first], axis=-1) == np.argmax(self.reference[first], axis=-1)))
        delta = OutputDelta()
        delta.update(self.reference, outputs, self.data.num_samples)
        result = delta.result()
        if self.metric is TaskMetric.COSINE:
            return result["cosine"] if result["cosine"] is not None else -1.0
        sqnr = result["sqnr_db"]
        if result.get("nonfinite"):
            return -SQNR_CEILING
        return SQNR_CEILING if sqnr is None else min(sqnr, SQNR_CEILING)
