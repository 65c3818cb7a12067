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
from ..precision import Plan

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

    The fastest candidate is looked at first. If it is rejected, the safest one is next: if even that fails,
    nothing will, and the looks stop. Otherwise the looks left bisect between the fastest passing and the
    slowest rejected mix: a candidate the search already verified between them, or one ``refine`` finds (the
    search verifies it on its own part first), so the result gets as close to the rejected one as the looks
    allow."""
    ordered = candidates(steps)
    looks: list[Look] = []

    def look_at(step: VerificationStep) -> Look:
        look = check(step.plan, step.estimated_ms)
        looks.append(look)
        spread = f", replicas {min(look.replicas):.4f}-{max(look.replicas):.4f}" if look.replicas else ""
        bound = f", lower bound {look.bound:.4f}" if look.bound is not None else ""
        log(f"confirm: {step.plan.describe()}, "
            f"{look.estimated_ms:.3f} ms -> {look.score:.4f} on the confirm part{spread}{bound} "
            f"({'meets' if look.passed else 'misses'} the budget)")
        return look

    if not ordered or max_looks < 1:
        return None, looks
    first = look_at(ordered[0])
    if first.passed or len(ordered) == 1 and refine is None:
        return (first if first.passed else None), looks
    rejected, best = ordered[0], None
    safest = ordered[-1] if len(ordered) > 1 else None
    if safest is not None and len(looks) < max_looks:
        look = look_at(safest)
        if not look.passed:
            return None, looks
        best = (safest, look)
    while len(looks) < max_looks:
        floor = best[0] if best is not None else None
        inside = [s for s in ordered if (floor is None or s.predicted_noise > floor.predicted_noise)
                  and s.predicted_noise < rejected.predicted_noise and not any(s.plan == x.plan for x in looks)]
        nxt = inside[len(inside) // 2] if inside else (refine(rejected, floor) if refine is not None else None)
        if nxt is None:
            break
        look = look_at(nxt)
        if look.passed:
            best = (nxt, look)
        else:
            rejected = nxt
    return (best[1] if best is not None else None), looks
