#!/usr/bin/env python3
"""INT8 calibration methods side by side: every unit that can run INT8 in INT8 (the rest FP32), one row per
method, on the real models and data of ../shared/models, scored on held-out data against FP32.

  mobilenetv2   calibrated on photos/calib (72 crops), top-1 agreement with FP32 on photos/eval (135 crops)
  digits        calibrated on 256 training digits, top-1 agreement with FP32 on the 450 test digits
  minilm        calibrated on 128 calibration sentences, mean per-sentence embedding cosine on 256 others

Every method's thresholds come from one calibration pass (maxima, then one histogram per tensor), so the rows
differ only in the thresholds. ONNX Runtime without graph optimisations runs the unfused Q/DQ arithmetic that
TensorRT specifies. With --auto the per-unit choice of the analysis (``--calibrator auto``, with bias
correction and MSE weight scales: the defaults) is scored too (it runs the analysis, which takes minutes).
Agreement on n samples has a binomial standard error of about sqrt(p(1-p)/n): 0.03 at 0.85 on 135 photos.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trt_mpq.artifacts import RunFolder, read_json  # noqa: E402
from trt_mpq.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from trt_mpq.data.datasets import load_dataset  # noqa: E402
from trt_mpq.data.images import load_preprocess  # noqa: E402
from trt_mpq.measure.calibration import calibrate  # noqa: E402
from trt_mpq.measure.sensitivity import Settings, analyze  # noqa: E402
from trt_mpq.network.model import load_model  # noqa: E402
from trt_mpq.network.units import find_units  # noqa: E402
from trt_mpq.precision import Plan, Precision  # noqa: E402
from trt_mpq.quant.lower import lower  # noqa: E402
from trt_mpq.quant.ranges import METHODS, Ranges  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
PRE = ROOT / "examples" / "preprocess"
CASES = {
    "mobilenetv2": (SHARED / "mobilenetv2_imagenet.onnx", SHARED / "photos" / "calib", SHARED / "photos" / "eval",
                    PRE / "mobilenetv2_imagenet.json", None, None, "agreement"),
    "digits": (SHARED / "digits_cnn.onnx", f"{SHARED / 'digits.npz'}:input=x_train",
               f"{SHARED / 'digits.npz'}:input=x_test", None, 256, None, "agreement"),
    "minilm": (SHARED / "minilm" / "minilm_l6.onnx", SHARED / "minilm" / "minilm_calib.npz",
               SHARED / "minilm" / "minilm_eval.npz", None, 128, 256, "cosine"),
}


def outputs(backend, model, data, batch=8) -> np.ndarray:
    with backend.compile(model) as session:
        return np.concatenate([session.run(feeds)[model.graph.output[0].name] for feeds in data.batches(batch)])


def score(metric: str, got: np.ndarray, ref: np.ndarray) -> float:
    if metric == "agreement":
        return float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    g, r = got.reshape(len(got), -1).astype(np.float64), ref.reshape(len(ref), -1).astype(np.float64)
    return float(np.mean((g * r).sum(1) / np.sqrt((g * g).sum(1) * (r * r).sum(1))))


def run_case(name: str, with_auto: bool) -> None:
    path, calib, evaluation, pre, n_calib, n_eval, metric = CASES[name]
    model = load_model(path)
    units = find_units(model.proto, model.tensors).units
    pre = load_preprocess(pre) if pre else None
    cal = load_dataset(model, calib, pre, n_calib)
    ev = load_dataset(model, evaluation, pre, n_eval)
    backend = OnnxRuntimeBackend()
    int8 = [u for u in units if Precision.INT8 in u.allowed]
    plan = Plan.of({u.name: Precision.INT8 for u in int8})
    t = time.perf_counter()
    ranges = calibrate(model, int8, cal, backend, "auto", bias_correction=True)
    print(f"\n{name}: {len(int8)} of {len(units)} units INT8, the rest FP32; calibrated on {cal.num_samples}, "
          f"scored on {ev.num_samples} ({metric} with FP32); calibration {time.perf_counter() - t:.1f} s")
    ref = outputs(backend, model.proto, ev)
    plain = replace(ranges, bias_correction=False)
    rows = [(m, plain.using(m)) for m in METHODS]
    if with_auto:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            settings = Settings((Precision.INT8,), "auto", weight_scales="mse", bias_correction=True)
            analysis = analyze(model, cal, backend, tmp, settings)
            chosen = Ranges.from_json(read_json(RunFolder(tmp).ranges, "ranges"))
            print(f"  (auto: analysis of {len(analysis.units)} units in {time.perf_counter() - t:.0f} s)")
    for label, r in list(rows):
        if label == "percentile":
            rows += [(f"{label} + bias correction", replace(r, bias_correction=True)),
                     (f"{label} + MSE weights", replace(r, weight_scales="mse")),
                     (f"{label} + both", replace(r, bias_correction=True, weight_scales="mse"))]
    if with_auto:  # thresholds chosen per unit with both corrections on, as the analysis measures them
        rows += [("auto + both (the default)", chosen),
                 ("auto + bias correction", replace(chosen, weight_scales="max"))]
    for label, r in rows:
        got = outputs(backend, lower(model.proto, units, plan, r), ev)
        print(f"  {label:<28} {score(metric, got, ref):.4f}")


def analysis_cost(name: str) -> None:
    """The whole analysis (INT8 and FP16, every unit) with --calibrator max and auto, timed side by side."""
    path, calib, _, pre, n_calib, _, _ = CASES[name]
    model = load_model(path)
    cal = load_dataset(model, calib, load_preprocess(pre) if pre else None, n_calib)
    seconds = {}
    for calibrator in ("max", "auto"):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            analyze(model, cal, OnnxRuntimeBackend(), tmp,
                    Settings(calibrator=calibrator, weight_scales="mse", bias_correction=True))
            seconds[calibrator] = time.perf_counter() - t
    print(f"\n{name}: analysis (int8 + fp16, every unit) with max {seconds['max']:.0f} s, with auto "
          f"{seconds['auto']:.0f} s: {seconds['auto'] / seconds['max']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--auto", action="store_true", help="also score the per-unit choice of --calibrator auto")
    parser.add_argument("--cost", action="store_true", help="also time the whole analysis with max and with auto")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"needs the real models in {SHARED}", file=sys.stderr)
        return 2
    for name in args.cases:
        run_case(name, args.auto)
        if args.cost:
            analysis_cost(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
