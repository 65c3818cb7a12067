"""``trt-mpq build``: the planned mix (DIR/model.mixed.onnx) built into a TensorRT engine, and what it realised.

Writes DIR/model.engine, DIR/layers.json (the engine inspector's layer information), DIR/build.log, and
updates DIR/timing.cache (shared with every build of the run); then compares each unit's realised precision
with the plan and adds the comparison to report.json and report.html.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from .api import TIMING_CACHE
from .backends import BackendOptions, get_backend
from .errors import ConfigError
from .journal import atomic_write_bytes, atomic_write_json
from .planning import check_engine, load_analysis
from .report_html import render
from .sensitivity import Progress


@dataclass(frozen=True)
class BuildOptions:
    backend: str = "tensorrt"
    opt_level: int | None = None  # None: TensorRT's default (3)
    batch: int | None = None  # largest batch of the engine; None: the plan's deployment batch


def build_engine(run_dir: str | Path, opts: BuildOptions = BuildOptions(), progress: Progress | None = None) -> dict:
    """Build DIR/model.mixed.onnx; return {"engine": ..., "units": planned vs realised rows}."""
    from .backends.tensorrt import FINAL_OPT_LEVEL, BuildSettings

    progress = progress or Progress()
    run_dir = Path(run_dir)
    mixed, plan_path = run_dir / "model.mixed.onnx", run_dir / "plan.json"
    if not plan_path.is_file() or not mixed.is_file():
        raise ConfigError(f"'{run_dir}' holds no plan.json and model.mixed.onnx; run 'trt-mpq plan' (or run) first.")
    if opts.backend != "tensorrt":
        raise ConfigError(f"'build' makes a TensorRT engine; --backend {opts.backend} cannot (use tensorrt).")
    plan = json.loads(plan_path.read_text())
    batch = opts.batch or int(plan.get("latency", {}).get("batch") or 1)
    level = FINAL_OPT_LEVEL if opts.opt_level is None else opts.opt_level
    backend = get_backend("tensorrt", BackendOptions(opt_level=level, timing_cache=str(run_dir / TIMING_CACHE),
                                                     max_batch=batch))
    progress.log(f"building {mixed} on {backend.describe()}, batch 1..{batch}")
    start, log = time.perf_counter(), []
    try:
        engine = backend.build(onnx.load(str(mixed)), BuildSettings(level, run_dir / TIMING_CACHE, True, batch), log)
    finally:
        atomic_write_bytes(run_dir / "build.log", ("\n".join(log) + "\n").encode())
    elapsed = time.perf_counter() - start
    atomic_write_bytes(run_dir / "model.engine", bytes(engine.serialize()))
    atomic_write_json(run_dir / "layers.json", backend.inspect(engine))
    rows = check_engine(run_dir, run_dir / "layers.json")
    result = {"engine": f"model.engine, {backend.describe()}, built in {elapsed:.1f} s, batch 1..{batch}",
              "units": rows}
    report_path = run_dir / "report.json"
    if report_path.is_file():
        report = {**json.loads(report_path.read_text()), "realized": result}
        doc, _ = load_analysis(run_dir)
        atomic_write_json(report_path, report)
        atomic_write_bytes(run_dir / "report.html", render(report, doc).encode())
    progress.log(f"wrote {run_dir / 'model.engine'}, layers.json, build.log ({elapsed:.1f} s)")
    return result
