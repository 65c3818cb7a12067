"""The backend contract: compile an ONNX model into a session and run feeds through it; profile per layer
where the backend can; build deployable engines where it can (``EngineBuilder``). Each backend declares what
it promises (``Capabilities``), its options with their command-line flags (``Flag``) and its library versions.
One registry chooses by name; nothing outside ``backends/`` asks which backend it has. Every backend passes
the same contract tests (tests/backends/test_contract.py).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from ..artifacts import BackendRecord
from ..errors import BackendError
from ..network.weights import Weights
from ..precision import Precision


class Session(ABC):
    """A compiled model, ready to run batches; a context manager that frees it on exit, exceptions included."""

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch; return the requested outputs (all graph outputs when None) by name."""

    @abstractmethod
    def close(self) -> None:
        """Free what the session holds (idempotent)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class LayerProfile:
    """What ``Backend.profile`` returns: milliseconds per layer (ONNX nodes on ONNX Runtime, fused layers on
    TensorRT) and the ONNX nodes each layer computes."""

    ms: dict[str, float]
    nodes: dict[str, list[str]]


@dataclass(frozen=True)
class BackendContext:
    """What a run tells any backend: its folder (TensorRT keeps its timing cache there), the largest batch it
    will run, and whether the models are final (verified and deployed) or per-unit probes."""

    run_dir: Path | None = None
    max_batch: int = 8
    final: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a backend promises; the pipeline asks these, never the backend's name."""

    device: str  # where models run (and where profiled latencies come from), in words
    exact_regions: bool = False  # a cut-out region computes bit-for-bit what the same nodes do in the whole model
    profiles_layers: bool = False  # ``profile`` gives per-layer times
    latency_is_deployment: bool = False  # ... and they are the deployment target's
    tf32_per_unit: bool = True  # a TF32 mark changes only its node (False: the whole engine, as on TensorRT)
    builds_engines: bool = False  # ``engine_builder`` gives an ``EngineBuilder``
    gpu: bool = False  # runs on a GPU: a job spread over a cluster asks for one


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one field of a backend's options, on the commands it applies to."""

    field: str  # the options dataclass field it sets
    flag: str  # e.g. "--ort-opt"
    help: str  # the default is appended from the options' own default
    commands: tuple[str, ...] = ("analyze", "run")
    type: Callable[[str], Any] = str
    choices: Sequence[Any] | None = None
    metavar: str | None = None


class EngineBuilder(ABC):
    """Builds deployable engines: the ONNX model as it will be deployed, serialised, with its layer report."""

    @abstractmethod
    def build_engine(self, model: onnx.ModelProto, log: list[str], pins: Mapping[str, Precision] | None = None):
        """A deployable engine of ``model`` (build output lines appended to ``log``). ``pins`` (layer name ->
        precision): a weakly typed build with those layers pinned (TensorRT 10.x), instead of strong typing."""

    @abstractmethod
    def serialize(self, engine) -> bytes:
        """The engine as the bytes of a plan file."""

    @abstractmethod
    def inspect(self, engine) -> dict:
        """The engine's layer information (TensorRT's engine inspector JSON)."""


class Backend(ABC):
    """Where lowered models run. A new backend is one module with a subclass plus one line in ``REGISTRY``;
    its flags reach the command line from ``flags`` (``backends.arguments``), without editing ``cli.py``."""

    name: ClassVar[str]
    options_type: ClassVar[type]  # this backend's own options dataclass (``from_json``/``to_json``)
    flags: ClassVar[tuple[Flag, ...]] = ()
    capabilities: Capabilities = Capabilities("this machine (CPU emulation, not a GPU)")  # may vary by options

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and reports: library, version, device, settings that change numbers."""

    @abstractmethod
    def compile(self, model: onnx.ModelProto, weights: Weights | None = None) -> Session:
        """Build a runnable session from a (lowered) ONNX model. ``weights`` holds the arrays behind the
        model's placeholders (``network.weights``): shared, never copied, where the backend can."""

    @abstractmethod
    def options_json(self) -> dict[str, Any]:
        """The settings that recreate this backend (its options as JSON), for the analysis record."""

    def versions(self) -> dict[str, str]:
        """The libraries whose versions can change its numbers, for the analysis record."""
        return {}

    def init_args(self) -> tuple:
        """What recreates this backend in another process (its options; the libraries load there)."""
        return (getattr(self, "options", None),)

    def __reduce__(self):
        return (type(self), self.init_args())

    def with_threads(self, threads: int) -> Backend:
        """The same backend using ``threads`` CPU threads per session (a worker of a cluster has one core);
        its ``describe`` says so where the count can change numbers. Backends without a CPU thread setting
        return themselves."""
        return self

    def threads_given(self) -> int | None:
        """The CPU threads per session the user set for this backend, if any (jobs in one process keep them)."""
        return None

    def record(self) -> BackendRecord:
        return BackendRecord(self.name, self.describe(), self.options_json())

    def runs_op(self, domain: str, op_type: str) -> bool:
        """Whether this backend runs ``domain:op_type`` (asked before anything runs, network.measured): by
        default the ops ONNX defines."""
        domain = "" if domain == "ai.onnx" else domain
        return domain in ("", "ai.onnx.ml") and onnx.defs.has(op_type, domain)

    def profile(self, model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> LayerProfile:
        """Milliseconds per layer of one run of ``feeds`` (where ``capabilities.profiles_layers``)."""
        raise BackendError(f"{self.describe()} cannot profile per node; use --latency-from or the estimate.")

    def engine_builder(self) -> EngineBuilder:
        """Its engine builder (where ``capabilities.builds_engines``)."""
        builders = ", ".join(n for n in REGISTRY if backend_class(n).capabilities.builds_engines)
        raise BackendError(f"{self.describe()} does not build engines; 'build' needs --backend {builders}.")


# name -> "module:class"; a new backend is one module plus one line here.
REGISTRY: dict[str, str] = {
    "onnxruntime": "trt_mpq.backends.onnxrt:OnnxRuntimeBackend",
    "onnxruntime-cuda": "trt_mpq.backends.onnxrt:OnnxRuntimeCudaBackend",
    "tensorrt": "trt_mpq.backends.tensorrt:TensorRTBackend",
}
AUTO_ORDER = ("tensorrt", "onnxruntime")  # the real thing when a GPU and TensorRT are there, else the emulation


def backend_names(builds_engines: bool = False) -> list[str]:
    """``auto`` and every registered backend; or the engine builders alone."""
    if builds_engines:
        return [n for n in REGISTRY if backend_class(n).capabilities.builds_engines]
    return ["auto", *REGISTRY]


@dataclass(frozen=True)
class Chosen:
    """A backend and, when ``auto`` chose it, why the ones before it were not used ('' otherwise)."""

    backend: Backend
    reason: str = ""

    def log_line(self, asked: str) -> str:
        """How the backend was chosen, for the log: ``auto`` says why it skipped the ones before."""
        if asked != "auto":
            return ""
        return f" (chosen by --backend auto{'; ' + self.reason if self.reason else ''})"


def backend_class(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise BackendError(f"unknown backend '{name}'; choose one of {', '.join(backend_names())}.")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_backend(name: str = "auto", options: Sequence[object] = (), context: BackendContext | None = None) -> Chosen:
    """Instantiate a backend by registry name with the options of its type among ``options`` (its defaults
    otherwise); ``auto`` takes the first available in ``AUTO_ORDER`` and says why it skipped the others."""
    context = context or BackendContext()
    if name == "auto":
        errors = []
        for candidate in AUTO_ORDER:
            try:
                chosen = open_backend(candidate, options, context)
            except BackendError as exc:
                errors.append(f"{candidate} not used: {str(exc).split('; ')[0].rstrip('.')}")
                continue
            return Chosen(chosen.backend, "; ".join(errors))
        raise BackendError("no backend is available: " + " ".join(errors))
    cls = backend_class(name)
    own = next((o for o in options if isinstance(o, cls.options_type)), None)
    return Chosen(cls(own if own is not None else cls.options_type(), context))


def restore_backend(record: BackendRecord, name: str | None = None, context: BackendContext | None = None) -> Chosen:
    """The backend a record describes, with its settings; or backend ``name`` (its defaults) when another."""
    if name and name != record.name:
        return open_backend(name, (), context)
    cls = backend_class(record.name)
    return open_backend(record.name, (cls.options_type.from_json(record.settings),), context)
