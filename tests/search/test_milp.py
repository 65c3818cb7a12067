"""The exact choice (search/milp.py): optimal under its budgets, checked by brute force."""

import itertools

import pytest

from spaces import NOISE, TIMES
from spaces import toy_space as _options
from trt_mpq.precision import Precision as P
from trt_mpq.search import milp
from trt_mpq.search.milp import solve


@pytest.mark.parametrize("joint_limit", [milp.JOINT_LIMIT, 0], ids=["joint", "compact"])
def test_milp_matches_brute_force(monkeypatch, joint_limit):
    # both formulations of a crossing's cost (one variable per combination, or the compact rule) are exact
    monkeypatch.setattr(milp, "JOINT_LIMIT", joint_limit)
    opts = _options(NOISE)
    assert any(c.writer and c.readers for c in opts.cost.crossings)
    for budget in (0.0, 2e-6, 1e-4, 2e-4, 1e-2, 1.0):
        best = None
        for combo in itertools.product([P.FP32, P.FP16, P.INT8], repeat=3):
            plan = dict(zip(opts.units, combo, strict=True))
            if opts.predicted_noise(plan) <= budget + 1e-15:
                t = opts.seconds(plan)
                best = t if best is None or t < best else best
        got = solve(opts, noise_budget=budget)
        full = {u: got.get(u, P.FP32) for u in opts.units}
        assert opts.predicted_noise(full) <= budget + 1e-12
        assert opts.seconds(full) == pytest.approx(best, rel=1e-9)


def test_noise_far_below_solver_tolerance_is_respected():
    tiny = {k: v * 1e-4 for k, v in NOISE.items()}  # FP16-like noise of 1e-10..1e-6
    opts = _options(tiny)
    assert solve(opts, noise_budget=0.0) == {}
    plan = solve(opts, noise_budget=2e-10)
    assert opts.predicted_noise(plan) <= 2e-10


def test_latency_budget_minimises_noise_and_infeasible_is_none():
    opts = _options(NOISE)
    fastest = opts.seconds({u: P.INT8 for u in opts.units})
    plan = solve(opts, seconds_budget=fastest * 1.0000001, minimise="noise")
    assert opts.seconds({u: plan.get(u, P.FP32) for u in opts.units}) <= fastest * 1.0000001
    assert solve(opts, seconds_budget=fastest / 10) is None


def test_a_tie_never_hands_back_a_mix_slower_than_all_fp16():
    # INT8 a hair slower than FP16 (well within the 6 us resolution): smaller weights must not win over speed
    same = _options(NOISE, {P.FP32: 1e-3, P.FP16: 5e-4, P.INT8: 5e-4})
    borders = same.seconds(same.uniform(P.INT8)) - same.seconds(same.uniform(P.FP16))
    space = _options(NOISE, {P.FP32: 1e-3, P.FP16: 5e-4, P.INT8: 5e-4 + (2e-6 - borders) / 3})  # 2 us slower
    fp16 = space.seconds(space.uniform(P.FP16))
    chosen = solve(space, noise_budget=1.0)
    assert space.seconds(chosen) <= fp16 + 1e-12
    assert space.seconds(space.uniform(P.INT8)) > fp16  # the tie the old rule broke towards INT8


def test_the_tie_break_is_skipped_only_where_the_caller_discards_the_mix():
    # conv2 gains a lot in INT8, conv1 loses 10 us (1.6 us net of the borders it saves, within the 6 us
    # resolution): the strict optimum keeps conv1 in FP16, the tie-break takes its smaller INT8 weights
    times = {(u, p): t for u in ("conv1", "conv2", "fc") for p, t in TIMES.items()}
    times[("conv1", P.INT8)] = times[("conv1", P.FP16)] + 10e-6
    times[("conv2", P.INT8)] = times[("conv2", P.FP16)] / 2
    space = _options(NOISE, times)
    strict = solve(space, noise_budget=1.0, tie_break=False)
    tied = solve(space, noise_budget=1.0)
    assert strict["conv1"] is P.FP16 and tied["conv1"] is P.INT8 and space.seconds(tied) > space.seconds(strict)
    at = space.seconds(strict)
    assert solve(space, noise_budget=1.0, no_tie_break_from_s=at) == strict  # discarded anyway: one solve
    assert solve(space, noise_budget=1.0, no_tie_break_from_s=at * 1.001) == tied
