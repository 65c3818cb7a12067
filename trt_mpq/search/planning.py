"""The plan stage's choice: the search on one part of the evaluation data, its candidates confirmed on the
other part and its replicas, and the Pareto front when asked. Every measurement is a request answered by the
``Proof`` (``search.proof``); what was answered is kept here, as data, and nowhere else."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import onnx

from ..artifacts import Budget, Compared, Confirmation, Look, Outcome, ParetoPoint
from ..measure.per_sample import Measured
from ..network.units import Unit
from ..precision import Plan, Precision
from .confirm import confirm
from .driver import Search, SearchResult, pareto
from .proof import ConfirmLook, ConfirmScore, Proof, SearchScore
from .space import DecisionSpace


@dataclass(frozen=True)
class Choice:
    """The chosen mix (its search steps carrying their exact scores), the confirm check, the Pareto front."""

    result: SearchResult
    confirmation: Confirmation
    front: tuple[ParetoPoint, ...] = ()


def choose(space: DecisionSpace, budget: Budget, proof: Proof, allowed: float | None, sweep: bool = False,
           log: Callable[[str], None] = lambda s: None) -> Choice:
    """The fastest mix that meets ``budget`` on the search part and holds on the confirm part (``allowed``:
    the drop the budget allows from the FP32 confirm score); with ``sweep`` the Pareto front too."""
    on_search: dict[str, Measured] = {}  # plan digest -> the answer the search decided on

    def measure(p: Plan) -> float:
        if p.digest() not in on_search:
            on_search[p.digest()] = proof.answer(SearchScore(p))
        return on_search[p.digest()].smooth

    searcher = Search(space, budget, proof.fp32_search, measure, log)
    result = searcher.run()
    threshold = None if allowed is None else proof.fp32_confirm - allowed

    def check(p: Plan, ms: float) -> Look:
        return proof.answer(ConfirmLook(p, ms, threshold))

    result, look, looks = confirmed(result, check, searcher.refine, proof.fp32_confirm, allowed,
                                    len(proof.mixes.units), log)
    result = replace(result, steps=[replace(s, exact=on_search[s.plan.digest()].value) for s in result.steps])
    confirmation = proof.confirmation(threshold, look, looks, on_search.get(result.plan.digest()),
                                      proof.limits(allowed))
    front = pareto(space, lambda p: proof.answer(ConfirmScore(p)), log=log) if sweep else []
    return Choice(result, confirmation, tuple(front))


def confirmed(result: SearchResult, check, refine, fp32_confirm: float, allowed: float | None, total_units: int,
              log: Callable[[str], None] = lambda s: None) -> tuple[SearchResult, Look | None, list[Look]]:
    """The search's result after the confirm check: the fastest candidate that holds there, or all-FP32."""
    if result.outcome is Outcome.LATENCY:  # no accuracy budget: the chosen mix's unbiased score, nothing to hold
        look = check(result.plan, result.steps[-1].estimated_ms)
        return replace(result, score=look.score), look, [look]
    if result.outcome is not Outcome.LOWERED:
        return replace(result, score=fp32_confirm), None, []
    look, looks = confirm(result.steps, check, refine, log=log)
    if look is None:
        return replace(result, plan=Plan(), score=fp32_confirm, outcome=Outcome.NOT_CONFIRMED, message=(
            f"{len(looks)} mixes met the budget on the search part but none on the confirm part and its replicas; "
            "nothing was lowered")), None, looks
    message = (f"{len(look.plan)} of {total_units} units lowered; "
               f"measured drop {fp32_confirm - look.score:.4f} on the confirm part, worst replica "
               f"{fp32_confirm - look.worst:.4f}, within {allowed:.4f}")
    missed = sum(1 for x in looks if not x.passed)
    if missed:
        message += f" ({missed} faster candidate(s) missed on the confirm part)"
    elif len(looks) == 1 and "; the strictly fastest" in result.message:
        message += result.message[result.message.index("; the strictly fastest"):]
    return replace(result, plan=look.plan, score=look.score, message=message), look, looks


def compare_shipped(file: onnx.ModelProto, shipped: Mapping[str, float], units: Sequence[Unit], space: DecisionSpace,
                    proof: Proof, chosen: Plan, score: float) -> tuple[Compared, ...]:
    """An already-quantized ``file`` as shipped, the ``chosen`` plan (its confirm ``score``) and all-FP16, side
    by side on the confirm part. The file's INT8 units: those whose every quantized input had a Q/DQ in it;
    latencies come from the plan's cost model, so all three are estimated alike."""
    int8 = Plan.of({u.name: Precision.INT8 for u in units if u.activations and Precision.INT8 in
                    space.choices.get(u.name, ()) and all(t in shipped for t in u.activations)})
    rows = [Compared("as shipped", f"{len(int8)} INT8 units (the file's own Q/DQ and weights)",
                     proof.score_model(file), space.seconds(int8) * 1e3),
            Compared("this plan", chosen.describe() if chosen else "all-FP32", score, space.seconds(chosen) * 1e3)]
    fp16 = Plan.of(space.uniform(Precision.FP16))
    if fp16:
        rows.append(Compared("all-FP16", fp16.describe(), proof.answer(ConfirmScore(fp16)), space.seconds(fp16) * 1e3))
    return tuple(rows)
