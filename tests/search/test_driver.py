"""The search driver (search/driver.py): every candidate measured; the Pareto sweep."""


import pytest

from spaces import NOISE
from spaces import toy_space as _options
from trt_mpq.artifacts import Budget
from trt_mpq.errors import ConfigError
from trt_mpq.precision import Plan
from trt_mpq.precision import Precision as P
from trt_mpq.search.driver import search
from trt_mpq.search.milp import solve


def test_search_returns_a_measured_passing_mix_and_logs_every_step():
    opts = _options(NOISE)

    def measure(plan):  # a fake task metric: drops with the predicted noise
        return 0.99 - 10 * opts.predicted_noise(plan)

    result = search(opts, Budget(max_drop=0.002), 0.99, measure)
    assert 0.99 - result.score <= 0.002
    assert result.plan == {"conv1": P.FP16, "conv2": P.INT8, "fc": P.INT8}  # conv1's INT8 noise breaks it
    assert not result.steps[0].passed and len(result.steps) > 1  # all-INT8 was tried, measured, and refused
    assert all(s.passed == (0.99 - s.score <= 0.002) for s in result.steps)
    assert result.steps[0].note == "fastest mix allowed"
    only_fp32 = search(opts, Budget(max_drop=0.0), 0.99, lambda plan: 0.99 - (0.5 if plan else 0.0))
    assert only_fp32.plan == {} and "only all-FP32" in only_fp32.message
    slow = _options(NOISE)
    slow = slow.with_cost(slow.cost.with_measured({(u, p): (1.0 if p is P.FP32 else 9.0) for u in slow.units
                                                   for p in P}, "test"))
    fastest_is_fp32 = search(slow, Budget(max_drop=0.5), 0.99, lambda plan: 0.99)
    assert fastest_is_fp32.plan == {} and "fastest mix" in fastest_is_fp32.message


@pytest.mark.parametrize("gap_us, lowered", [(4.0, True), (9.0, False)])
def test_latencies_within_the_resolution_are_ties_won_by_smaller_weights(gap_us, lowered):
    opts = _options(NOISE)
    fp32 = {u: P.FP32 for u in opts.units}
    measured = {(u, p): 1e-4 for u in opts.units for p in P}
    opts = opts.with_cost(opts.cost.with_measured(measured, "test"))
    boundaries = opts.seconds({u: P.INT8 for u in opts.units}) - opts.seconds(fp32)  # input/output reformats
    for u in opts.units:  # all-INT8 ends up gap_us slower than all-FP32; FP16 is slower still
        measured[(u, P.INT8)] = 1e-4 - (boundaries - gap_us * 1e-6) / len(opts.units)
        measured[(u, P.FP16)] = 2e-4
    opts = opts.with_cost(opts.cost.with_measured(measured, "test"))
    assert opts.cost.resolution == pytest.approx(6e-6)
    assert solve(opts, tie_break=False) == {}  # strictly fastest: all-FP32
    tied = solve(opts)
    assert (tied == {u: P.INT8 for u in opts.units}) == lowered
    assert opts.seconds({**fp32, **tied}) - opts.seconds(fp32) <= opts.cost.resolution + 1e-12
    result = search(opts, Budget(max_drop=1.0), 0.99, lambda plan: 0.99)
    assert result.plan == tied and "smaller weights won" in result.message


def test_mix_never_slower_than_all_fp16_for_a_speedup_budget():
    opts = _options(NOISE)
    fp16 = opts.seconds({u: P.FP16 for u in opts.units})
    result = search(opts, Budget(min_speedup=1.0, speedup_vs=P.FP16), 1.0, lambda plan: 1.0)
    assert opts.seconds({u: result.plan.get(u, P.FP32) for u in opts.units}) <= fp16 * (1 + 1e-9)


@pytest.mark.parametrize("budget, words", [
    (Budget(max_drop=-0.1), "zero or positive"),
    (Budget(max_drop=float("nan")), "finite"),
    (Budget(max_latency_ms=float("inf")), "finite"),
    (Budget(), "give a budget"),
    (Budget(relative=True), "--relative"),
    (Budget(max_latency_ms=1, min_speedup=2), "not both"),
    (Budget(max_size_mb=0), "--max-size-mb"),
])
def test_bad_budgets(budget, words):
    with pytest.raises(ConfigError, match=words):
        budget.check()


def test_pareto_sweep_is_measured_and_marks_the_front():
    from trt_mpq.search.driver import pareto

    opts = _options(NOISE)
    calls = []

    def measure(plan):
        calls.append(plan)
        return 1.0 - 10 * opts.predicted_noise(plan)

    points = pareto(opts, measure, points=8)
    assert len(calls) == len(points)  # every point measured once
    assert points[-1].plan == {} and points[-1].score == 1.0  # all-FP32 is the slowest point
    front = [q for q in points if q.on_front]
    assert front[0] is points[0]  # the fastest point is always on the front
    assert all(a.score < b.score for a, b in zip(front, front[1:], strict=False))  # slower: scores higher
    times = [q.estimated_ms for q in points]
    assert times == sorted(times)


def test_bisection_does_not_measure_a_mix_no_faster_than_one_that_passed(monkeypatch):
    """Above a passing mix's noise budget the solver may return a mix it ties within the latency resolution
    but that is slower by the estimate: measuring it could not change the answer, so it is not measured."""
    import trt_mpq.search.driver as driver

    opts = _options(NOISE)
    everything = Plan.of({u: P.INT8 for u in opts.units})
    fast, slow = Plan.of({"fc": P.INT8}), Plan.of({"conv2": P.FP16})
    assert opts.seconds(slow) >= opts.seconds(fast) > opts.seconds(everything)
    budgets = []

    def fake_solve(space, noise_budget=None, **kw):  # the first bisection step finds the fast mix, later ones the slow
        if noise_budget is None:
            return everything
        budgets.append(noise_budget)
        return fast if len(budgets) == 1 else slow

    monkeypatch.setattr(driver, "solve", fake_solve)
    measured = []

    def measure(plan):
        measured.append(plan)
        return 0.99 if plan in (fast, slow) else 0.5

    result = search(opts, Budget(max_drop=0.01), 0.99, measure)
    assert result.plan == fast
    assert slow not in measured and fast in measured and len(budgets) > 3  # the bisection went on, unmeasured
