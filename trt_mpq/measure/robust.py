"""Scores that survive another backend's rounding: a mix scored on data as given and on jittered replicas.

Each replica perturbs every float input at float32 rounding scale (``data.views.jittered``) and has its own
FP32 reference (the FP32 model on the same perturbed inputs), so a replica asks whether the mix's decisions
hold when the arithmetic around them moves by a few rounding steps, as it does on another backend.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from ..backends import Backend
from ..data.datasets import Dataset
from ..data.views import JITTER, cached, jittered
from ..network.weights import Weights
from .intervals import DISPLAY_CONFIDENCE
from .per_sample import Measured
from .task_metric import Evaluator, Fanout, TaskMetric, outputs_on


class ReplicaScorer:
    """Evaluators for the data as given and ``replicas`` jittered copies of it, sharing one backend."""

    def __init__(self, data: Dataset, backend: Backend, metric: TaskMetric, batch: int,
                 metric_fn: Callable | None = None, replicas: int = 4, jitter: float = JITTER,
                 weights: Weights | None = None, fanout: Fanout | None = None) -> None:
        data = cached(data)  # decoded once: every look reads the same samples 1 + replicas times
        self.base = Evaluator(data, backend, metric, batch, metric_fn, weights, fanout)
        self.copies = [Evaluator(jittered(data, k + 1, jitter), backend, metric, batch, metric_fn, weights, fanout)
                       for k in range(replicas)]
        self.jitter = jitter

    @property
    def runs(self) -> int:
        return self.base.runs + sum(e.runs for e in self.copies)

    def fp32_score(self, fp32: onnx.ModelProto) -> float:
        """FP32 references of the data and of every replica; the FP32 score on the data as given."""
        base, *copies = outputs_on([self.base, *self.copies], fp32)
        for e, outputs in zip(self.copies, copies, strict=True):
            e.fp32_score(fp32, outputs=outputs)
        return self.base.fp32_score(fp32, outputs=base)

    def measure(self, model: onnx.ModelProto, confidence: float | None = None
                ) -> tuple[Measured, list[Measured]]:
        """The mix on the data (interval at ``confidence``, one-sided, or the display interval without one)
        and on each replica (one-sided lower bounds when ``confidence`` is given)."""
        level = DISPLAY_CONFIDENCE if confidence is None else confidence
        one_sided = confidence is not None
        base, *copies = outputs_on([self.base, *self.copies], model)
        return (self.base.measure(model, level, one_sided, base),
                [e.measure(model, level, one_sided, outputs) for e, outputs in zip(self.copies, copies, strict=True)])
