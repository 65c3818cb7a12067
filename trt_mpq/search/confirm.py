"""The confirm check: the search's choice, proven on evaluation samples the search never saw.

The search selects on one part of the evaluation data (and on a smooth surrogate of discrete metrics), so the
score it selected on is biased upward (the winner's curse). The candidates that passed there are checked on the
other part, fastest first: each look scores the mix on that part as given and on jittered replicas (stand-ins
for another backend's rounding), and passes when the worst of them meets the budget (with a confidence level:
when the worst lower bound does). The first mix that passes is the result; a failed look steps back to the next
slower candidate (repair), at most ``max_looks`` times. With a confidence level C each look is held to
1 - (1 - C) / max_looks (Bonferroni), so the chance of accepting a mix that misses the budget stays below 1 - C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..artifacts import Look, VerificationStep
from ..precision import Plan, Precision

MAX_LOOKS = 4


def look_level(confidence: float | None, max_looks: int = MAX_LOOKS) -> float | None:
    """The confidence each look is held to, so that all looks together keep ``confidence``."""
    return None if confidence is None else 1 - (1 - confidence) / max_looks


def candidates(steps: Sequence[VerificationStep]) -> list[VerificationStep]:
    """Distinct passing mixes with lowered units, fastest first."""
    seen, out = set(), []
    for s in sorted((s for s in steps if s.passed and s.plan), key=lambda s: s.estimated_ms):
        if s.plan.digest() not in seen:
            seen.add(s.plan.digest())
            out.append(s)
    return out


def confirm(steps: Sequence[VerificationStep], check: Callable[[Plan, float], Look],
            refine: Callable[[VerificationStep, VerificationStep | None], VerificationStep | None] | None = None,
            max_looks: int = MAX_LOOKS, log: Callable[[str], None] = lambda s: None
            ) -> tuple[Look | None, list[Look]]:
    """The fastest candidate that passes on the confirm part (None: none of the looks did), and every look.

    Candidates are looked at fastest first. After a rejected look, ``refine`` may offer a mix between it and
    the next safer candidate (the search verifies it on its own part first), else the next safer candidate
    is next; once one passes, the looks left go to mixes between it and the closest rejected one, so the
    result gets as close to the rejected as the looks allow (a bisection on the confirm part)."""
    ordered = candidates(steps)
    looks: list[Look] = []
    best: tuple[VerificationStep, Look] | None = None
    rejected: VerificationStep | None = None
    current = ordered[0] if ordered else None
    while current is not None and len(looks) < max_looks:
        look = check(current.plan, current.estimated_ms)
        looks.append(look)
        spread = f", replicas {min(look.replicas):.4f}-{max(look.replicas):.4f}" if look.replicas else ""
        bound = f", lower bound {look.bound:.4f}" if look.bound is not None else ""
        log(f"confirm: {current.plan.count(Precision.INT8)} INT8 + {current.plan.count(Precision.FP16)} FP16 units, "
            f"{look.estimated_ms:.3f} ms -> {look.score:.4f} on the confirm part{spread}{bound} "
            f"({'meets' if look.passed else 'misses'} the budget)")
        if look.passed:
            best = (current, look)
        else:
            rejected = current
        if rejected is None or len(looks) == max_looks or refine is None:
            break
        floor = best[0] if best is not None else \
            next((s for s in ordered if s.predicted_noise < current.predicted_noise), None)
        between = refine(rejected, floor)
        if between is None and best is not None:
            break
        current = between if between is not None else floor
    return (best[1] if best is not None else None), looks
