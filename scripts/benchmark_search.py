#!/usr/bin/env python3
"""Budgeted search: trt-mpq's plan against a plain greedy loop, same analysis, data and budget, one run.

  greedy     start from all-FP16; lower units to INT8 one at a time from least to most sensitive (the INT8
             sensitivities of the same analysis); validate the metric on the evaluation data after each step
             and revert a step that breaks the budget
  exact      the integer program verified with the exact metric on all evaluation samples, keeping the fastest
             mix that passed once (what `plan` did before the confirm check: it selects on noise)
  trt-mpq    `plan`: the integer program searched on one part of the evaluation data with a smooth surrogate,
             the choice confirmed on the other part and on jittered replicas (trt_mpq.plan)

Prints each method's wall time (the shared analysis is timed once), its mix, the score it reports, how that
mix scores on all evaluation samples and on 10 replicas with +-1e-6 input jitter (the worst of them), and its
estimated latency on the same cost model. Default: MobileNetV2, photos/calib + photos/eval, agreement within 2 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trt_mpq  # noqa: E402
from trt_mpq.backends import open_backend  # noqa: E402
from trt_mpq.commands.opened import open_analysis  # noqa: E402
from trt_mpq.data.datasets import load_dataset  # noqa: E402
from trt_mpq.data.images import load_preprocess  # noqa: E402
from trt_mpq.measure.robust import ReplicaScorer  # noqa: E402
from trt_mpq.measure.task_metric import Evaluator  # noqa: E402
from trt_mpq.precision import Plan, Precision  # noqa: E402
from trt_mpq.quant.lower import lower  # noqa: E402
from trt_mpq.search.cost import cost_model  # noqa: E402
from trt_mpq.search.driver import search  # noqa: E402
from trt_mpq.search.space import DecisionSpace  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"


def noisy(data, replica: int, amplitude: float = 1e-6):
    """The evaluation data with uniform +-amplitude noise on every input value (what scripts/rescore.py does)."""
    def take(lo, hi):
        feeds = data.take_fn(lo, hi)
        rng = np.random.default_rng([replica, lo])
        return {k: (v + rng.uniform(-amplitude, amplitude, v.shape)).astype(v.dtype) for k, v in feeds.items()}

    return dataclasses.replace(data, take_fn=take)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHARED / "mobilenetv2_imagenet.onnx"))
    parser.add_argument("--calib", default=str(SHARED / "photos" / "calib"))
    parser.add_argument("--eval", default=str(SHARED / "photos" / "eval"))
    parser.add_argument("--preprocess", default=str(ROOT / "examples" / "preprocess" / "mobilenetv2_imagenet.json"))
    parser.add_argument("--metric", default="agreement")
    parser.add_argument("--max-drop", type=float, default=0.02)
    parser.add_argument("--target", default="t4")
    args = parser.parse_args()
    if not Path(args.model).exists():
        print(f"benchmark: model '{args.model}' not found (the default needs ../shared/models)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="trt-mpq-search-") as tmp:
        run = Path(tmp)
        t0 = time.perf_counter()
        trt_mpq.analyze(args.model, run, trt_mpq.AnalyzeOptions(calib=args.calib, preprocess=args.preprocess))
        t_analysis = time.perf_counter() - t0

        opened = open_analysis(run)
        model, units, ranges = opened.model, opened.units, opened.ranges
        data = load_dataset(model, args.eval, load_preprocess(args.preprocess))
        backend = open_backend("onnxruntime").backend
        cost = cost_model(model.proto, units, args.target, tensors=model.tensors)

        t0 = time.perf_counter()
        evaluator = Evaluator(data, backend, args.metric, 8)
        fp32 = evaluator.fp32_score(model.proto)
        exact = search(DecisionSpace.from_analysis(opened.analysis, cost), trt_mpq.Budget(max_drop=args.max_drop),
                       fp32, lambda p: evaluator.score(lower(model.proto, units, p, ranges)))
        t_exact = time.perf_counter() - t0

        t0 = time.perf_counter()
        report = trt_mpq.plan(run, trt_mpq.PlanOptions(args.eval, args.preprocess, args.metric,
                                                       budget=trt_mpq.Budget(max_drop=args.max_drop),
                                                       target=args.target))
        t_plan = time.perf_counter() - t0

        t0 = time.perf_counter()
        order = sorted((u for u in opened.analysis.units if Precision.INT8 in u.results),
                       key=lambda u: u.results[Precision.INT8].severity)
        plan = {u.name: Precision.FP16 for u in units}
        score = evaluator.score(lower(model.proto, units, Plan.of(plan), ranges))
        validations = 1
        for u in order:
            trial = {**plan, u.name: Precision.INT8}
            s = evaluator.score(lower(model.proto, units, Plan.of(trial), ranges))
            validations += 1
            if fp32 - s <= args.max_drop:
                plan, score = trial, s
        t_greedy = time.perf_counter() - t0

        replicas = ReplicaScorer(data, backend, args.metric, 8, replicas=10, jitter=1.0)
        replicas.copies = [Evaluator(noisy(data, k), backend, args.metric, 8) for k in range(1, 11)]
        replicas.fp32_score(model.proto)

        def robust(p) -> tuple[float, float]:
            base, copies = replicas.measure(lower(model.proto, units, Plan.of(p), ranges))
            return base.value, min(m.value for m in (base, *copies))

        rows = [("greedy", t_greedy, validations, plan, score), ("exact", t_exact, len(exact.steps), exact.plan,
                                                                 exact.score),
                ("trt-mpq", t_plan, len(report.verification) + len(report.result.confirmation.looks), report.plan,
                 report.result.score)]
        checked = [robust(r[3]) for r in rows]

    def counts(p) -> str:
        values = list(p.values())
        return (f"{values.count(Precision.INT8)} INT8, {values.count(Precision.FP16)} FP16, "
                f"{len(units) - len(values)} FP32")

    print(f"model {Path(args.model).name}, {len(units)} units; budget: {args.metric} drop <= {args.max_drop} on "
          f"{data.num_samples} held-out samples; latency estimated on {cost.target.name}, batch 1")
    print(f"shared sensitivity analysis: {t_analysis:.1f} s\n")
    print(f"{'method':8s} {'seconds':>8s} {'runs':>5s}  {'mix':30s} {'reported':>8s} {'all data':>8s} "
          f"{'worst/10':>8s} {'est. ms':>8s}")
    for (name, seconds, runs, mix, reported), (whole, worst) in zip(rows, checked, strict=True):
        print(f"{name:8s} {seconds:8.1f} {runs:5d}  {counts(mix):30s} {reported:8.4f} {whole:8.4f} {worst:8.4f} "
              f"{cost.plan_seconds(mix) * 1e3:8.3f}")
    print(f"\ntrt-mpq's verification takes {t_plan / t_exact:.2f}x the exact search's time, side by side; 'worst/10': "
          "the worst of the data as given and 10 replicas with uniform +-1e-6 input jitter")
    all_ms = ", ".join(f"all-{k.value.upper()} {v:.3f}" for k, v in report.latency.all_ms.items())
    print(f"\nreference (estimated): {all_ms} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
