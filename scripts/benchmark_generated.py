#!/usr/bin/env python3
"""Generated calibration data against real data, on a real model (issue 22's comparison).

For each source of calibration data (the model's real calibration photos; 72 other photos, the first of the
evaluation folder: how far new real data moves the ranking; pink-noise images, one row per seed; images of
the dead-leaves model; noise shaped like the input), one INT8 analysis with the default settings, then side by
side against the real-data analyses:
- the per-unit INT8 sensitivity ranking (Spearman's rho over the units) and how many of the 10 most sensitive
  units both name, against the calibration photos' ranking and against the other photos' ("vs other");
- every INT8-capable unit in INT8 with that analysis's thresholds, scored on the held-out photos: top-1
  agreement with FP32.
One run, this machine; every analysis runs in this process one after the other.

With --digits, the digits CNN instead: three disjoint sets of real training digits and the test digits, each
against the others (how far new real data moves the ranking: the ceiling for any generator), then noise and
synthesized digits against each real set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "models"

from trt_mpq import AnalyzeOptions, analyze  # noqa: E402
from trt_mpq.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from trt_mpq.data.datasets import load_dataset  # noqa: E402
from trt_mpq.data.images import load_preprocess  # noqa: E402
from trt_mpq.errors import TrtMpqError  # noqa: E402
from trt_mpq.network.model import load_model  # noqa: E402
from trt_mpq.network.units import find_units  # noqa: E402
from trt_mpq.precision import Plan, Precision  # noqa: E402
from trt_mpq.quant.lower import lower  # noqa: E402
from trt_mpq.quant.ranges import Ranges  # noqa: E402


def nmse_by_unit(run: Path) -> dict[str, float]:
    doc = json.loads((run / "sensitivity.json").read_text())
    return {u["name"]: u["results"]["int8"]["nmse"] for u in doc["units"] if "int8" in u["results"]}


def ranked(reference: dict[str, float], nmse: dict[str, float]) -> tuple[float, int]:
    """Spearman's rho of two per-unit rankings, and how many of the 10 most sensitive units both name."""
    common = [u for u in reference if u in nmse]
    rho = spearmanr([reference[u] for u in common], [nmse[u] for u in common]).statistic
    top = len(set(sorted(reference, key=reference.get)[-10:]) & set(sorted(nmse, key=nmse.get)[-10:]))
    return float(rho), top


def agreement(model, units, run: Path, evals, backend) -> float:
    ranges = Ranges.from_json(json.loads((run / "ranges.json").read_text()))
    plan = Plan.of({u.name: Precision.INT8 for u in units if Precision.INT8 in u.allowed})
    fp32, int8 = backend.compile(model.proto), backend.compile(lower(model.proto, units, plan, ranges))
    same = total = 0
    for lo in range(0, evals.num_samples, 8):
        feeds = evals.take(lo, min(lo + 8, evals.num_samples))
        a, b = fp32.run(feeds), int8.run(feeds)
        first = next(iter(a))
        same += int(np.sum(np.argmax(a[first], -1) == np.argmax(b[first], -1)))
        total += len(a[first])
    return same / total


def digits_ceiling(samples: int) -> None:
    """The digits CNN: how far real digits move the INT8 ranking (disjoint sets of real digits against each
    other), next to generated digits against those real sets. A generator cannot be told from another by a
    statistic that new real data moves as much."""
    path = SHARED / "digits_cnn.onnx"
    data = np.load(SHARED / "digits.npz")
    with tempfile.TemporaryDirectory(prefix="trt-mpq-digits-") as tmp:
        sources = {}
        for k in range(3):
            rows = data["x_train"][k * samples:(k + 1) * samples]
            np.savez(Path(tmp) / f"train{k}.npz", input=rows)
            sources[f"train {k * samples}-{(k + 1) * samples}"] = str(Path(tmp) / f"train{k}.npz")
        np.savez(Path(tmp) / "test.npz", input=data["x_test"][:samples])
        sources[f"test 0-{samples}"] = str(Path(tmp) / "test.npz")
        real = list(sources)
        sources.update({"noise N(0,1)": "generated", "synthesized": "synthesized"})
        ranking = {}
        for name, calib in sources.items():
            run = Path(tmp) / name.replace(" ", "_")
            try:
                analyze(path, run, AnalyzeOptions(calib=calib, samples=samples, precisions=(Precision.INT8,)))
            except TrtMpqError as e:  # synthesized needs trt-mpq[datagen]
                print(f"{name}: not run ({e})")
                continue
            ranking[name] = nmse_by_unit(run)
        print(f"digits CNN, INT8, {samples} samples per source: Spearman against each real set\n")
        for name, nmse in ranking.items():
            rhos = [spearmanr([ranking[r][u] for u in nmse], [nmse[u] for u in nmse]).statistic
                    for r in real if r != name]
            print(f"{name:16s} mean {np.mean(rhos):.3f}  min {np.min(rhos):.3f}  max {np.max(rhos):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=72, help="calibration samples of each source")
    parser.add_argument("--skip-noise", action="store_true", help="leave out the noise row (the old default)")
    parser.add_argument("--seeds", type=int, default=2, help="pink-noise rows, one per seed (default 2)")
    parser.add_argument("--only", default=None, help="comma-separated rows to run besides the real photos")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=FILE.npz",
                        help="another calibration source: data written by 'trt-mpq generate' (repeatable)")
    parser.add_argument("--digits", action="store_true",
                        help="the digits CNN instead: real digits against other real digits, and generated ones")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"needs the real models in {SHARED}", file=sys.stderr)
        return 2
    if args.digits:
        digits_ceiling(args.samples if args.samples != 72 else 256)
        return 0
    path = SHARED / "mobilenetv2_imagenet.onnx"
    pre = str(ROOT / "examples" / "preprocess" / "mobilenetv2_imagenet.json")
    model = load_model(path)
    units = find_units(model.proto, model.tensors).units
    evals = load_dataset(model, str(SHARED / "photos" / "eval"), load_preprocess(pre))
    sources = {"real photos": AnalyzeOptions(calib=str(SHARED / "photos" / "calib"), preprocess=pre),
               "other photos": AnalyzeOptions(calib=str(SHARED / "photos" / "eval"), preprocess=pre),
               **{f"pink-noise s{k}": AnalyzeOptions(calib="pink-noise", preprocess=pre, seed=k)
                  for k in range(args.seeds)},
               "dead-leaves": AnalyzeOptions(calib="dead-leaves", preprocess=pre), "noise N(0,1)": AnalyzeOptions()}
    if args.skip_noise:
        del sources["noise N(0,1)"]
    for item in args.also:
        name, _, file = item.partition("=")
        sources[name] = AnalyzeOptions(calib=file)
    if args.only:
        keep = {"real photos", "other photos", *args.only.split(",")}
        sources = {k: v for k, v in sources.items() if k in keep}
    backend = OnnxRuntimeBackend()
    print(f"MobileNetV2, {args.samples} calibration samples per source, INT8, defaults; scored on "
          f"{evals.num_samples} eval photos\n")
    print("(other photos: the first of the eval folder, so its agreement is scored on photos it was calibrated on)\n")
    print(f"{'source':14s} {'analysis s':>10s} {'spearman':>9s} {'top10':>6s} {'vs other':>9s} {'top10':>6s} "
          f"{'all-INT8 agreement':>19s}")
    with tempfile.TemporaryDirectory(prefix="trt-mpq-generated-") as tmp:
        real = other = None
        for name, opts in sources.items():
            run = Path(tmp) / name.replace(" ", "_")
            opts = AnalyzeOptions(**{**opts.__dict__, "samples": args.samples, "precisions": (Precision.INT8,)})
            t0 = time.perf_counter()
            analyze(path, run, opts)
            seconds = time.perf_counter() - t0
            nmse = nmse_by_unit(run)
            real = real or nmse
            other = other or (nmse if name == "other photos" else None)
            (rho, top), (rho2, top2) = ranked(real, nmse), ranked(other or nmse, nmse)
            agree = agreement(model, units, run, evals, backend)
            print(f"{name:14s} {seconds:10.1f} {rho:9.3f} {top:6d} {rho2:9.3f} {top2:6d} {agree:19.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
