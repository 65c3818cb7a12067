"""The evaluation data, split in two: the part the search selects on, and the part that confirms its choice
(with jittered replicas), plus what that data can and cannot resolve."""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx

from ..artifacts import Confirmation, Look
from ..backends import Backend
from ..data.datasets import Dataset
from ..data.views import cached, split
from ..errors import ConfigError
from ..measure.intervals import DISPLAY_CONFIDENCE
from ..measure.per_sample import Measured
from ..measure.robust import ReplicaScorer
from ..measure.task_metric import Evaluator, TaskMetric, merge_outputs
from ..network.weights import Weights
from ..precision import Plan
from ..search.confirm import MAX_LOOKS, look_level

SPLIT_SEED = 0


class Proof:
    """Scores mixes on the search part (with the surrogate the search decides on) and on the confirm part."""

    def __init__(self, data: Dataset, backend: Backend, metric: TaskMetric, batch: int,
                 metric_fn: Callable | None, replicas: int, confidence: float | None,
                 weights: Weights | None = None) -> None:
        if data.num_samples < 2:
            raise ConfigError("the evaluation data holds 1 sample; the search and the confirm check need at least "
                              "one each (and far more to resolve a budget).")
        self.data = data
        search, confirm, self.search_idx, self.confirm_idx = split(data, 0.5, SPLIT_SEED)
        self.searcher = Evaluator(cached(search), backend, metric, batch, metric_fn, weights)
        self.confirmer = ReplicaScorer(confirm, backend, metric, batch, metric_fn, replicas, weights=weights)
        self.whole = Evaluator(data, backend, metric, batch, metric_fn, weights)
        self.discrete = metric_fn is None and metric in (TaskMetric.ACCURACY, TaskMetric.AGREEMENT)
        self.replicas, self.confidence = replicas, confidence
        self.measured: dict[str, Measured] = {}  # plan digest -> on the search part

    @property
    def name(self) -> str:
        return self.whole.name

    @property
    def runs(self) -> int:
        return self.searcher.runs + self.confirmer.runs

    def fp32(self, model: onnx.ModelProto) -> tuple[float, float, float]:
        """FP32 on all evaluation samples, on the search part and on the confirm part."""
        on_search, on_confirm = self.searcher.fp32_score(model), self.confirmer.fp32_score(model)
        merged = merge_outputs([self.searcher.reference, self.confirmer.base.reference],
                               [self.search_idx, self.confirm_idx], self.data.num_samples)
        return self.whole.score_outputs(merged, merged), on_search, on_confirm

    def search_score(self, plan: Plan, model: onnx.ModelProto) -> float:
        """What the search decides on: the smooth surrogate of a top-1 metric, the metric itself otherwise."""
        self.measured[plan.digest()] = self.searcher.measure(model)
        return self.measured[plan.digest()].smooth

    def look(self, plan: Plan, estimated_ms: float, model: onnx.ModelProto, threshold: float | None) -> Look:
        """The mix on the confirm part and its replicas, held against ``threshold`` (None: always passes)."""
        level = look_level(self.confidence)
        base, replicas = self.confirmer.measure(model, level)
        bound = min(m.low for m in (base, *replicas)) if level is not None else None
        worst = min(m.value for m in (base, *replicas))
        decision = bound if bound is not None else worst
        passed = threshold is None or decision >= threshold - 1e-12
        return Look(plan, estimated_ms, base.value, base.low, base.high, tuple(m.value for m in replicas), bound,
                    passed, base.changed)

    def changed(self, plan: Plan, look: Look | None) -> tuple[str, ...]:
        """Names of the evaluation samples whose top-1 the mix changes, on both parts."""
        found = [self.search_idx[i] for i in getattr(self.measured.get(plan.digest()), "changed", ())]
        found += [self.confirm_idx[i] for i in (look.changed if look is not None else ())]
        return tuple(self.data.name(i) for i in sorted(found))

    def limits(self, allowed: float | None) -> list[str]:
        """What the evaluation data can resolve, said before the search."""
        ns, nc = len(self.search_idx), len(self.confirm_idx)
        out = [f"{self.data.num_samples} evaluation samples: the search selects on {ns}, the result is decided on "
               f"the other {nc} and {self.replicas} jittered replicas of them"]
        if allowed is None or not self.discrete:
            return out
        flip = 1 / nc
        if allowed < flip:
            need = math.ceil(1 / allowed) if allowed > 0 else math.inf
            out.append(f"one changed top-1 among {nc} confirm samples is worth {flip:.4f}, more than the allowed drop "
                       f"{allowed:.4f}: only a mix that changes no confirm sample can pass; resolving this budget "
                       f"takes at least {need} confirm samples ({need * 2} evaluation samples)")
        level = look_level(self.confidence)
        if level is not None and allowed < 1:
            best = (1 - level) ** (1 / nc)  # the lower bound when no sample changes
            need = math.ceil(math.log(1 - level) / math.log(1 - allowed)) if allowed > 0 else math.inf
            if 1 - best > allowed:
                out.append(f"at confidence {self.confidence} ({level:.4f} per look, {MAX_LOOKS} looks at most), even a "
                           f"mix that changes no confirm sample is only bounded at {best:.4f}: the budget needs at "
                           f"least {need} confirm samples, so nothing will be lowered")
        return out

    def confirmation(self, fp32_confirm: float, threshold: float | None, chosen: Look | None, looks: list[Look],
                     plan: Plan, limits: list[str]) -> Confirmation:
        level = look_level(self.confidence)
        return Confirmation(len(self.search_idx), len(self.confirm_idx), self.replicas,
                            self.confirmer.jitter, self.confidence, level,
                            level if level is not None else DISPLAY_CONFIDENCE, fp32_confirm, threshold, chosen,
                            tuple(looks), self.changed(plan, chosen), tuple(limits))
