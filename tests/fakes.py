"""Backends for tests, behind the real interface (no monkeypatching of the library's internals)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from trt_mpq.backends import Backend, BackendContext, Session
from trt_mpq.backends.base import Capabilities, Flag
from trt_mpq.backends.onnxrt import OnnxRuntimeBackend, OnnxRuntimeOptions
from trt_mpq.errors import BackendError
from trt_mpq.progress import Progress


class CountingBackend(Backend):
    """ONNX Runtime, counting the models it compiles: proves what a resumed run recomputes."""

    name = "onnxruntime"  # records as the backend it wraps, so a plan can restore it
    options_type = OnnxRuntimeOptions

    def __init__(self, optimize: str = "all") -> None:
        self.inner = OnnxRuntimeBackend(OnnxRuntimeOptions(optimize))
        self.capabilities = self.inner.capabilities
        self.compiled = 0

    def describe(self) -> str:
        return self.inner.describe()

    def options_json(self) -> dict:
        return self.inner.options_json()

    def versions(self) -> dict[str, str]:
        return self.inner.versions()

    def compile(self, model, weights=None):
        self.compiled += 1
        return self.inner.compile(model, weights)


class ReferenceSession(Session):
    def __init__(self, evaluator, output_names: list[str]) -> None:
        self._evaluator = evaluator
        self.output_names = output_names

    def run(self, feeds, outputs=None):
        names = list(outputs) if outputs is not None else self.output_names
        if self._evaluator is None:
            raise BackendError("the session is closed.")
        try:
            values = self._evaluator.run(names, dict(feeds))
        except Exception as exc:  # the reference evaluator raises whatever numpy raises
            raise BackendError(f"the reference evaluator failed: {str(exc).splitlines()[0]}") from None
        return dict(zip(names, (np.asarray(v) for v in values), strict=True))

    def close(self):
        self._evaluator = None


@dataclass(frozen=True)
class ReferenceOptions:
    def to_json(self) -> dict:
        return {}

    @classmethod
    def from_json(cls, d) -> ReferenceOptions:
        return cls()


class ReferenceBackend(Backend):
    """In memory, no ONNX Runtime: ONNX's own reference evaluator (numpy, node by node). Slow, but every node
    is computed the same way wherever the graph is cut, so it promises exact regions."""

    name = "reference"
    options_type = ReferenceOptions
    capabilities = Capabilities("this process (ONNX's reference evaluator, numpy)", exact_regions=True)

    def __init__(self, options: ReferenceOptions | None = None, context: BackendContext | None = None) -> None:
        self.options = options or ReferenceOptions()

    def describe(self) -> str:
        return f"onnx {onnx.__version__} reference evaluator (numpy {np.__version__})"

    def options_json(self) -> dict:
        return self.options.to_json()

    def versions(self) -> dict[str, str]:
        return {"onnx": onnx.__version__}

    def compile(self, model, weights=None):
        from onnx.reference import ReferenceEvaluator

        model = weights.fill(model) if weights is not None else model
        if any(o.domain in ("", "ai.onnx") and o.version < 19 for o in model.opset_import):
            # the evaluator implements (De)QuantizeLinear from opset 19 on; what this project writes reads
            # the same there (19 added float8 types and Cast's saturate, whose default is the old behaviour)
            model = onnx.ModelProto.FromString(model.SerializeToString())
            for o in model.opset_import:
                if o.domain in ("", "ai.onnx"):
                    o.version = max(o.version, 19)
        try:
            evaluator = ReferenceEvaluator(model)
        except Exception as exc:
            raise BackendError(f"the reference evaluator cannot load the model: {str(exc).splitlines()[0]}") from None
        return ReferenceSession(evaluator, [o.name for o in model.graph.output])


@dataclass(frozen=True)
class ToyOptions:
    level: int = 1

    def to_json(self) -> dict:
        return {"level": self.level}

    @classmethod
    def from_json(cls, d) -> ToyOptions:
        return cls(int(d.get("level", 1)))


class ToyBackend(ReferenceBackend):
    """A backend a test registers to show that a new backend's flags reach the command line by themselves."""

    name = "toy"
    options_type = ToyOptions
    flags = (Flag("level", "--toy-level", "toy: how hard it tries", type=int, metavar="N"),)

    def __init__(self, options: ToyOptions | None = None, context: BackendContext | None = None) -> None:
        self.options = options or ToyOptions()

    def describe(self) -> str:
        return f"toy level {self.options.level}"


class SlowBackend(OnnxRuntimeBackend):
    """ONNX Runtime, each run made to last at least ``delay`` seconds: a job lasts long enough for a test to
    kill the worker running it. Travels to Ray workers by value (the test registers this module)."""

    delay = 0.15

    def compile(self, model, weights=None):
        import time

        session = super().compile(model, weights)
        run = session.run

        def slow(feeds, outputs=None):
            time.sleep(self.delay)
            return run(feeds, outputs)

        session.run = slow
        return session


class FailingBackend(OnnxRuntimeBackend):
    """ONNX Runtime that cannot compile anything, as a worker without the right library would say."""

    def compile(self, model, weights=None):
        raise BackendError("the worker's backend cannot load the model: it is a test.")


class StopAfter(Progress):
    """Progress that stops the run (as Ctrl-C or a kill would) after ``n`` per-unit measurements."""

    def __init__(self, n):
        self.n, self.stage = n, ""

    def start(self, label, total):
        self.stage = label

    def advance(self, k=1):
        if self.stage.startswith("per-unit"):
            self.n -= k
            if self.n <= 0:
                raise KeyboardInterrupt


class CountingProgress(Progress):
    """Progress that records what was started (label, total) and how far it advanced."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []
        self.advanced = 0

    def start(self, label, total):
        self.started.append((label, total))

    def advance(self, n=1):
        self.advanced += n


@dataclass(frozen=True)
class Make:
    """An executor test's job that makes batch ``batch``."""

    batch: int


@dataclass(frozen=True)
class Read:
    """An executor test's job that reads the batches it names."""

    batches: tuple[int, ...]


def read_sums(job: Read, reader) -> list[float]:
    return [float(reader.read(b, ["t"])["t"].sum()) for b in job.batches]
