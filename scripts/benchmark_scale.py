#!/usr/bin/env python3
"""An analysis spread over Ray workers: 1 against 2 single-threaded workers, side by side in one run, then a
schedule of the measured jobs for bigger clusters.

For each case the same analysis runs in one process as a user runs it by default (every core, ONNX
Runtime's own threads), then on a local Ray cluster of 1 worker, then of 2 (each cluster started fresh; its
start is timed apart); the two clusters' sensitivity.json files must be identical (one thread per session
in both; the one-process run, with its own thread count, agrees to rounding). Every job is timed
where it ran (``Executor.job_times``). From those times, Ray's measured per-job overhead and the driver's
own time (the time no job was in flight: serial work no worker can take over) and each job's cost outside its
own timing (arguments read, results stored: the rest of the 1-worker wall time, per job), the
analysis is scheduled on 8, 32 and 128 workers: stage after stage (each waits for the one before), jobs
first come first served, measurements and auto's trials cut into as many pieces as the code would cut them
for that many workers (``executors.chunks_for``; a piece costs its share of the job plus the fixed cost of a
job of that kind: its shortest job's time, an upper bound). The limiting factor of each schedule is named.
Data moves through Ray's object store: the script prints what that costs next to what recomputing the FP32
frontier in each job would.

Cases (real models and data of ../shared/models, defaults otherwise):
  mnv2     MobileNetV2, the 72 calibration photos, int8 + fp16
  minilm   MiniLM-L6, the 256 calibration sentences, int8 + fp16
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trt_mpq.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from trt_mpq.commands.analyze import AnalyzeOptions, calibration_data  # noqa: E402
from trt_mpq.executors import RayExecutor, Serial, chunks_for  # noqa: E402
from trt_mpq.measure.sensitivity import Settings, analyze  # noqa: E402
from trt_mpq.network.model import load_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "models"
PRE = ROOT / "examples" / "preprocess" / "mobilenetv2_imagenet.json"
CASES = {
    "mnv2": (SHARED / "mobilenetv2_imagenet.onnx", AnalyzeOptions(calib=str(SHARED / "photos" / "calib"),
                                                                  preprocess=str(PRE))),
    "minilm": (SHARED / "minilm" / "minilm_l6.onnx", AnalyzeOptions(calib=str(SHARED / "minilm" / "minilm_calib.npz"))),
}
STAGES = ("fp32_batch", "histogram_batch", "thresholds_of", "weight_clip", "choice_errors", "measure_batches")
SCALES = (8, 32, 128)


def _noop(job):
    return job


def run_case(path: Path, options: AnalyzeOptions, workers: int, out: Path):
    """(seconds of the analysis, seconds to start the cluster, job times, sensitivity.json without timings,
    Ray's cost per empty job (2 workers only), seconds with no job in flight); ``workers`` 0: one process."""
    model = load_model(path)
    data = calibration_data(model, options)
    settings = Settings(options.precisions, options.calibrator, options.batch, options.weight_scales,
                        options.bias_correction, options.int4_block, options.float_samples)
    t0 = time.perf_counter()
    executor = RayExecutor(workers=workers) if workers else Serial()
    started = time.perf_counter() - t0
    times = executor.job_times
    overhead = None
    t1 = time.perf_counter()
    with executor:
        analysis = analyze(model, data, OnnxRuntimeBackend(), out, settings, executor=executor)
        seconds = time.perf_counter() - t1
        idle = seconds - executor.busy
    if workers == 2:  # a fresh cluster measures Ray's cost per job
        overhead = job_overhead()
    doc = analysis.to_json()
    doc.pop("elapsed_s", None)
    doc.pop("backend", None)
    return seconds, started, list(times), json.dumps(doc, sort_keys=True), overhead, idle


def job_overhead(n: int = 400) -> float:
    """Seconds Ray adds per job (submit, schedule, return), from n empty jobs on 2 workers."""
    with RayExecutor(workers=2) as executor:
        list(executor.map(_noop, list(range(50)), []))  # warm the workers up
        t0 = time.perf_counter()
        list(executor.map(_noop, list(range(n)), []))
        return (time.perf_counter() - t0) * 2 / n


def fifo(times: list[float], workers: int) -> float:
    """Makespan of jobs taken in order by the first free worker."""
    free = [0.0] * workers
    for t in times:
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


CUT = ("choice_errors", "measure_batches")  # the jobs the analysis cuts into pieces for many workers


def schedule(times: dict[str, list[tuple[float, int]]], workers: int, overhead: float, driver: float
             ) -> tuple[float, dict[str, float], dict[str, list[float]]]:
    """Simulated wall time on ``workers``, each stage's part of it (and the driver's), and the jobs."""
    parts, scheduled = {"driver": driver}, {}
    for stage in STAGES:
        jobs = times.get(stage, [])
        if stage in CUT and jobs:
            fixed = min(t for t, _ in jobs)
            pieces = chunks_for(workers, len(jobs), max(n for _, n in jobs))
            cut = []
            for t, n in jobs:
                k = min(pieces, n)
                cut += [t / k + fixed * (1 - 1 / k)] * k
            scheduled[stage] = cut
        else:
            scheduled[stage] = [t for t, _ in jobs]
        parts[stage] = fifo([t + overhead for t in scheduled[stage]], workers) if jobs else 0.0
    return sum(parts.values()), parts, scheduled


def limiting(parts: dict[str, float], jobs: dict[str, list[float]], workers: int) -> str:
    """What bounds a schedule: the driver, the stage that takes longest (and, in it, its largest job or too
    few jobs for the workers, when that is what makes it long)."""
    worst = max(parts, key=parts.get)
    if worst == "driver":
        return f"the driver's own serial work ({parts['driver']:.1f} s of {sum(parts.values()):.1f})"
    share = f"{parts[worst]:.1f} s of {sum(parts.values()):.1f}"
    if max(jobs[worst]) > 0.5 * parts[worst]:
        return f"{worst}'s largest job ({max(jobs[worst]):.2f} s; the stage {share})"
    if len(jobs[worst]) < workers:
        return f"{worst}: {len(jobs[worst])} jobs for {workers} workers ({share})"
    return f"{worst}'s work ({share})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    args = parser.parse_args()
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]}; choose from {', '.join(CASES)}")
    if not (SHARED / "MANIFEST.md").exists():
        raise SystemExit(f"needs the real models of {SHARED}")
    for name in args.cases or list(CASES):
        path, options = CASES[name]
        with tempfile.TemporaryDirectory(prefix="trt-mpq-scale-") as tmp:
            alone = run_case(path, options, 0, Path(tmp) / "alone")
            one = run_case(path, options, 1, Path(tmp) / "one")
            two = run_case(path, options, 2, Path(tmp) / "two")
        print(f"\n{name}: 1 worker {one[0]:.1f} s, 2 workers {two[0]:.1f} s -> {one[0] / two[0]:.2f}x "
              f"(cluster start {one[1]:.1f} / {two[1]:.1f} s, not included); identical sensitivity.json: "
              f"{one[3] == two[3]}; one process (every core) {alone[0]:.1f} s: 2 workers {alone[0] / two[0]:.2f}x")
        times: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for stage, t, n in one[2]:
            times[stage].append((t, n))
        batches = len(times["fp32_batch"])
        driver = one[5]  # the 1-worker run's time with no job in flight
        per_job = max(0.0, (one[0] - driver - sum(t for _, t, _ in one[2])) / len(one[2]))
        print("  jobs: " + ", ".join(f"{s} {len(times[s])} x {sum(t for t, _ in times[s]) / len(times[s]):.3f} s"
                                      for s in STAGES if times[s]))
        print(f"  Ray's cost per empty job {two[4] * 1e3:.1f} ms; each job's cost outside its timing (arguments, "
              f"results) {per_job * 1e3:.1f} ms; the driver's own work (no job in flight) {driver:.1f} s")
        overhead = max(per_job, two[4])
        fp32 = sum(t for t, _ in times["fp32_batch"]) / max(1, batches)
        reads = [t for t, _ in times["measure_batches"]]
        print(f"  data: a measurement job reads its {batches} batches from the object store (zero-copy on one "
              f"node); recomputing them instead would cost each job the FP32 pass, ~{fp32 * batches:.2f} s, "
              f"against a mean job of {sum(reads) / max(1, len(reads)):.2f} s: the object store it is")
        base, _, _ = schedule(times, 1, overhead, driver)
        print(f"  simulated: 1 worker {base:.1f} s (measured {one[0]:.1f} s)")
        for w in SCALES:
            total, parts, jobs = schedule(times, w, overhead, driver)
            eff = base / (w * total)
            print(f"  simulated: {w:>3} workers {total:6.1f} s, speed-up {base / total:5.1f}x, efficiency "
                  f"{eff:.2f}; limited by {limiting(parts, jobs, w)}")
        if not math.isfinite(one[0] / two[0]) or one[3] != two[3]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
