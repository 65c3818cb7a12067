"""Bias correction: quantizing a weight shifts the mean of its unit's output by (W_q - W) applied to the mean
input; subtracting that shift from the FP32 bias restores the mean (Nagel et al., "Data-Free Quantization",
2019, the empirical variant: the input means come from the calibration pass)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ..network.graph import attributes

CHANNEL_AXIS = {"Conv": 1, "Gemm": -1, "MatMul": -1}  # the input axis a weight contracts


def output_shift(node: onnx.NodeProto, delta: np.ndarray, weight_pos: int, mean: Sequence[float]) -> np.ndarray | None:
    """The expected change of each output channel when the weight at ``weight_pos`` changes by ``delta`` and the
    other input has per-channel ``mean``; None where the op or layout is not covered."""
    d, m = delta.astype(np.float64), np.asarray(mean, np.float64)
    attrs = attributes(node)
    if node.op_type == "Conv" and weight_pos == 1 and d.ndim >= 3:
        group = int(attrs.get("group", 1))
        cout, cin_g = d.shape[:2]
        if m.size != cin_g * group or cout % group:
            return None
        per = d.sum(axis=tuple(range(2, d.ndim))).reshape(group, cout // group, cin_g)
        return np.einsum("gok,gk->go", per, m.reshape(group, cin_g)).reshape(cout)
    if node.op_type == "Gemm" and weight_pos == 1 and d.ndim == 2 and not attrs.get("transA", 0):
        b = d.T if attrs.get("transB", 0) else d
        return m @ b * float(attrs.get("alpha", 1.0)) if m.size == b.shape[0] else None
    if node.op_type == "MatMul" and weight_pos == 1 and d.ndim == 2 and m.size == d.shape[0]:
        return m @ d
    return None
