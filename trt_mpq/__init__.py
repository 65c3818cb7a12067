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

import importlib

# The public API, imported on first use: `import trt_mpq` stays instant and needs nothing installed, and the
# CLI's --help does not pay for onnx, scipy and onnxruntime.
_API = {
    "Analysis": "artifacts", "Budget": "artifacts", "BuildResult": "artifacts", "CheckRow": "artifacts",
    "PlanReport": "artifacts", "AnalyzeOptions": "commands.analyze", "analyze": "commands.analyze",
    "inspect_model": "commands.analyze", "BuildOptions": "commands.build", "build": "commands.build",
    "check": "commands.check", "PlanOptions": "commands.plan", "plan": "commands.plan",
    "RunResult": "commands.run", "run": "commands.run", "TrtMpqError": "errors", "Plan": "precision",
    "Precision": "precision",
}
__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'trt_mpq' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
