"""TensorRT backend: the lowered ONNX built as a strongly typed engine and run on the GPU.

Nothing here imports TensorRT, cuda-python or Polygraphy at module level: ``import trt_mpq`` and the CPU path
work without them. Before any TensorRT object exists, ``probe()`` asks cuda-python for a GPU (without one,
``trt.Builder`` fails with CUDA error 35 and the runtime can take the process down) and turns every missing
piece into one sentence.

Building and running go through Polygraphy (``NetworkFromOnnxPath``, ``CreateConfig``, ``engine_from_network``,
``TrtRunner``); what is written by hand is the option mapping, the optimisation profile, the per-layer
profiler and the mapping of fused layers back to ONNX nodes (``trtexec.layer_nodes``), all tested without a GPU.

Precision lives in the graph (Q/DQ and Cast), so every engine is strongly typed: TensorRT 11 networks always
are; on 10.x the network is created with the STRONGLY_TYPED flag. TF32 is off, so FP32 units are true FP32,
unless the model marks TF32 units (the lowering's metadata): then it is on, for every FP32 GEMM of the engine.
Per-unit probe engines (the sensitivity loop) use a low builder optimisation level; the plan's verification,
latency profiling and the final engine use TensorRT's default level. Builds on one GPU share a timing cache.
"""

from __future__ import annotations

import contextlib
import io
import re
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..artifacts import RunFolder
from ..errors import BackendError
from ..network.weights import Weights
from ..precision import Precision
from .base import Backend, BackendContext, Capabilities, EngineBuilder, Flag, LayerProfile, Session
from .emulation import has_tf32
from .trt_probe import probe, version_tuple

# Level 1 times a short list of tactics and reads the shared timing cache, so layers that recur across the
# per-unit engines are timed once. Level 0 builds a little faster but takes the first working tactic (for FP16
# possibly a kernel the final engine never picks) and ignores the cache. Not yet measured on a GPU.
PROBE_OPT_LEVEL = 1
FINAL_OPT_LEVEL = 3  # TensorRT's default; 4-5 search longer for small gains


def network_kwargs(trt_version: str) -> dict:
    """Arguments for Polygraphy's NetworkFromOnnxPath: 10.x needs the STRONGLY_TYPED flag; 11.x networks are
    always strongly typed (the flag is not needed there)."""
    return {"strongly_typed": True} if version_tuple(trt_version) < (11,) else {}


@dataclass(frozen=True)
class TensorRTOptions:
    """Builder optimisation levels (0-5): of the per-unit probe engines, and of final models (the plan's
    verification, latency profiling and the deployed engine). None: PROBE_OPT_LEVEL and FINAL_OPT_LEVEL."""

    probe_opt_level: int | None = None
    final_opt_level: int | None = None

    def to_json(self) -> dict:
        return {"opt_level": self.probe_opt_level}

    @classmethod
    def from_json(cls, d) -> TensorRTOptions:
        return cls(d.get("opt_level"))


@dataclass(frozen=True)
class BuildSettings:
    opt_level: int = PROBE_OPT_LEVEL
    timing_cache: Path | None = None
    detailed: bool = False  # layer names, types and ONNX origins in the inspector (needed for profiling)
    max_batch: int = 8

    def check(self) -> None:
        if not 0 <= self.opt_level <= 5:
            raise BackendError(f"the builder optimisation level must be 0-5, not {self.opt_level}.")
        if self.max_batch < 1:
            raise BackendError(f"the largest batch must be at least 1, not {self.max_batch}.")


def config_kwargs(settings: BuildSettings, trt) -> dict:
    """Arguments for Polygraphy's CreateConfig (``trt`` is the tensorrt module, or a stand-in in tests)."""
    settings.check()
    verbosity = trt.ProfilingVerbosity
    cache = settings.timing_cache
    return {
        "tf32": False,  # the FP32 reference and the FP32 units stay true FP32
        "builder_optimization_level": settings.opt_level,
        "profiling_verbosity": verbosity.DETAILED if settings.detailed else verbosity.LAYER_NAMES_ONLY,
        "load_timing_cache": str(cache) if cache is not None and cache.is_file() else None,
    }


def shape_profile(inputs: Sequence[onnx.ValueInfoProto], max_batch: int) -> dict[str, tuple[tuple, tuple, tuple]]:
    """min/opt/max shapes per input: a dynamic axis 0 (the batch) spans 1..max_batch, optimised for max_batch.
    Empty when every input is static."""
    profile, dynamic = {}, False
    for vi in inputs:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        for axis, d in enumerate(dims):
            if d is None and axis > 0:
                raise BackendError(f"input '{vi.name}' has a dynamic dimension at axis {axis}; TensorRT needs it "
                                   "fixed: pass --shape when analysing.")
        lo = tuple(1 if d is None else d for d in dims)
        hi = tuple(max_batch if d is None else d for d in dims)
        dynamic = dynamic or None in dims  # even 1..1: a dynamic input needs a profile
        profile[vi.name] = (lo, hi, hi)
    return profile if dynamic else {}


def layer_times(runs: Sequence[Sequence[tuple[str, float]]]) -> dict[str, float]:
    """Median milliseconds per layer over timed runs; a layer reported twice in one run is summed first."""
    per_run: dict[str, list[float]] = {}
    for run in runs:
        totals: dict[str, float] = {}
        for name, ms in run:
            totals[name] = totals.get(name, 0.0) + float(ms)
        for name, ms in totals.items():
            per_run.setdefault(name, []).append(ms)
    return {name: statistics.median(v) for name, v in per_run.items()}


# ---------------------------------------------------------------------------------------- GPU code from here
# Everything below needs TensorRT and a GPU; tests/gpu/ runs it. It has never run on a GPU in this project's CI.


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def build_error(output: str, exc: BaseException) -> str:
    """The sentence for a failed build: the first error TensorRT or its parser printed ([E], ERROR: the cause),
    else Polygraphy's last [!] line (its generic verdict), else the exception; colours removed."""
    lines = [_ANSI.sub("", s).strip() for s in output.splitlines()]
    causes = [s for s in lines if s.startswith("[E]") or s.startswith("ERROR") or " ERROR" in s]
    verdicts = [s for s in lines if s.startswith("[!]")]
    return f"TensorRT could not build the model: {(causes[:1] or verdicts[-1:] or [first_line(exc)])[0]}"


class TensorRTSession(Session):
    def __init__(self, runner) -> None:
        self._runner = None
        try:
            runner.activate()
            self.inputs = set(runner.get_input_metadata().keys())
        except Exception as exc:
            raise BackendError(f"TensorRT could not prepare the engine to run: {first_line(exc)}") from None
        self._runner = runner

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        try:
            # order="C" keeps 0-d arrays 0-d (ascontiguousarray makes them 1-d); inputs TensorRT dropped are not fed
            values = self._runner.infer({k: np.asarray(v, order="C") for k, v in feeds.items() if k in self.inputs})
        except Exception as exc:
            raise BackendError(f"TensorRT failed to run the engine: {first_line(exc)}") from None
        names = list(outputs) if outputs is not None else list(values)
        missing = [n for n in names if n not in values]
        if missing:
            raise BackendError(f"the TensorRT engine has no output '{missing[0]}' (it has {', '.join(values)}).")
        return {n: np.array(values[n], copy=True) for n in names}  # Polygraphy reuses its output buffers

    def close(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None


class TensorRTBackend(Backend, EngineBuilder):
    name = "tensorrt"
    options_type = TensorRTOptions
    flags = (Flag("probe_opt_level", "--probe-opt-level", "tensorrt: builder optimisation level of the per-unit "
                  f"engines (default {PROBE_OPT_LEVEL}: they are built only to measure numbers; the plan's and the "
                  f"final engines use {FINAL_OPT_LEVEL})", type=int, choices=range(6), metavar="0-5"),
             Flag("final_opt_level", "--opt-level", f"builder optimisation level (default {FINAL_OPT_LEVEL}, "
                  "TensorRT's default; 4-5 search longer)", commands=("build",), type=int, choices=range(6),
                  metavar="0-5"))
    # fused engines: a region's engine fuses and picks tactics on its own, so regions are not bit-exact;
    # BuilderFlag.TF32 is global: a probe engine would run every FP32 GEMM in TF32
    capabilities = Capabilities("this GPU", exact_regions=False, profiles_layers=True, latency_is_deployment=True,
                                tf32_per_unit=False, builds_engines=True, gpu=True)

    def __init__(self, options: TensorRTOptions | None = None, context: BackendContext | None = None) -> None:
        missing = probe()
        if missing:
            raise BackendError(missing)
        import tensorrt as trt

        self._trt, self.options, self.context = trt, options or TensorRTOptions(), context or BackendContext()
        options, context = self.options, self.context
        chosen = options.final_opt_level if context.final else options.probe_opt_level
        opt_level = chosen if chosen is not None else FINAL_OPT_LEVEL if context.final else PROBE_OPT_LEVEL
        cache = RunFolder(context.run_dir).timing_cache_of_gpu() if context.run_dir is not None else None
        self.log_dir = RunFolder(context.run_dir).work if context.run_dir is not None else None
        self.settings = BuildSettings(opt_level, cache, False, context.max_batch)
        self.settings.check()

    init_args = lambda self: (self.options, self.context)  # noqa: E731 - what a Ray worker rebuilds it from

    def options_json(self) -> dict:
        return {"opt_level": self.settings.opt_level}  # the level this backend's engines are built at

    def versions(self) -> dict[str, str]:
        return {"tensorrt": self._trt.__version__}

    def engine_builder(self) -> EngineBuilder:
        return self

    def describe(self) -> str:
        return (f"tensorrt {self._trt.__version__} ({gpu_name()}; strongly typed, TF32 off, "
                f"optimisation level {self.settings.opt_level})")

    def build(self, model: onnx.ModelProto, settings: BuildSettings | None = None, log: list[str] | None = None,
              pins: Mapping[str, Precision] | None = None):
        """A deserialised ICudaEngine of ``model``: strongly typed, or with ``pins`` weakly typed (10.x)."""
        from polygraphy.backend.trt import (
            CreateConfig,
            NetworkFromOnnxPath,
            PostprocessNetwork,
            Profile,
            engine_from_network,
        )
        from polygraphy.logger import G_LOGGER

        settings = settings or self.settings
        kwargs = config_kwargs(settings, self._trt)
        if has_tf32(model):  # the plan verified its FP32 GEMMs in TF32 (marked by the lowering): the flag is global
            kwargs["tf32"] = True
        if pins is not None:
            if version_tuple(self._trt.__version__) >= (11,):
                raise BackendError(f"TensorRT {self._trt.__version__} builds strongly typed networks only (11.x "
                                   "removed weak typing); build without --typing weak, or use TensorRT 10.x.")
            kwargs.update(fp16=True, int8=True, precision_constraints="obey")
            types = {t.data_type for t in model.graph.initializer}
            if onnx.TensorProto.INT4 in types:
                raise BackendError("the plan has INT4 weights, which this tool builds strongly typed only; build "
                                   "without --typing weak.")
            if onnx.TensorProto.FLOAT8E4M3FN in types:
                kwargs["fp8"] = True
            if Precision.BF16 in pins.values():
                if getattr(self._trt, "bfloat16", None) is None:
                    raise BackendError(f"TensorRT {self._trt.__version__} has no BF16; plan without bf16 or use "
                                       "TensorRT 9 or later.")
                kwargs["bf16"] = True
        inits = {t.name for t in model.graph.initializer}  # IR < 4 lists initializers among the inputs
        profile = shape_profile([i for i in model.graph.input if i.name not in inits], settings.max_batch)
        if profile:
            p = Profile()
            for name, (lo, opt, hi) in profile.items():
                p.add(name, min=lo, opt=opt, max=hi)
            kwargs["profiles"] = [p]
        buffer = io.StringIO()
        previous = G_LOGGER.module_severity
        G_LOGGER.module_severity = G_LOGGER.VERBOSE if log is not None else G_LOGGER.ERROR
        with tempfile.TemporaryDirectory(prefix="trt-mpq-build-") as tmp:
            path = Path(tmp) / "model.onnx"
            if model.ByteSize() > 1_900_000_000:  # saving as external data empties the tensors it is given
                copy = onnx.ModelProto()
                copy.CopyFrom(model)
                onnx.save(copy, str(path), save_as_external_data=True)
            else:
                onnx.save(model, str(path))
            try:
                with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                    if pins is None:
                        network = NetworkFromOnnxPath(str(path), **network_kwargs(self._trt.__version__))
                    else:
                        trt = self._trt
                        network = PostprocessNetwork(NetworkFromOnnxPath(str(path)),
                                                     lambda network: pin_layers(network, pins, trt),
                                                     "pin the FP16/FP32 units' layers")
                    cache = str(settings.timing_cache) if settings.timing_cache else None
                    engine = engine_from_network(network, CreateConfig(**kwargs), save_timing_cache=cache)
            except Exception as exc:
                raise BackendError(build_error(buffer.getvalue(), exc) + self._keep_log(buffer.getvalue())) from None
            finally:
                G_LOGGER.module_severity = previous
                if log is not None:
                    log.extend(buffer.getvalue().splitlines())
        return engine

    def _keep_log(self, text: str) -> str:
        """Keep a failed build's whole log in the run folder (probe and verification builds have no build.log)."""
        if self.log_dir is None or not text.strip():
            return ""
        with contextlib.suppress(OSError):
            self.log_dir.mkdir(parents=True, exist_ok=True)
            path = self.log_dir / "failed-build.log"
            path.write_text(_ANSI.sub("", text))
            return f" (full log: {path})"
        return ""

    def build_engine(self, model: onnx.ModelProto, log: list[str], pins: Mapping[str, Precision] | None = None):
        """The deployable engine: this backend's settings with detailed layer information."""
        return self.build(model, BuildSettings(self.settings.opt_level, self.settings.timing_cache, True,
                                               self.settings.max_batch), log, pins)

    def serialize(self, engine) -> bytes:
        return bytes(engine.serialize())

    def compile(self, model: onnx.ModelProto, weights: Weights | None = None) -> TensorRTSession:
        from polygraphy.backend.trt import TrtRunner

        return TensorRTSession(TrtRunner(self.build(weights.fill(model) if weights is not None else model)))

    def inspect(self, engine) -> dict:
        """The engine inspector's layer information (JSON; detailed only for engines built with ``detailed``)."""
        return inspect_engine(engine, self._trt)

    def profile(self, model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], runs: int = 20) -> LayerProfile:
        """Median milliseconds per fused layer over ``runs`` timed inferences (after warm-up), with each
        layer's ONNX nodes from the inspector; built at the final optimisation level for this batch."""
        from polygraphy.backend.trt import TrtRunner

        from .trt_layers import layer_nodes

        batch = max((int(np.shape(v)[0]) for v in feeds.values() if np.ndim(v)), default=1)  # 0-d: no batch
        settings = BuildSettings(FINAL_OPT_LEVEL, self.settings.timing_cache, True, batch)
        engine = self.build(model, settings)
        nodes = layer_nodes(self.inspect(engine))
        recorder = make_profiler(self._trt)
        runner = TrtRunner(engine)
        session = TensorRTSession(runner)
        try:
            for _ in range(3):
                session.run(feeds)
            runner.context.profiler = recorder
            for _ in range(runs):
                recorder.current = []
                session.run(feeds)
                recorder.runs.append(recorder.current)
        finally:
            session.close()
        return LayerProfile(layer_times(recorder.runs), nodes)


def pin_layers(network, pins: Mapping[str, Precision], trt) -> list[str]:
    """Weak typing: give each layer named in ``pins`` its precision and float output types (what trtexec's
    --layerPrecisions/--layerOutputTypes do); return the pinned names no layer has."""
    dtype = {Precision.FP16: trt.float16, Precision.FP32: trt.float32}
    if getattr(trt, "bfloat16", None) is not None:  # TensorRT 9+
        dtype[Precision.BF16] = trt.bfloat16
    found = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        p = pins.get(layer.name)
        if p not in dtype:
            continue
        layer.precision = dtype[p]
        for k in range(layer.num_outputs):
            if layer.get_output(k).dtype in dtype.values():  # shapes and indices keep their type
                layer.set_output_type(k, dtype[p])
        found.add(layer.name)
    return [n for n in pins if n not in found]


def inspect_engine(engine, trt) -> dict:
    """Layer information with an execution context whose dynamic inputs sit at their optimisation profile's
    opt shape (as trtexec does): without one the inspector writes "Format not available" for every tensor."""
    import json

    inspector = engine.create_engine_inspector()
    context = engine.create_execution_context()
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and -1 in tuple(engine.get_tensor_shape(name)):
            context.set_input_shape(name, tuple(engine.get_tensor_profile_shape(name, 0)[1]))
    inspector.execution_context = context
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def make_profiler(trt):
    """A trt.IProfiler that records (layer, ms) pairs of the current run."""

    class Recorder(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.runs: list[list[tuple[str, float]]] = []
            self.current: list[tuple[str, float]] = []

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.current.append((layer_name, ms))

    return Recorder()


def gpu_name() -> str:
    with contextlib.suppress(Exception):
        from cuda.bindings import runtime as cudart

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name
            return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).strip("\x00 ")
    return "NVIDIA GPU"
