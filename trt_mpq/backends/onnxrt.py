"""ONNX Runtime backends: ``onnxruntime``, the embedded default, on the CPU; ``onnxruntime-cuda``, the same
on ONNX Runtime's CUDA provider (onnxruntime-gpu), chosen only by name.

Q/DQ fusion is always OFF. By default ONNX Runtime fuses QuantizeLinear/DequantizeLinear + Conv into its own
integer kernels, which on CPUs without VNNI saturate and disagree with what TensorRT's INT8 computes (all-INT8
MobileNetV2 keeps 41 % top-1 agreement fused vs 64 % unfused on real photos). Unfused Q/DQ is exactly the
arithmetic TensorRT's explicit quantization specifies.

``ort_optimize="none"`` (the default) runs the graph as written (``ORT_DISABLE_ALL``). Every node then uses
the same kernel whether it runs in the whole model or in a cut-out part of it, so the fast sensitivity path
(downstream regions only) gives bit-for-bit the numbers of the naive whole-model path.

``ort_optimize="all"`` keeps ONNX Runtime's other optimisations (NCHWc convolution kernels, Conv+activation
fusion, exact constant folding of weight DequantizeLinear) with ``session.disable_quant_qdq`` set, so Q/DQ
stay separate float ops. It runs MobileNetV2 about 2.3x faster, and its per-unit sensitivities agree with
``none`` to within 0.2 % relative; but which kernel a node gets then depends on where the graph is cut, so
results are reproducible only to that level, not bit for bit.

The number of intra-op threads can change numbers: a GEMM whose weight comes from DequantizeLinear (not a
constant ONNX Runtime prepacks) splits its work by thread count (the digits example's fc1: 6.7e-6 absolute
between 1 and 2 threads). So the count is recorded when set (``--ort-threads``), and a cluster's workers run
one thread each. Intra-op threads do not spin while waiting: on small machines spinning threads of one
session steal the cores of the next (two alternating MobileNetV2 sessions on 2 cores: 116 ms/batch spinning,
64 ms not).
FP16 Cast islands may be computed in FP32 inside ONNX Runtime's CPU kernels, so FP16 error is a lower bound.
BF16 islands and TF32 GEMMs are emulated (backends.emulation: bfloat16 / TF32 roundings, float32 arithmetic).

The CUDA provider runs cuDNN and cuBLAS kernels chosen per shape (and, by default, by an algorithm search), so
a cut-out region is not promised to compute bit-for-bit what the whole model does: it does not declare exact
regions, and its latencies are a GPU's under ONNX Runtime, not TensorRT's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from ..errors import BackendError
from ..network.weights import Weights
from .base import Backend, BackendContext, Capabilities, Flag, LayerProfile, Session
from .emulation import emulate_bf16, emulate_fp16_clip, emulate_tf32, has_bf16, has_fp16_clip, has_tf32


def _runnable(model: onnx.ModelProto) -> bytes:
    model = emulate_bf16(model) if has_bf16(model) else model
    model = emulate_fp16_clip(model) if has_fp16_clip(model) else model
    return (emulate_tf32(model) if has_tf32(model) else model).SerializeToString()

ORT_OPTIMIZE = ("none", "all")



@dataclass(frozen=True)
class OnnxRuntimeOptions:
    optimize: str = "none"  # "none" (ORT_DISABLE_ALL, bit-exact) or "all" (graph optimisations, Q/DQ fusion off)
    threads: int = 0  # intra-op threads; 0: the library's default
    custom_ops: tuple[str, ...] = ()  # custom-op kernel libraries (SessionOptions.register_custom_ops_library)

    def __post_init__(self) -> None:
        if self.optimize not in ORT_OPTIMIZE:
            raise BackendError(f"--ort-opt '{self.optimize}' is not one of {', '.join(ORT_OPTIMIZE)}.")
        libs = (self.custom_ops.split(",") if isinstance(self.custom_ops, str) else self.custom_ops) or ()
        libs = tuple(str(Path(p).resolve()) for p in libs if str(p).strip())
        for lib in libs:
            if not Path(lib).is_file():
                raise BackendError(f"--ort-custom-ops '{lib}' does not exist (give the path of the .so that "
                                   "registers the ops' kernels with onnxruntime).")
        object.__setattr__(self, "custom_ops", libs)

    def to_json(self) -> dict:
        return {"ort_optimize": self.optimize, **({"ort_threads": self.threads} if self.threads else {}),
                **({"ort_custom_ops": list(self.custom_ops)} if self.custom_ops else {})}

    @classmethod
    def from_json(cls, d) -> OnnxRuntimeOptions:
        return cls(d.get("ort_optimize") or "none", int(d.get("ort_threads") or 0), tuple(d.get("ort_custom_ops")
                                                                                          or ()))


class OnnxRuntimeSession(Session):
    def __init__(self, session) -> None:
        self._session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else self.output_names
        try:
            values = self._session.run(names, dict(feeds))
        except Exception as exc:  # onnxruntime raises its own exception types from C++
            raise BackendError(f"onnxruntime failed to run the model: {str(exc).splitlines()[0]}") from None
        return dict(zip(names, values, strict=True))

    def close(self) -> None:
        self._session = None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    options_type = OnnxRuntimeOptions
    flags = (Flag("optimize", "--ort-opt", "onnxruntime graph optimizations: none (bit-exact, what TensorRT's Q/DQ "
                  "arithmetic specifies) or all (about 2x faster, results reproducible to ~0.2%; Q/DQ fusion "
                  "stays off either way)", choices=ORT_OPTIMIZE),
             Flag("threads", "--ort-threads", "threads per onnxruntime session (0: every core). A GEMM whose "
                  "weight is dequantized can round differently with another count, so the count is part of the "
                  "record; Ray workers use 1: give 1 here for the same numbers in one process",
                  type=int, metavar="N"),
             Flag("custom_ops", "--ort-custom-ops", "onnxruntime custom-op libraries (LIB.so[,LIB2.so]) that run "
                  "ops of the model it lacks, registered in every session", metavar="LIB.so"))
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    device = "this machine (CPU emulation, not a GPU)"
    _exact = True  # the CPU provider's kernels do not depend on where the graph is cut
    _gpu = False

    def __init__(self, options: OnnxRuntimeOptions | None = None, context: BackendContext | None = None) -> None:
        options = options or OnnxRuntimeOptions()
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - onnxruntime is a hard dependency
            raise BackendError("onnxruntime is not installed; run: pip install onnxruntime") from None
        self._ort = ort
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendError(f"{self.name} needs ONNX Runtime's {missing[0]}, which this onnxruntime "
                               f"{ort.__version__} lacks; pip install onnxruntime-gpu on a host with a CUDA GPU.")
        self.options = options
        self._kernels: frozenset[tuple[str, str]] | None = None
        # ORT_DISABLE_ALL runs the same kernel for a node wherever the graph is cut; "all" picks per cut
        self.capabilities = Capabilities(self.device, exact_regions=self._exact and options.optimize == "none",
                                         profiles_layers=True, gpu=self._gpu)

    def options_json(self) -> dict:
        return self.options.to_json()

    def with_threads(self, threads: int) -> OnnxRuntimeBackend:
        return type(self)(replace(self.options, threads=threads))

    def threads_given(self) -> int | None:
        return self.options.threads or None

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": self._ort.__version__}

    def runs_op(self, domain: str, op_type: str) -> bool:
        """A kernel of its providers, an op ONNX defines (a function it expands), or (with --ort-custom-ops)
        any op of a domain onnxruntime does not own: the library is trusted to register it."""
        domain = "" if domain == "ai.onnx" else domain
        if self._kernels is None:  # the library's own table of (domain, op) kernels, read when first asked
            from onnxruntime.capi import _pybind_state

            self._kernels = frozenset((k.domain, k.op_name) for k in _pybind_state.get_all_opkernel_def()
                                      if k.provider in self.providers)
        if (domain, op_type) in self._kernels or super().runs_op(domain, op_type):
            return True
        return bool(self.options.custom_ops) and domain not in ("", "ai.onnx.ml", "com.microsoft")

    def describe(self) -> str:
        opt = "graph optimizations on, Q/DQ fusion off" if self.options.optimize == "all" else "graph optimizations off"
        n = self.options.threads
        threads = f"; {n} thread{'s' if n > 1 else ''} per session" if n else ""
        return f"onnxruntime {self._ort.__version__} ({', '.join(self.providers)}; {opt}{threads})"

    def session_options(self):
        so = self._ort.SessionOptions()
        level = self._ort.GraphOptimizationLevel
        if self.options.optimize == "all":
            so.graph_optimization_level = level.ORT_ENABLE_ALL
            so.add_session_config_entry("session.disable_quant_qdq", "1")
        else:
            so.graph_optimization_level = level.ORT_DISABLE_ALL
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
        for lib in self.options.custom_ops:
            try:
                so.register_custom_ops_library(lib)
            except Exception as exc:
                raise BackendError(f"onnxruntime could not load the custom-op library '{lib}': "
                                   f"{str(exc).splitlines()[0]}") from None
        return so

    def profile(self, model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], runs: int = 10) -> LayerProfile:
        """Average milliseconds per run of every node, from ONNX Runtime's own profiler (warm-up included)."""
        import json
        import tempfile

        so = self.session_options()
        with tempfile.TemporaryDirectory(prefix="trt-mpq-prof-") as tmp:
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort")
            try:
                session = self._ort.InferenceSession(_runnable(model), so, providers=list(self.providers))
                session.run(None, dict(feeds))
                for _ in range(runs):
                    session.run(None, dict(feeds))
                events = json.loads(Path(session.end_profiling()).read_text())
            except Exception as exc:
                raise BackendError(f"onnxruntime could not profile the model: {str(exc).splitlines()[0]}") from None
        runs_seen: dict[str, int] = {}
        total: dict[str, float] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                node = e["name"][: -len("_kernel_time")]
                total[node] = total.get(node, 0.0) + e["dur"] / 1e3
                runs_seen[node] = runs_seen.get(node, 0) + 1
        # the warm-up run is profiled too: average over every run seen
        return LayerProfile({n: total[n] / runs_seen[n] for n in total}, {n: [n] for n in total})

    def compile(self, model: onnx.ModelProto, weights: Weights | None = None) -> OnnxRuntimeSession:
        options = self.session_options()
        if weights is not None:
            names = weights.placeholders(model)
            if names:
                shared = weights.handles("onnxruntime")
                for n in names:
                    if n not in shared:  # a view of the bank's array: no copy, alive as long as the bank
                        # setdefault: a job on another thread may have made it meanwhile; one value wins
                        shared.setdefault(n, self._ort.OrtValue.ortvalue_from_numpy(weights.arrays[n]))
                options.add_external_initializers(names, [shared[n] for n in names])
        try:
            session = self._ort.InferenceSession(_runnable(model), options, providers=list(self.providers))
        except Exception as exc:
            raise BackendError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None
        return OnnxRuntimeSession(session)


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    """The same lowered ONNX on ONNX Runtime's CUDA provider: a GPU, but neither TensorRT's kernels nor its
    fusions; regions are not bit-exact (cuDNN picks algorithms per shape)."""

    name = "onnxruntime-cuda"
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
    device = "this machine's NVIDIA GPU through ONNX Runtime's CUDA provider (not TensorRT)"
    _exact = False
    _gpu = True
