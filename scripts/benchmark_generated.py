#!/usr/bin/env python3
"""Generated calibration data against real data, on a real model (issue 22's comparison).

For each source of calibration data (the model's real calibration photos; 72 other photos, the first of the
evaluation folder: how far new real data moves the ranking; pink-and-leaves images (the default with
--preprocess) and pink-noise images, one row per seed; images of
the dead-leaves model; noise shaped like the input), one INT8 analysis with the default settings, then side by
side against the real-data analyses:
- the per-unit INT8 sensitivity ranking (Spearman's rho over the units) and how many of the 10 most sensitive
  units both name, against the calibration photos' ranking and against the other photos' ("vs other");
- every INT8-capable unit in INT8 with that analysis's thresholds, scored on the held-out photos: top-1
  agreement with FP32, and the KL divergence of the class probabilities (finer than agreement);
- with several seeds (--seeds) and orders of the photos (--orders), each group's mean and spread, and each
  generator's gap to the photos with its standard error.
One run, this machine; every analysis runs in this process one after the other.

With --ppocr, PP-OCRv4 (it keeps BatchNorm statistics) instead: each generator against its 5 real images.
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
from scipy.special import softmax
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


def scores(model, units, run: Path, evals, backend) -> tuple[float, float]:
    """Every INT8-capable unit in INT8 with the analysis's thresholds, on ``evals``: top-1 agreement with FP32,
    and the mean KL divergence of its class probabilities from FP32's (finer: every photo adds to it)."""
    ranges = Ranges.from_json(json.loads((run / "ranges.json").read_text()))
    plan = Plan.of({u.name: Precision.INT8 for u in units if Precision.INT8 in u.allowed})
    fp32, int8 = backend.compile(model.proto), backend.compile(lower(model.proto, units, plan, ranges))
    same, kl, total = 0, 0.0, 0
    for lo in range(0, evals.num_samples, 8):
        feeds = evals.take(lo, min(lo + 8, evals.num_samples))
        a, b = fp32.run(feeds), int8.run(feeds)
        first = next(iter(a))
        same += int(np.sum(np.argmax(a[first], -1) == np.argmax(b[first], -1)))
        p, q = softmax(a[first].astype(np.float64), -1), softmax(b[first].astype(np.float64), -1)
        kl += float(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12))))
        total += len(a[first])
    return same / total, kl / total


def group_means(rows: dict[str, tuple[float, float, float]]) -> None:
    """Mean and spread of each group of rows (the photos in other orders, the seeds of a generator), and each
    generator's gap to the photos with its standard error: one run's agreement moves by about 0.03."""
    groups: dict[str, list[tuple[float, float, float]]] = {}
    for name, row in rows.items():
        groups.setdefault(name.split(" s")[0].split(" order")[0], []).append(row)
    photos = np.array(groups.get("real photos", []))
    print(f"\n{'group':14s} {'runs':>4s} {'spearman':>9s} {'agreement':>10s} {'sd':>6s} {'KL':>7s}  "
          "gap to the photos: agreement, KL")

    def gap(g: np.ndarray, column: int) -> str:
        se = np.sqrt(g[:, column].var(ddof=1) / len(g) + photos[:, column].var(ddof=1) / len(photos))
        return f"{g[:, column].mean() - photos[:, column].mean():+.4f} +- {se:.4f}"

    for name, group in groups.items():
        g = np.array(group)
        gaps = f"{gap(g, 1)}, {gap(g, 2)}" if name != "real photos" and len(g) > 1 and len(photos) > 1 else ""
        sd = g[:, 1].std(ddof=1) if len(g) > 1 else float("nan")
        print(f"{name:14s} {len(g):4d} {g[:, 0].mean():9.3f} {g[:, 1].mean():10.4f} {sd:6.3f} {g[:, 2].mean():7.4f}  "
              f"{gaps}")


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
        sources.update({"noise N(0,1)": "noise", "synthesized": "synthesized"})
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


def ppocr(samples: int) -> None:
    """PP-OCRv4 at 640x640 (BatchNorm statistics kept): its INT8 ranking on generated data against the ranking
    on its 5 real images (the model's preprocessing), for the generator each way of asking gives."""
    pre = str(ROOT / "examples" / "preprocess" / "ppocrv4_det.yaml")
    sources = {"real images": AnalyzeOptions(calib=str(SHARED / "images"), preprocess=pre),
               "noise": AnalyzeOptions(calib="noise"),
               "pink-noise": AnalyzeOptions(calib="pink-noise", preprocess=pre),
               "pink-and-leaves": AnalyzeOptions(calib="pink-and-leaves", preprocess=pre),
               "generated": AnalyzeOptions(),  # synthesized from noise: no --preprocess
               "generated --preprocess": AnalyzeOptions(preprocess=pre)}  # synthesized from pink-noise images
    print(f"PP-OCRv4 at 640x640, INT8, {samples} generated samples per source: Spearman against the real images\n")
    with tempfile.TemporaryDirectory(prefix="trt-mpq-ppocr-") as tmp:
        real = None
        for name, opts in sources.items():
            run = Path(tmp) / name.replace(" ", "_")
            opts = AnalyzeOptions(**{**opts.__dict__, "samples": samples, "precisions": (Precision.INT8,),
                                     "shapes": {"x": (1, 3, 640, 640)}})
            t0 = time.perf_counter()
            analyze(SHARED / "ppocrv4_det.onnx", run, opts)
            seconds = time.perf_counter() - t0
            nmse = nmse_by_unit(run)
            real = real or nmse
            (rho, top), chosen = ranked(real, nmse), json.loads((run / "sensitivity.json").read_text())["calibration"]
            print(f"{name:24s} {seconds:7.1f} s  spearman {rho:.3f}  top10 {top:2d}  "
                  f"{chosen.get('method', '')} {chosen.get('optimised', '')}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=72, help="calibration samples of each source")
    parser.add_argument("--skip-noise", action="store_true", help="leave out the noise row (the old default)")
    parser.add_argument("--seeds", type=int, default=2,
                        help="pink-and-leaves (what --calib generated takes here), pink-noise and synthesized rows, "
                             "one per seed")
    parser.add_argument("--orders", type=int, default=1,
                        help="rows of the calibration photos, each in another order (the first as listed): how "
                             "far the choice of thresholds moves with which photos choose them")
    parser.add_argument("--only", default=None, help="comma-separated rows to run besides the real photos")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=FILE.npz",
                        help="another calibration source: data written by 'trt-mpq generate' (repeatable)")
    parser.add_argument("--ppocr", action="store_true",
                        help="PP-OCRv4 instead (BatchNorm kept): each generator's ranking against its real images")
    parser.add_argument("--digits", action="store_true",
                        help="the digits CNN instead: real digits against other real digits, and generated ones")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"needs the real models in {SHARED}", file=sys.stderr)
        return 2
    if args.digits:
        digits_ceiling(args.samples if args.samples != 72 else 256)
        return 0
    if args.ppocr:
        ppocr(args.samples if args.samples != 72 else 8)
        return 0
    path = SHARED / "mobilenetv2_imagenet.onnx"
    pre = str(ROOT / "examples" / "preprocess" / "mobilenetv2_imagenet.json")
    model = load_model(path)
    units = find_units(model.proto, model.tensors).units
    evals = load_dataset(model, str(SHARED / "photos" / "eval"), load_preprocess(pre))
    photos = load_dataset(model, str(SHARED / "photos" / "calib"), load_preprocess(pre))
    tmp = tempfile.TemporaryDirectory(prefix="trt-mpq-generated-")
    sources = {"real photos": AnalyzeOptions(calib=str(SHARED / "photos" / "calib"), preprocess=pre),
               "other photos": AnalyzeOptions(calib=str(SHARED / "photos" / "eval"), preprocess=pre)}
    x = photos.take(0, photos.num_samples)["input"] if args.orders > 1 else None
    for k in range(1, args.orders):
        np.savez(Path(tmp.name) / f"order{k}.npz", input=x[np.random.default_rng(k).permutation(len(x))])
        sources[f"real photos order{k}"] = AnalyzeOptions(calib=str(Path(tmp.name) / f"order{k}.npz"))
    sources.update({**{f"pink-and-leaves s{k}": AnalyzeOptions(calib="pink-and-leaves", preprocess=pre, seed=k)
                       for k in range(args.seeds)},
                    **{f"pink-noise s{k}": AnalyzeOptions(calib="pink-noise", preprocess=pre, seed=k)
                       for k in range(args.seeds)},
                    **{f"synthesized s{k}": AnalyzeOptions(calib="synthesized", preprocess=pre, seed=k)
                       for k in range(args.seeds)},
                    "dead-leaves": AnalyzeOptions(calib="dead-leaves", preprocess=pre),
                    "noise N(0,1)": AnalyzeOptions(calib="noise")})
    if args.skip_noise:
        del sources["noise N(0,1)"]
    for item in args.also:
        name, _, file = item.partition("=")
        sources[name] = AnalyzeOptions(calib=file)
    if args.only:
        keep = {"other photos", *args.only.split(",")}
        sources = {k: v for k, v in sources.items() if k in keep or k.startswith("real photos")}
    backend = OnnxRuntimeBackend()
    print(f"MobileNetV2, {args.samples} calibration samples per source, INT8, defaults; scored on "
          f"{evals.num_samples} eval photos\n")
    print("(other photos: the first of the eval folder, so its agreement is scored on photos it was calibrated on)\n")
    print(f"{'source':20s} {'analysis s':>10s} {'spearman':>9s} {'top10':>6s} {'vs other':>9s} {'top10':>6s} "
          f"{'all-INT8 agreement':>19s} {'KL':>7s}")
    rows, real, other = {}, None, None
    with tmp:
        for name, opts in sources.items():
            run = Path(tmp.name) / name.replace(" ", "_")
            opts = AnalyzeOptions(**{**opts.__dict__, "samples": args.samples, "precisions": (Precision.INT8,)})
            t0 = time.perf_counter()
            analyze(path, run, opts)
            seconds = time.perf_counter() - t0
            nmse = nmse_by_unit(run)
            real = real or nmse
            other = other or (nmse if name == "other photos" else None)
            (rho, top), (rho2, top2) = ranked(real, nmse), ranked(other or nmse, nmse)
            agree, kl = scores(model, units, run, evals, backend)
            rows[name] = (rho, agree, kl)
            print(f"{name:20s} {seconds:10.1f} {rho:9.3f} {top:6d} {rho2:9.3f} {top2:6d} {agree:19.4f} {kl:7.4f}",
                  flush=True)
    group_means({k: v for k, v in rows.items() if k != "other photos"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
