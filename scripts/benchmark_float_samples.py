#!/usr/bin/env python3
"""FP16 sensitivities on every calibration sample and on the default subset (``--float-samples auto``: a
spread quarter of the batches, at least 16 samples), side by side in one run: how alike the two rankings are
and what the subset saves.

  mobilenetv2   72 calibration photos (auto: 24 of them)
  minilm        256 calibration sentences (auto: 64 of them)

Prints, per model: the time of each FP16-only analysis, the Spearman correlation of the two per-unit NMSE
rankings, how many of the 10 most sensitive units both share, and the largest ratio between a unit's NMSE
on the subset and on all samples (how far a single figure moves).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trt_mpq.commands.analyze import AnalyzeOptions, analyze  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
CASES = {
    "mobilenetv2": (SHARED / "mobilenetv2_imagenet.onnx",
                    dict(calib=str(SHARED / "photos" / "calib"),
                         preprocess=str(ROOT / "examples" / "preprocess" / "mobilenetv2_imagenet.json"))),
    "minilm": (SHARED / "minilm" / "minilm_l6.onnx", dict(calib=str(SHARED / "minilm" / "minilm_calib.npz"))),
}


def nmse_by_unit(model: Path, out: Path, float_samples: str, extra: dict) -> tuple[dict[str, float], float]:
    options = AnalyzeOptions(precisions="fp16", float_samples=float_samples, backend="onnxruntime", **extra)
    start = time.perf_counter()
    analysis = analyze(model, out, options)
    took = time.perf_counter() - start
    return {u.name: u.results[next(iter(u.results))].nmse or 0.0 for u in analysis.units if u.results}, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    args = parser.parse_args()
    if not SHARED.exists():
        print(f"needs the real models in {SHARED}")
        return 2
    print(f"{'model':12} {'all s':>7} {'auto s':>7} {'faster':>7} {'spearman':>9} {'top10':>6} {'max ratio':>10}")
    for name in args.cases or list(CASES):
        model, extra = CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            full, t_full = nmse_by_unit(model, Path(tmp) / "all", "all", extra)
            part, t_part = nmse_by_unit(model, Path(tmp) / "auto", "auto", extra)
        units = sorted(full)
        a = np.array([full[u] for u in units])
        b = np.array([part[u] for u in units])
        rho = spearmanr(a, b).statistic
        top = len(set(sorted(units, key=full.get)[-10:]) & set(sorted(units, key=part.get)[-10:]))
        live = (a > 0) & (b > 0)
        ratio = float(np.max(np.maximum(a[live] / b[live], b[live] / a[live]))) if live.any() else float("nan")
        print(f"{name:12} {t_full:7.1f} {t_part:7.1f} {t_full / t_part:6.2f}x {rho:9.4f} {top:6d} {ratio:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
