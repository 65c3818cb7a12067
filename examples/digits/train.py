"""Train a tiny residual CNN on scikit-learn's digits and export it to ONNX.

The model is a test fixture for per-layer mixed-precision quantization: small
enough to train in seconds on a CPU, yet it has the op mix that matters
(Conv without bias + BatchNormalization, a residual Add, a strided Conv,
Flatten and Gemm). Training and export need only numpy, scikit-learn and
onnx; onnxruntime checks that the exported graph matches the numpy model.

Files written to --out (default: this script's folder):
  digits_cnn.onnx  "input" float32 [batch,1,8,8] -> "logits" float32 [batch,10]
  calib.npz        input: 256 training images, float32 [256,1,8,8]
  eval.npz         input: every test image, float32 [N,1,8,8]; labels: int64 [N]

Reruns on the same machine with the same library versions give byte-identical files.
"""

from __future__ import annotations

import argparse
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
EPOCHS = 12
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
BN_EPS = 1e-5
N_CALIB = 256
MIN_ACCURACY = 0.95
OPSET = 17
IR_VERSION = 8  # opset 17 needs >= 8; 8 keeps the model loadable by older runtimes


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_train, x_test, y_train, y_test); images are [N,1,8,8] in [0,1]."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


# --------------------------------------------------------------------------
# Numpy layers (NCHW, 3x3 kernels, padding 1, like the exported Conv nodes)
# --------------------------------------------------------------------------


def _out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def im2col(x: np.ndarray, stride: int) -> np.ndarray:
    """[N,C,H,W] -> [N*Ho*Wo, C*9] patches, column order matching W.reshape(Co, -1)."""
    n, c, h, w = x.shape
    ho, wo = _out_size(h, stride), _out_size(w, stride)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.empty((n, c, 3, 3, ho, wo), x.dtype)
    for i in range(3):
        for j in range(3):
            cols[:, :, i, j] = xp[
                :, :, i : i + stride * ho : stride, j : j + stride * wo : stride
            ]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * ho * wo, c * 9)


def col2im(dcols: np.ndarray, x_shape: tuple[int, ...], stride: int) -> np.ndarray:
    """Adjoint of im2col: scatter-add patch gradients back onto the input."""
    n, c, h, w = x_shape
    ho, wo = _out_size(h, stride), _out_size(w, stride)
    dcols = dcols.reshape(n, ho, wo, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2, w + 2), dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride] += (
                dcols[:, :, i, j]
            )
    return dxp[:, :, 1:-1, 1:-1]


def conv_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """3x3 / pad 1 convolution; also returns the im2col matrix for the backward pass."""
    n, _, h, wd = x.shape
    cols = im2col(x, stride)
    out = cols @ w.reshape(w.shape[0], -1).T
    if b is not None:
        out += b
    out = out.reshape(n, _out_size(h, stride), _out_size(wd, stride), -1)
    return out.transpose(0, 3, 1, 2), cols


def conv_backward(
    dout: np.ndarray,
    cols: np.ndarray,
    x_shape: tuple[int, ...],
    w: np.ndarray,
    stride: int = 1,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Return (dx, dw, db) for conv_forward."""
    d = dout.transpose(0, 2, 3, 1).reshape(-1, w.shape[0])
    dw = (d.T @ cols).reshape(w.shape)
    dx = col2im(d @ w.reshape(w.shape[0], -1), x_shape, stride) if need_dx else None
    return dx, dw, d.sum(axis=0)


def bn_apply(
    z: np.ndarray, gamma, beta, mean, var
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel BatchNormalization; returns (y, x_hat, 1/std) for the backward pass."""
    inv_std = 1.0 / np.sqrt(var + BN_EPS)
    x_hat = (z - mean[:, None, None]) * inv_std[:, None, None]
    return gamma[:, None, None] * x_hat + beta[:, None, None], x_hat, inv_std


def bn_backward(
    dy: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray
):
    """Gradient through training-mode BN (batch statistics depend on the input too)."""
    axes = (0, 2, 3)
    m = dy.size // dy.shape[1]
    dgamma = (dy * x_hat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    dx_hat = dy * gamma[:, None, None]
    dz = (
        m * dx_hat
        - dx_hat.sum(axis=axes)[:, None, None]
        - x_hat * (dx_hat * x_hat).sum(axis=axes)[:, None, None]
    ) * (inv_std / m)[:, None, None]
    return dz, dgamma, dbeta


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-normal weights; conv1 has no bias because bn1 would cancel it."""

    def he(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, np.float32)

    return {
        "conv1.weight": he(16, 1, 3, 3),
        "bn1.scale": np.ones(16, np.float32),
        "bn1.bias": zeros(16),
        "conv2.weight": he(16, 16, 3, 3),
        "conv2.bias": zeros(16),
        "conv3.weight": he(32, 16, 3, 3),
        "conv3.bias": zeros(32),
        "fc1.weight": he(64, 512),  # [out, in] as Gemm(transB=1) expects
        "fc1.bias": zeros(64),
        "fc2.weight": he(10, 64),
        "fc2.bias": zeros(10),
    }


def forward(
    p: dict[str, np.ndarray],
    x: np.ndarray,
    bn_stats: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, dict]:
    """Logits for x. bn_stats=None means training mode (BN uses batch statistics)."""
    z1, cols1 = conv_forward(x, p["conv1.weight"], None)
    if bn_stats is None:
        bn_stats = (z1.mean(axis=(0, 2, 3)), z1.var(axis=(0, 2, 3)))
    y1, x_hat1, inv_std1 = bn_apply(z1, p["bn1.scale"], p["bn1.bias"], *bn_stats)
    h1 = relu(y1)
    z2, cols2 = conv_forward(h1, p["conv2.weight"], p["conv2.bias"])
    h2 = relu(z2)
    h3 = relu(h2 + h1)
    z4, cols4 = conv_forward(h3, p["conv3.weight"], p["conv3.bias"], stride=2)
    h4 = relu(z4)
    flat = h4.reshape(len(x), -1)  # NCHW order, same as ONNX Flatten(axis=1)
    h5 = relu(flat @ p["fc1.weight"].T + p["fc1.bias"])
    logits = h5 @ p["fc2.weight"].T + p["fc2.bias"]
    cache = {
        "x": x,
        "cols1": cols1,
        "x_hat1": x_hat1,
        "inv_std1": inv_std1,
        "h1": h1,
        "cols2": cols2,
        "h2": h2,
        "h3": h3,
        "cols4": cols4,
        "h4": h4,
        "flat": flat,
        "h5": h5,
    }
    return logits, cache


def backward(
    p: dict[str, np.ndarray], c: dict, dlogits: np.ndarray
) -> dict[str, np.ndarray]:
    """Gradients of the loss w.r.t. every parameter, given dloss/dlogits."""
    g = {}
    g["fc2.weight"] = dlogits.T @ c["h5"]
    g["fc2.bias"] = dlogits.sum(axis=0)
    dh5 = (dlogits @ p["fc2.weight"]) * (c["h5"] > 0)
    g["fc1.weight"] = dh5.T @ c["flat"]
    g["fc1.bias"] = dh5.sum(axis=0)
    dz4 = (dh5 @ p["fc1.weight"]).reshape(c["h4"].shape) * (c["h4"] > 0)
    dh3, g["conv3.weight"], g["conv3.bias"] = conv_backward(
        dz4, c["cols4"], c["h3"].shape, p["conv3.weight"], stride=2
    )
    dsum = dh3 * (c["h3"] > 0)
    # The residual Add sends the same gradient down both the conv2 branch and the skip.
    dz2 = dsum * (c["h2"] > 0)
    dh1, g["conv2.weight"], g["conv2.bias"] = conv_backward(
        dz2, c["cols2"], c["h1"].shape, p["conv2.weight"]
    )
    dh1 = dh1 + dsum
    dy1 = dh1 * (c["h1"] > 0)
    dz1, g["bn1.scale"], g["bn1.bias"] = bn_backward(
        dy1, c["x_hat1"], c["inv_std1"], p["bn1.scale"]
    )
    _, g["conv1.weight"], _ = conv_backward(
        dz1, c["cols1"], c["x"].shape, p["conv1.weight"], need_dx=False
    )
    return g


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -log_probs[np.arange(n), labels].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), labels] -= 1
    return float(loss), dlogits / n


def train(
    x: np.ndarray, y: np.ndarray
) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Adam on mini-batches; returns (params, (bn_mean, bn_var))."""
    rng = np.random.default_rng(SEED)
    params = init_params(rng)
    m = {k: np.zeros_like(a) for k, a in params.items()}
    v = {k: np.zeros_like(a) for k, a in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0
    for epoch in range(1, EPOCHS + 1):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            logits, cache = forward(params, x[idx], bn_stats=None)
            loss, dlogits = softmax_cross_entropy(logits, y[idx])
            grads = backward(params, cache, dlogits)
            step += 1
            lr_t = LEARNING_RATE * np.sqrt(1 - beta2**step) / (1 - beta1**step)
            for k, gk in grads.items():
                m[k] = beta1 * m[k] + (1 - beta1) * gk
                v[k] = beta2 * v[k] + (1 - beta2) * gk * gk
                params[k] -= (lr_t * m[k] / (np.sqrt(v[k]) + eps)).astype(np.float32)
            total += loss * len(idx)
        print(f"epoch {epoch:2d}/{EPOCHS}  train loss {total / len(x):.4f}")

    # Inference BN statistics over the whole training set ("precise BN") rather than
    # a running average over batches from earlier, different weights.
    z1, _ = conv_forward(x, params["conv1.weight"], None)
    return params, (z1.mean(axis=(0, 2, 3)), z1.var(axis=(0, 2, 3)))


# --------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------


def export_onnx(
    p: dict[str, np.ndarray], bn_stats: tuple[np.ndarray, np.ndarray]
) -> onnx.ModelProto:
    """Build the ONNX graph by hand so BatchNormalization stays a separate node."""
    tensors = dict(p, **{"bn1.mean": bn_stats[0], "bn1.var": bn_stats[1]})
    initializers = [
        numpy_helper.from_array(np.asarray(a, np.float32), name)
        for name, a in tensors.items()
    ]
    nodes = []

    def add(op_type: str, name: str, inputs: list[str], out: str = "", **attrs) -> str:
        out = out or f"{name}_out"
        nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    k3 = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    bn1 = ["bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"]
    x = add("Conv", "conv1", ["input", "conv1.weight"], strides=[1, 1], **k3)
    x = add("BatchNormalization", "bn1", [x, *bn1], epsilon=BN_EPS)
    skip = add("Relu", "relu1", [x])
    x = add("Conv", "conv2", [skip, "conv2.weight", "conv2.bias"], strides=[1, 1], **k3)
    x = add("Relu", "relu2", [x])
    x = add("Add", "add_residual", [x, skip])
    x = add("Relu", "relu_residual", [x])
    x = add("Conv", "conv3", [x, "conv3.weight", "conv3.bias"], strides=[2, 2], **k3)
    x = add("Relu", "relu3", [x])
    x = add("Flatten", "flatten", [x], axis=1)
    x = add("Gemm", "fc1", [x, "fc1.weight", "fc1.bias"], transB=1)
    x = add("Relu", "relu_fc1", [x])
    add("Gemm", "fc2", [x, "fc2.weight", "fc2.bias"], out="logits", transB=1)

    # "batch" is a named dynamic dimension so any batch size can be fed.
    value_info = helper.make_tensor_value_info
    inp = value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])
    out = value_info("logits", TensorProto.FLOAT, ["batch", 10])
    graph = helper.make_graph(nodes, "digits_cnn", [inp], [out], initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="trt-mpq examples/digits/train.py",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through a temp file in the same folder so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz(f: BinaryIO, **arrays: np.ndarray) -> None:
    """np.savez_compressed, but with a fixed zip timestamp so reruns are byte-identical."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as member:
                np.lib.format.write_array(
                    member, np.ascontiguousarray(arr), allow_pickle=False
                )


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0]
        + " Writes digits_cnn.onnx, calib.npz and eval.npz; fails if test accuracy < 95%.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        metavar="DIR",
        help="folder for the output files (created if missing; default: %(default)s)",
    )
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load_data()
    print(f"digits: {len(x_train)} train / {len(x_test)} test images")

    t0 = time.perf_counter()
    params, bn_stats = train(x_train, y_train)
    print(f"training took {time.perf_counter() - t0:.1f} s")

    model = export_onnx(params, bn_stats)

    session = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    ort_logits = session.run(["logits"], {"input": x_test})[0]
    np_logits, _ = forward(params, x_test, bn_stats)
    max_diff = float(np.abs(ort_logits - np_logits).max())
    print(f"max |onnxruntime - numpy| on test logits: {max_diff:.2e}")
    # Explicit raises rather than assert statements, which `python -O` would skip.
    if max_diff >= 1e-4:
        raise AssertionError(
            f"ONNX export disagrees with numpy: max abs diff {max_diff:.2e}"
        )

    accuracy = float((ort_logits.argmax(axis=1) == y_test).mean())
    print(f"test accuracy (onnxruntime): {accuracy:.2%}")
    if accuracy < MIN_ACCURACY:
        raise AssertionError(
            f"test accuracy {accuracy:.2%} is below {MIN_ACCURACY:.0%}"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    outputs = {
        "digits_cnn.onnx": lambda f: f.write(model.SerializeToString()),
        "calib.npz": lambda f: save_npz(f, input=x_train[:N_CALIB]),
        "eval.npz": lambda f: save_npz(f, input=x_test, labels=y_test),
    }
    for name, write in outputs.items():
        path = args.out / name
        write_atomic(path, write)
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
