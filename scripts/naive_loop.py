"""The loop a user writes by hand without trt-mpq: for every layer, ONNX Runtime's ``quantize_static`` makes a
model where only that layer is INT8 (Q/DQ, per-channel symmetric weights, min-max symmetric activations,
calibrated on the data each time), then the data runs through it and the FP32 model, and the outputs are
compared. The baseline ``scripts/benchmark.py`` times trt-mpq against.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx


def naive_quantize_static(model: onnx.ModelProto, layers: Sequence[str], batches: Sequence[dict],
                          progress=None) -> dict[str, float]:
    """Per layer (its main ONNX node's name): the NMSE of the outputs with that layer alone in INT8."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    def session(path: str):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    results = {}
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice to pre-process, once per layer
    with tempfile.TemporaryDirectory(prefix="trt-mpq-naive-") as tmp:
        source = str(Path(tmp) / "fp32.onnx")  # a file: quantize_static rewrites a ModelProto it is given
        onnx.save(model, source)
        for layer in layers:
            out = str(Path(tmp) / "q.onnx")
            quantize_static(source, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_quantize=[layer],
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
            fp32, quantized = session(source), session(out)
            err = power = 0.0
            for feeds in batches:
                ref = fp32.run(None, feeds)[0].astype(np.float64)
                got = quantized.run(None, feeds)[0].astype(np.float64)
                err, power = err + float(np.sum((got - ref) ** 2)), power + float(np.sum(ref ** 2))
            results[layer] = err / power if power else 0.0
            if progress:
                progress()
    return results
