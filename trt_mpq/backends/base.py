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


@dataclass(frozen=True)
class BackendOptions:
    """Settings a backend may read; each backend ignores what is not its own."""

    ort_optimize: str = "none"  # onnxruntime: "none" (ORT_DISABLE_ALL, bit-exact) or "all" (Q/DQ fusion off)
    threads: int = 0  # 0: the library's default


# name -> "module:factory"; a new backend is one module plus one line here.
REGISTRY: dict[str, str] = {
    "onnxruntime": "trt_mpq.backends.onnxrt:OnnxRuntimeBackend",
}
# Backends that are announced but not shipped yet, with what to do instead.
PLANNED: dict[str, str] = {
    "tensorrt": "the TensorRT backend is not part of this release yet; use --backend onnxruntime (CPU emulation of "
    "the same lowered ONNX) and build the emitted model with trtexec on your GPU host.",
}
AUTO_ORDER = ("onnxruntime",)


def backend_names() -> list[str]:
    return ["auto", *REGISTRY, *PLANNED]


def get_backend(name: str = "auto", options: BackendOptions | None = None) -> Backend:
    """Instantiate a backend by registry name; ``auto`` takes the first that is available."""
    options = options or BackendOptions()
    if name == "auto":
        errors = []
        for candidate in AUTO_ORDER:
            try:
                return get_backend(candidate, options)
            except BackendError as exc:
                errors.append(str(exc))
        raise BackendError("no backend is available: " + " ".join(errors))
    if name in PLANNED:
        raise BackendError(PLANNED[name])
    if name not in REGISTRY:
        raise BackendError(f"unknown backend '{name}'; choose one of {', '.join(backend_names())}.")
    module, _, factory = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), factory)(options)
