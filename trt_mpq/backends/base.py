"""The backend protocol: compile an ONNX model, run feeds through it. One registry chooses by name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx

from ..errors import BackendError


class Session(Protocol):
    """A compiled model, ready to run batches."""

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch; return the requested outputs (all graph outputs when None) by name."""

    def close(self) -> None:
        """Free what the session holds."""


class Backend(Protocol):
    name: str

    def describe(self) -> str:
        """One line for logs and reports: library, version, device, settings that change numbers."""

    def compile(self, model: onnx.ModelProto) -> Session:
        """Build a runnable session from a (lowered) ONNX model."""


@dataclass
class LayerProfile:
    """What ``Backend.profile`` returns: milliseconds per layer (ONNX nodes on ONNX Runtime, fused layers on
    TensorRT) and the ONNX nodes each layer computes."""

    ms: dict[str, float]
    nodes: dict[str, list[str]]


@dataclass(frozen=True)
class BackendOptions:
    """Settings a backend may read; each backend ignores what is not its own."""

    ort_optimize: str = "none"  # onnxruntime: "none" (ORT_DISABLE_ALL, bit-exact) or "all" (Q/DQ fusion off)
    threads: int = 0  # 0: the library's default
    opt_level: int | None = None  # tensorrt: builder optimisation level 0-5 (None: the backend's default)
    timing_cache: str | None = None  # tensorrt: one file shared by every build of a run
    max_batch: int = 8  # tensorrt: the largest batch an engine is built for


# name -> "module:factory"; a new backend is one module plus one line here.
REGISTRY: dict[str, str] = {
    "onnxruntime": "trt_mpq.backends.onnxrt:OnnxRuntimeBackend",
    "tensorrt": "trt_mpq.backends.tensorrt:TensorRTBackend",
}
AUTO_ORDER = ("tensorrt", "onnxruntime")  # the real thing when a GPU and TensorRT are there, else the emulation


def backend_names() -> list[str]:
    return ["auto", *REGISTRY]


def get_backend(name: str = "auto", options: BackendOptions | None = None) -> Backend:
    """Instantiate a backend by registry name; ``auto`` takes the first that is available and records on it
    (``auto_note``) why the ones before it were not."""
    options = options or BackendOptions()
    if name == "auto":
        errors = []
        for candidate in AUTO_ORDER:
            try:
                backend = get_backend(candidate, options)
            except BackendError as exc:
                errors.append(f"{candidate} not used: {str(exc).split('; ')[0].rstrip('.')}")
                continue
            backend.auto_note = "; ".join(errors)
            return backend
        raise BackendError("no backend is available: " + " ".join(errors))
    if name not in REGISTRY:
        raise BackendError(f"unknown backend '{name}'; choose one of {', '.join(backend_names())}.")
    module, _, factory = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), factory)(options)
