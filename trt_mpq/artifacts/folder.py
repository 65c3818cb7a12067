"""Every file name of a run folder, and reading what an earlier stage wrote."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

WORKER_ENV = "TRT_MPQ_WORKER"  # set in the jobs of a Ray cluster (``executors``)


@dataclass(frozen=True)
class RunFolder:
    """Every file name of a run folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    sensitivity = property(lambda self: self.root / "sensitivity.json")
    ranges = property(lambda self: self.root / "ranges.json")
    work = property(lambda self: self.root / ".trt-mpq")  # resumable per-run caches (journal, activations)
    plan = property(lambda self: self.root / "plan.json")
    report_json = property(lambda self: self.root / "report.json")
    report_html = property(lambda self: self.root / "report.html")
    calibration_png = property(lambda self: self.root / "calibration.png")  # generated samples, for the report
    mixed_onnx = property(lambda self: self.root / "model.mixed.onnx")
    weak_onnx = property(lambda self: self.root / "model.weak.onnx")  # for TensorRT 10's weak typing
    trtexec = property(lambda self: self.root / "trtexec.txt")
    engine = property(lambda self: self.root / "model.engine")
    layers = property(lambda self: self.root / "layers.json")
    build_log = property(lambda self: self.root / "build.log")
    build = property(lambda self: self.root / "build.json")
    timing_cache = property(lambda self: self.root / "timing.cache")  # shared by every TensorRT build of the run

    def timing_cache_of_gpu(self) -> Path:
        """The timing cache of the GPU this process builds on: a Ray worker (``WORKER_ENV`` set) sees its one
        device in CUDA_VISIBLE_DEVICES and keeps a cache of its own; anything else shares ``timing_cache``."""
        device = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if os.environ.get(WORKER_ENV) and device and "," not in device:
            return self.root / f"timing.gpu{device}.cache"
        return self.timing_cache

    def calibration_strip(self) -> bytes | None:
        """calibration.png's bytes, when the analysis generated its data."""
        return self.calibration_png.read_bytes() if self.calibration_png.is_file() else None

    def check_writable(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--out '{self.root}' exists and is not a folder.")


def read_json(path: Path, what: str):
    """A JSON file written by an earlier stage; a missing or damaged one is one sentence."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} '{path}' does not exist.") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} '{path}' is not valid JSON: {exc}") from None
