"""The model as a PyTorch module, for generators that need gradients (``trt-mpq[datagen]``: onnx2torch + torch).

onnx2torch converts the graph node by node. Real exports need three things first, none of which changes
what the model computes: weights held in ``Constant`` nodes (Paddle's exporter) are initializers, as the
loader leaves them and as its converters read weights; a graph at opset 18 or later is converted down to 17 (its
ReduceMean converters stop at 13-17); ``Reshape(allowzero=1)`` becomes ``allowzero=0`` where the shape holds
no zero (the two are then the same). Extra outputs (a BatchNormalization's input) are exposed as graph
outputs before converting, so the module returns them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper, version_converter

from ..errors import ConfigError
from ..network.model import constants_to_initializers

EXTRA = "pip install 'trt-mpq[datagen]' (onnx2torch and PyTorch; the CPU build is enough)"
MAX_OPSET = 17


def torch_available() -> bool:
    try:
        import onnx2torch  # noqa: F401
        import torch  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken torchvision beside torch fails with other errors than ImportError
        return False
    return True


def _prepared(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    present = {o.name for o in g.output}
    extra = [n for n in outputs if n not in present]
    if extra:  # with their types and shapes: converters read a tensor's rank from them
        known = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
        g.output.extend(known.get(n) or onnx.helper.make_empty_tensor_value_info(n) for n in extra)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), MAX_OPSET)
    if opset > MAX_OPSET:
        m = version_converter.convert_version(m, MAX_OPSET)
    constants_to_initializers(m.graph)  # the loader's, again: the version converter may add Constant nodes
    inits = {t.name: t for t in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        for a in node.attribute:
            if a.name == "allowzero" and a.i and 0 not in numpy_helper.to_array(inits[node.input[1]]).tolist():
                a.i = 0
    return m


def torch_module(model: onnx.ModelProto, outputs: Sequence[str] = ()):
    """``model`` as an eval-mode ``torch.nn.Module`` whose parameters need no gradient, returning the graph's
    outputs followed by ``outputs`` (tensor names inside the graph). ConfigError when the extra is missing or
    the converter cannot take the graph."""
    if not torch_available():
        raise ConfigError(f"generating data by gradients needs PyTorch and onnx2torch: {EXTRA}.")
    import onnx2torch

    try:
        module = onnx2torch.convert(_prepared(model, outputs))
    except Exception as exc:  # noqa: BLE001 - the converter raises anything from KeyError to NotImplementedError
        raise ConfigError(f"onnx2torch cannot convert this model for gradient-based generation ({exc}); use "
                          "--calib pink-noise with --preprocess, or your own data.") from None
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def as_list(result) -> list:
    """A converted module's result as a list (one output comes back bare)."""
    return list(result) if isinstance(result, (list, tuple)) else [result]


def check_same(module, feeds: dict[str, np.ndarray], reference: Sequence[np.ndarray], rtol: float = 1e-3) -> None:
    """Refuse a conversion whose outputs differ from the backend's (``reference``, on ``feeds``): gradients of
    a different function would generate data for another model."""
    import torch

    with torch.no_grad():
        got = as_list(module(*[torch.from_numpy(v) for v in feeds.values()]))
    for r, g in zip(reference, got, strict=False):
        g = g.numpy()
        # relative to the output's size, with a floor: a probability map near zero on noise (PP-OCRv4's)
        # differs by float32 rounding, 1e-7, which a purely relative test would call a different function
        allowed = rtol * max(float(np.abs(r).max()), 1e-2)
        if g.shape != r.shape or float(np.abs(g - r).max()) > allowed:
            raise ConfigError("the PyTorch conversion of this model (onnx2torch) computes something else than "
                              "the backend does; gradient-based generation is not possible for it. Use "
                              "--calib pink-noise with --preprocess, or your own data.")
