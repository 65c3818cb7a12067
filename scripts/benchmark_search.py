#!/usr/bin/env python3
"""Budgeted search: trt-mpq's plan against a plain greedy loop, same analysis, data and budget, one run.

  greedy     start from all-FP16; lower units to INT8 one at a time from least to most sensitive (the INT8
             sensitivities of the same analysis); validate the metric on the evaluation data after each step
             and revert a step that breaks the budget
  trt-mpq    integer program over every unit's precision with boundary costs, verified by measurement
             (trt_mpq.plan)

Prints each method's wall time (the shared analysis is timed once), its mix, its measured metric and its
estimated latency on the same cost model. Default: MobileNetV2, photos/calib + photos/eval, agreement within 2 %.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trt_mpq  # noqa: E402
from trt_mpq.backends import open_backend  # noqa: E402
from trt_mpq.commands.opened import open_analysis  # noqa: E402
from trt_mpq.data.datasets import load_dataset  # noqa: E402
from trt_mpq.data.images import load_preprocess  # noqa: E402
from trt_mpq.measure.task_metric import Evaluator  # noqa: E402
from trt_mpq.precision import Plan, Precision  # noqa: E402
from trt_mpq.quant.lower import lower  # noqa: E402
from trt_mpq.search.cost import cost_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"


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

        t0 = time.perf_counter()
        report = trt_mpq.plan(run, trt_mpq.PlanOptions(args.eval, args.preprocess, args.metric,
                                                       budget=trt_mpq.Budget(max_drop=args.max_drop),
                                                       target=args.target))
        t_plan = time.perf_counter() - t0

        opened = open_analysis(run)
        model, units, ranges = opened.model, opened.units, opened.ranges
        data = load_dataset(model, args.eval, load_preprocess(args.preprocess))
        evaluator = Evaluator(data, open_backend("onnxruntime").backend, args.metric, 8)
        cost = cost_model(model.proto, units, args.target, tensors=model.tensors)
        t0 = time.perf_counter()
        fp32 = evaluator.fp32_score(model.proto)
        order = sorted(opened.analysis.units, key=lambda u: u.results[Precision.INT8].severity)
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

    def counts(p) -> str:
        values = list(p.values())
        return (f"{values.count(Precision.INT8)} INT8, {values.count(Precision.FP16)} FP16, "
                f"{len(units) - len(values)} FP32")

    chosen = report.plan
    print(f"model {Path(args.model).name}, {len(units)} units; budget: {args.metric} drop <= {args.max_drop} on "
          f"{data.num_samples} held-out samples; latency estimated on {cost.target.name}, batch 1")
    print(f"shared sensitivity analysis: {t_analysis:.1f} s\n")
    print(f"{'method':10s} {'seconds':>8s} {'validations':>11s}  {'mix':32s} {'measured':>9s} {'est. ms':>8s}")
    print(f"{'greedy':10s} {t_greedy:8.1f} {validations:11d}  {counts(plan):32s} {score:9.4f} "
          f"{cost.plan_seconds(plan) * 1e3:8.3f}")
    print(f"{'trt-mpq':10s} {t_plan:8.1f} {len(report.verification):11d}  {counts(chosen):32s} "
          f"{report.result.score:9.4f} {report.latency.mix_ms:8.3f}")
    all_ms = ", ".join(f"all-{k.value.upper()} {v:.3f}" for k, v in report.latency.all_ms.items())
    print(f"\nreference (estimated): {all_ms} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
