"""The plan's measurements as data: what a mix is scored on, asked as typed requests and answered by a
``Proof``, which holds the evaluation data split in two (the part the search selects on, the part that confirms
its choice, with jittered replicas), their FP32 references, and what that data can and cannot resolve.

Every request is a frozen, picklable record and every answer depends on the request and on data fixed when the
``Proof`` is made (its FP32 references are computed then), never on what was asked before: the same requests
can be answered in any order, or elsewhere, with the same results. With a ``Fanout`` each answer's batches
run on a cluster's workers (``measure.task_metric.outputs_on``), with the same outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from ..artifacts import Confirmation, Look
from ..backends import Backend
from ..data.datasets import Dataset
from ..data.views import cached, split
from ..errors import ConfigError
from ..measure.intervals import DISPLAY_CONFIDENCE
from ..measure.per_sample import Measured
from ..measure.robust import ReplicaScorer
from ..measure.task_metric import Evaluator, Fanout, TaskMetric, merge_outputs
from ..network.units import Unit
from ..network.weights import Weights
from ..precision import Plan, Precision
from ..quant.lower import lower
from ..quant.ranges import Ranges
from .confirm import MAX_LOOKS, look_level

SPLIT_SEED = 0


@dataclass(frozen=True)
class Mixes:
    """How a plan becomes the model that is scored: the analysed model lowered by the plan, its weights kept
    in one bank (only the lowered units' weights are filled into the graph)."""

    skeleton: onnx.ModelProto  # the FP32 model with weight placeholders (``network.weights``)
    units: tuple[Unit, ...]
    ranges: Ranges
    weights: Weights

    def model(self, plan: Plan) -> onnx.ModelProto:
        lowered = (n for u in self.units if plan.precision(u.name) is not Precision.FP32 for n in u.nodes)
        return lower(self.weights.fill_for(self.skeleton, lowered), self.units, plan, self.ranges)


@dataclass(frozen=True)
class SearchScore:
    """A candidate mix on the search part: its score, the smooth surrogate the search decides on, and the
    samples whose top-1 it changes (a ``Measured``)."""

    plan: Plan


@dataclass(frozen=True)
class ConfirmLook:
    """A candidate mix on the confirm part and its replicas, held against ``threshold`` (None: always passes)."""

    plan: Plan
    estimated_ms: float
    threshold: float | None


@dataclass(frozen=True)
class ConfirmScore:
    """A mix on the confirm part as given, the metric alone (a Pareto point)."""

    plan: Plan


Request = SearchScore | ConfirmLook | ConfirmScore


class Proof:
    """Answers the plan's requests: mixes scored on the search part (with the surrogate the search decides on)
    and on the confirm part with its replicas, against FP32 references computed once, when it is made."""

    def __init__(self, data: Dataset, backend: Backend, metric: TaskMetric, batch: int,
                 metric_fn: Callable | None, replicas: int, confidence: float | None, mixes: Mixes,
                 fanout: Fanout | None = None) -> None:
        if data.num_samples < 2:
            raise ConfigError("the evaluation data holds 1 sample; the search and the confirm check need at least "
                              "one each (and far more to resolve a budget).")
        self.data, self.mixes = data, mixes
        weights = mixes.weights
        search, confirm, self.search_idx, self.confirm_idx = split(data, 0.5, SPLIT_SEED)
        self.searcher = Evaluator(cached(search), backend, metric, batch, metric_fn, weights, fanout)
        self.confirmer = ReplicaScorer(confirm, backend, metric, batch, metric_fn, replicas, weights=weights,
                                       fanout=fanout)
        self.whole = Evaluator(data, backend, metric, batch, metric_fn, weights)
        self.discrete = metric_fn is None and metric in (TaskMetric.ACCURACY, TaskMetric.AGREEMENT)
        self.replicas, self.confidence = replicas, confidence
        self.fp32_search = self.searcher.fp32_score(mixes.skeleton)
        self.fp32_confirm = self.confirmer.fp32_score(mixes.skeleton)
        merged = merge_outputs([self.searcher.reference, self.confirmer.base.reference],
                               [self.search_idx, self.confirm_idx], data.num_samples)
        self.fp32_score = self.whole.score_outputs(merged, merged)  # FP32 on every evaluation sample

    @property
    def name(self) -> str:
        return self.whole.name

    @property
    def runs(self) -> int:
        return self.searcher.runs + self.confirmer.runs

    def answer(self, request: Request) -> Measured | Look | float:
        """The answer to one of the plan's requests (``SearchScore``: a ``Measured``; ``ConfirmLook``: a
        ``Look``; ``ConfirmScore``: the metric)."""
        if not isinstance(request, SearchScore | ConfirmLook | ConfirmScore):
            raise TypeError(f"not a plan request: {request!r}")
        model = self.mixes.model(request.plan)
        if isinstance(request, SearchScore):
            return self.searcher.measure(model)
        if isinstance(request, ConfirmLook):
            return self.look(request.plan, request.estimated_ms, model, request.threshold)
        return self.confirmer.base.score(model)

    def score_model(self, model: onnx.ModelProto) -> float:
        """Any model with the analysed model's inputs and outputs (an already-quantized file as shipped) on the
        confirm part, the metric alone."""
        return self.confirmer.base.score(model)

    def look(self, plan: Plan, estimated_ms: float, model: onnx.ModelProto, threshold: float | None) -> Look:
        """``model`` (the mix ``plan``) on the confirm part and its replicas, held against ``threshold``."""
        level = look_level(self.confidence)
        base, replicas = self.confirmer.measure(model, level)
        bound = min(m.low for m in (base, *replicas)) if level is not None else None
        worst = min(m.value for m in (base, *replicas))
        decision = bound if bound is not None else worst
        passed = threshold is None or decision >= threshold - 1e-12
        return Look(plan, estimated_ms, base.value, base.low, base.high, tuple(m.value for m in replicas), bound,
                    passed, base.changed)

    def changed(self, on_search: Measured | None, look: Look | None) -> tuple[str, ...]:
        """Names of the evaluation samples whose top-1 a mix changes, from its answers on both parts."""
        found = [self.search_idx[i] for i in (on_search.changed if on_search is not None else ())]
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

    def confirmation(self, threshold: float | None, chosen: Look | None, looks: Sequence[Look],
                     on_search: Measured | None, limits: list[str]) -> Confirmation:
        """The record of the confirm check (``on_search``: the chosen mix's answer on the search part)."""
        level = look_level(self.confidence)
        return Confirmation(len(self.search_idx), len(self.confirm_idx), self.replicas,
                            self.confirmer.jitter, self.confidence, level,
                            level if level is not None else DISPLAY_CONFIDENCE, self.fp32_confirm, threshold, chosen,
                            tuple(looks), self.changed(on_search, chosen), tuple(limits))
