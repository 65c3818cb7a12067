#!/usr/bin/env python3
"""Sensitivity analysis: trt-mpq's fast path against the naive way, on the same model, data and backend.

Measured side by side in one process (these machines are shared and noisy, so only ratios mean much):

  naive (as written)    for every (unit, precision): lower the whole model, new session, every sample through
                        the FP32 model and the configured one, compare
  naive (FP32 once)     the same, with the FP32 outputs computed once up front (a stronger baseline)
  trt-mpq               one FP32 pass stores each unit's inputs on disk; per unit, only what lies downstream of
                        it runs, from those stored inputs (trt_mpq.measure.sensitivity.analyze)

All three must agree: relative difference <= 1e-5 for every metric of every (unit, precision), else exit 1.
Then peak memory (max RSS of a fresh process) of the fast path with half and all of the samples.

Default: MobileNetV2 and the 72 calibration photos of ../shared/models (int8 + fp16: 106 measurements).
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

from trt_mpq.backends import open_backend  # noqa: E402
from trt_mpq.backends.onnxrt import OnnxRuntimeOptions  # noqa: E402
from trt_mpq.data.datasets import load_dataset  # noqa: E402
from trt_mpq.data.images import load_preprocess  # noqa: E402
from trt_mpq.measure.sensitivity import Settings, analyze, measure_naive  # noqa: E402
from trt_mpq.network.model import load_model  # noqa: E402
from trt_mpq.network.units import find_units  # noqa: E402
from trt_mpq.precision import Precision  # noqa: E402
from trt_mpq.quant.ranges import Ranges  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
TOLERANCE = 1e-5
RSS_PROBE = (
    "import resource, sys; from trt_mpq.cli import main; code = main(sys.argv[1:]); "
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)


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
    parser.add_argument("--precisions", default="int8,fp16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--ort-opt", default="none", choices=("none", "all"))
    parser.add_argument("--skip-literal", action="store_true", help="skip the slowest baseline (naive as written)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory comparison")
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
          f"configured models; {data.num_samples} samples from {data.info['source']}, batch {args.batch}")
    print(f"backend {backend.describe()}")

    with tempfile.TemporaryDirectory(prefix="trt-mpq-bench-") as tmp:
        t0 = time.perf_counter()
        analysis = analyze(model, data, backend, Path(tmp) / "fast", Settings(precisions, "max", args.batch))
        t_fast = time.perf_counter() - t0
        ranges_file = next((Path(tmp) / "fast").glob(".trt-mpq/*/ranges.json"))
        ranges = Ranges.from_json(json.loads(ranges_file.read_text()))
    fast = {(u.name, p.value): r.to_json() for u in analysis.units for p, r in u.results.items()}

    rows = [("trt-mpq (downstream only, stored FP32 inputs)", t_fast, 0.0, "")]
    t0 = time.perf_counter()
    once = measure_naive(model, units, pairs, ranges, backend, data, args.batch, reference_once=True)
    rows.insert(0, ("naive, FP32 reference computed once", time.perf_counter() - t0, *worst_difference(fast, once)))
    if not args.skip_literal:
        t0 = time.perf_counter()
        literal = measure_naive(model, units, pairs, ranges, backend, data, args.batch, reference_once=False)
        rows.insert(0, ("naive as written (FP32 run per measurement)", time.perf_counter() - t0,
                        *worst_difference(fast, literal)))

    print(f"\n{'method':48s} {'seconds':>9s} {'fast is':>9s}  max relative difference vs trt-mpq")
    ok = True
    for name, seconds, diff, where in rows:
        ratio = seconds / t_fast
        agree = "" if name.startswith("trt-mpq") else f"{diff:.1e} ({where})"
        ok &= diff <= TOLERANCE
        print(f"{name:48s} {seconds:9.1f} {ratio:8.2f}x  {agree}")
    print(f"results agree within {TOLERANCE:g}: {'yes' if ok else 'NO'}")

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
