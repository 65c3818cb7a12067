"""trt-mpq: per-layer precision planning for TensorRT from an FP32 ONNX model.

Works with no GPU and no TensorRT: planning runs on ONNX Runtime, emulating the same lowered ONNX that
TensorRT builds. Heavy or optional pieces are imported by the modules that need them.
"""

__version__ = "0.1.0"
