#!/usr/bin/env python3
"""Sensitivity analysis: trt-mpq against the naive ways, on the same model, data and backend.

Measured side by side in one process (these machines are shared and noisy, so only ratios mean much):

  quantize_static loop  what a user writes by hand (INT8 only): per layer, ONNX Runtime's quantize_static with
                        that layer alone (calibrating each time), every sample through it and the FP32 model
  naive (as written)    for every (unit, precision): lower the whole model, new session, every sample through
                        the FP32 model and the configured one, compare
  naive (FP32 once)     the same, with the FP32 outputs computed once up front (a stronger baseline)
  trt-mpq exact         --calibrator max --weight-scales max --no-bias-correction: one FP32 pass stores each
                        unit's inputs on disk; per unit, only what lies downstream of it runs, from those stored
                        inputs, with weights shared by every session (trt_mpq.measure.sensitivity.analyze)
  trt-mpq default       the defaults (--calibrator auto: thresholds chosen on each tensor's readers first; MSE
                        weight scales; bias correction)

The naive ways and trt-mpq exact must agree: relative difference <= 1e-5 for every metric of every (unit,
precision), else exit 1. Each trt-mpq run also says where its time went (FP32 pass, thresholds, region
extraction, lowering, compiling sessions, running them). Then peak memory (max RSS of a fresh process) of the
default analysis with half and all of the samples.

Default: MobileNetV2, the 72 calibration photos of ../shared/models, INT8 (53 measurements).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trt_mpq.backends import Backend, open_backend  # noqa: E402
from trt_mpq.backends.onnxrt import OnnxRuntimeOptions  # noqa: E402
from trt_mpq.data.datasets import load_dataset  # noqa: E402
from trt_mpq.data.images import load_preprocess  # noqa: E402
from trt_mpq.measure.sensitivity import Settings, analyze, measure_naive  # noqa: E402
from trt_mpq.network.model import load_model  # noqa: E402
from trt_mpq.network.units import find_units  # noqa: E402
from trt_mpq.precision import Precision  # noqa: E402
from trt_mpq.quant.ranges import Ranges  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from naive_loop import naive_quantize_static  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
TOLERANCE = 1e-5
QUANTIZE_STATIC_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")  # what the hand-written loop quantizes
RSS_PROBE = (
    "import resource, sys; from trt_mpq.cli import main; code = main(sys.argv[1:]); "
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)


class Stopwatch:
    """Seconds per stage of trt-mpq's analysis: the backend's compile and run are timed by a wrapper, the
    pipeline's stages by wrapping the functions the analysis calls (for the benchmark only)."""

    STAGES = (("fp32_pass", "FP32 pass"), ("choose_thresholds", "thresholds (auto)"),
              ("downstream_model", "region extraction"), ("lower", "lowering"))

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def wrap(self, fn, stage: str):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - t0)
        return timed

    def __enter__(self) -> Stopwatch:
        from trt_mpq.measure import jobs, sensitivity, thresholds

        self.saved = []
        for module in (sensitivity, thresholds, jobs):
            for name, stage in self.STAGES:
                if hasattr(module, name):
                    self.saved.append((module, name, getattr(module, name)))
                    setattr(module, name, self.wrap(getattr(module, name), stage))
        return self

    def __exit__(self, *exc) -> None:
        for module, name, fn in self.saved:
            setattr(module, name, fn)

    def shares(self, total: float) -> str:
        nested = ("region extraction", "lowering", "compile", "run")  # inside the stages below
        order = ["compile", "run", "lowering", "region extraction", "FP32 pass", "thresholds (auto)"]
        parts = [f"{k} {self.seconds[k] / total:.0%}" for k in order if self.seconds.get(k)]
        inner = sum(self.seconds.get(k, 0.0) for k in nested)
        return ", ".join(parts) + f" (compile/run/lowering/extraction: {inner / total:.0%} of all, every stage)"


class TimedBackend(Backend):
    """A backend that times its wrapped backend's compile and run into a Stopwatch."""

    def __init__(self, inner: Backend, watch: Stopwatch) -> None:
        self.inner, self.watch = inner, watch
        self.name, self.options_type = inner.name, inner.options_type

    def describe(self) -> str:
        return self.inner.describe()

    def options_json(self) -> dict:
        return self.inner.options_json()

    def compile(self, model, weights=None):
        t0 = time.perf_counter()
        session = self.inner.compile(model, weights)
        self.watch.add("compile", time.perf_counter() - t0)
        run = session.run

        def timed_run(feeds, outputs=None):
            t1 = time.perf_counter()
            try:
                return run(feeds, outputs)
            finally:
                self.watch.add("run", time.perf_counter() - t1)
        session.run = timed_run
        return session


def timed_analysis(model, data, backend, out: Path, settings: Settings):
    """(analysis, seconds, where the time went) of one trt-mpq analysis."""
    with Stopwatch() as watch:
        t0 = time.perf_counter()
        analysis = analyze(model, data, TimedBackend(backend, watch), out, settings)
        seconds = time.perf_counter() - t0
    return analysis, seconds, watch.shares(seconds)


def worst_difference(fast: dict, naive: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for key, slow in naive.items():
        for metric, value in slow.items():
            if not isinstance(value, float):
                continue
            got = fast[key].get(metric)
            if got is None or not math.isfinite(got):
                return math.inf, f"{key} {metric}: missing"
            rel = abs(got - value) / max(abs(value), 1e-30)
            if rel > worst:
                worst, where = rel, f"{key[0]} {key[1]} {metric}"
    return worst, where


def peak_rss_mb(args, samples: int, out: Path) -> float:
    cmd = [sys.executable, "-c", RSS_PROBE, "analyze", args.model, "--out", str(out), "--quiet",
           "--samples", str(samples), "--precisions", args.precisions, "--batch", str(args.batch)]
    cmd += ["--ort-opt", args.ort_opt]
    if args.calib:
        cmd += ["--calib", args.calib]
    if args.preprocess:
        cmd += ["--preprocess", args.preprocess]
    for shape in args.shape:
        cmd += ["--shape", shape]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"memory probe failed: {done.stderr.strip()}")
    kb = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("MAXRSS_KB")))
    return kb / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHARED / "mobilenetv2_imagenet.onnx"))
    parser.add_argument("--calib", default=str(SHARED / "photos" / "calib"))
    parser.add_argument("--preprocess", default=str(ROOT / "examples" / "preprocess" / "mobilenetv2_imagenet.json"))
    parser.add_argument("--shape", action="append", default=[])
    parser.add_argument("--precisions", default="int8")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--ort-opt", default="none", choices=("none", "all"))
    parser.add_argument("--skip-literal", action="store_true", help="skip the slowest baseline (naive as written)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory comparison")
    parser.add_argument("--skip-quantize-static", action="store_true", help="skip the quantize_static loop")
    args = parser.parse_args()
    if not Path(args.model).exists():
        print(f"benchmark: model '{args.model}' not found (the default needs ../shared/models)", file=sys.stderr)
        return 2

    from trt_mpq.network.model import parse_shapes

    model = load_model(args.model, parse_shapes(args.shape))
    data = load_dataset(model, args.calib, load_preprocess(args.preprocess), args.samples)
    backend = open_backend("onnxruntime", (OnnxRuntimeOptions(optimize=args.ort_opt),)).backend
    precisions = Precision.parse_list(args.precisions)
    units = find_units(model.proto).units
    pairs = [(u, p) for u in units for p in precisions if p in u.allowed]
    print(f"model {Path(args.model).name}: {len(units)} units x {len(precisions)} precisions = {len(pairs)} "
          f"configured models; {data.num_samples} samples from {data.source}, batch {args.batch}")
    print(f"backend {backend.describe()}")

    exact = Settings(precisions, "max", args.batch)
    default = Settings(precisions, "auto", args.batch, "mse", True)
    with tempfile.TemporaryDirectory(prefix="trt-mpq-bench-") as tmp:
        analysis, t_exact, where_exact = timed_analysis(model, data, backend, Path(tmp) / "exact", exact)
        ranges_file = next((Path(tmp) / "exact").glob(".trt-mpq/*/ranges.json"))
        ranges = Ranges.from_json(json.loads(ranges_file.read_text()))
        _, t_default, where_default = timed_analysis(model, data, backend, Path(tmp) / "default", default)
    fast = {(u.name, p.value): r.to_json() for u in analysis.units for p, r in u.results.items()}

    rows = [("trt-mpq exact (max thresholds and weights)", t_exact, 0.0, ""),
            ("trt-mpq default (auto, MSE weights, bias corr.)", t_default, 0.0, "")]
    t0 = time.perf_counter()
    once = measure_naive(model, units, pairs, ranges, backend, data, args.batch, reference_once=True)
    rows.insert(0, ("naive, FP32 reference computed once", time.perf_counter() - t0, *worst_difference(fast, once)))
    if not args.skip_literal:
        t0 = time.perf_counter()
        literal = measure_naive(model, units, pairs, ranges, backend, data, args.batch, reference_once=False)
        rows.insert(0, ("naive as written (FP32 run per measurement)", time.perf_counter() - t0,
                        *worst_difference(fast, literal)))
    if Precision.INT8 in precisions and not args.skip_quantize_static:
        layers = [u.name for u in units if Precision.INT8 in u.allowed and u.main_op in QUANTIZE_STATIC_OPS]
        t0 = time.perf_counter()
        naive_quantize_static(model.proto, layers, [data.take(lo, hi) for lo, hi in data.spans(args.batch)])
        rows.insert(0, (f"quantize_static loop ({len(layers)} layers, INT8)", time.perf_counter() - t0, None, ""))

    print(f"\n{'method':48s} {'seconds':>9s} {'exact is':>9s} {'default is':>11s}  max relative difference vs "
          "trt-mpq exact")
    ok = True
    for name, seconds, diff, where in rows:
        agree = "" if name.startswith("trt-mpq") or diff is None else f"{diff:.1e} ({where})"
        ok &= diff is None or diff <= TOLERANCE
        print(f"{name:48s} {seconds:9.1f} {seconds / t_exact:8.2f}x {seconds / t_default:10.2f}x  {agree}")
    print(f"results agree within {TOLERANCE:g}: {'yes' if ok else 'NO'}")
    print(f"\nwhere trt-mpq exact's time went: {where_exact}")
    print(f"where trt-mpq default's time went: {where_default}")

    if not args.skip_memory:
        half = max(1, data.num_samples // 2)
        with tempfile.TemporaryDirectory(prefix="trt-mpq-mem-") as tmp:
            small = peak_rss_mb(args, half, Path(tmp) / "a")
            large = peak_rss_mb(args, data.num_samples, Path(tmp) / "b")
        print(f"\npeak RSS of a fresh 'trt-mpq analyze': {half} samples {small:.0f} MB, {data.num_samples} samples "
              f"{large:.0f} MB (ratio {large / small:.2f}; samples x{data.num_samples / half:.1f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
