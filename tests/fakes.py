"""Backends for tests, behind the real interface (no monkeypatching of the library's internals)."""

from __future__ import annotations

from trt_mpq.backends import Backend
from trt_mpq.backends.onnxrt import OnnxRuntimeBackend, OnnxRuntimeOptions


class CountingBackend(Backend):
    """ONNX Runtime, counting the models it compiles: proves what a resumed run recomputes."""

    name = "onnxruntime"  # records as the backend it wraps, so a plan can restore it
    options_type = OnnxRuntimeOptions

    def __init__(self, optimize: str = "all") -> None:
        self.inner = OnnxRuntimeBackend(OnnxRuntimeOptions(optimize))
        self.compiled = 0

    def describe(self) -> str:
        return self.inner.describe()

    def options_json(self) -> dict:
        return self.inner.options_json()

    def compile(self, model, weights=None):
        self.compiled += 1
        return self.inner.compile(model, weights)
