"""trt-mpq: per-layer precision planning for TensorRT from an FP32 ONNX model.

Works with no GPU and no TensorRT: planning runs on ONNX Runtime, emulating the same lowered ONNX that
TensorRT builds; the TensorRT backend imports its libraries only when asked for.

The pipeline, one call per command (each writes its artifacts into a run folder and returns typed records)::

    import trt_mpq
    analysis = trt_mpq.analyze("model.onnx", "runs/m", trt_mpq.AnalyzeOptions(calib="calib.npz"))
    report = trt_mpq.plan("runs/m", trt_mpq.PlanOptions(eval="eval.npz", budget=trt_mpq.Budget(max_drop=0.01)))
    result = trt_mpq.run("model.onnx", "runs/m", trt_mpq.AnalyzeOptions(...), trt_mpq.PlanOptions(...))
    rows = trt_mpq.check("runs/m", "layers.json")      # planned vs realised in an engine built elsewhere
    built = trt_mpq.build("runs/m")                     # on an NVIDIA GPU with TensorRT

Errors the user can fix are ``trt_mpq.errors.TrtMpqError`` with a one-sentence message.
"""

__version__ = "0.1.0"

from .artifacts import Analysis, Budget, BuildResult, CheckRow, PlanReport  # noqa: E402
from .commands.analyze import AnalyzeOptions, analyze, inspect_model  # noqa: E402
from .commands.build import BuildOptions, build  # noqa: E402
from .commands.check import check  # noqa: E402
from .commands.plan import PlanOptions, plan  # noqa: E402
from .commands.run import RunResult, run  # noqa: E402
from .errors import TrtMpqError  # noqa: E402
from .precision import Plan, Precision  # noqa: E402

__all__ = [
    "Analysis", "AnalyzeOptions", "Budget", "BuildOptions", "BuildResult", "CheckRow", "Plan", "PlanOptions",
    "PlanReport", "Precision", "RunResult", "TrtMpqError", "__version__", "analyze", "build", "check",
    "inspect_model", "plan", "run",
]
