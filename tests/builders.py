"""Tiny ONNX models built in code, each exercising one pattern the units, the lowering or the loader must handle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def model(nodes, inputs, outputs, inits=(), opset: int = OPSET, name: str = "tiny") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m)
    return m


def fvi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def save(m: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = Path(folder) / name
    onnx.save(m, str(path))
    return path


def conv_w(rng, cout: int, cin: int, k: int = 3) -> np.ndarray:
    return (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)


def conv_bn_relu_residual(seed: int = 0) -> onnx.ModelProto:
    """conv1+BN+Relu -> conv2+Relu, residual Add with conv1's output, Relu -> GAP -> Gemm."""
    r = _rng(seed)
    c = 4
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn1"], "bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("Add", ["r2", "r1"], ["s"], "add"),
        helper.make_node("Relu", ["s"], ["r3"], "relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"], "gap"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], "fc", transB=1),
    ]
    inits = [
        init("w1", conv_w(r, c, 3)),
        init("g", (1 + 0.1 * r.standard_normal(c)).astype(np.float32)),
        init("b", (0.1 * r.standard_normal(c)).astype(np.float32)),
        init("m", (0.1 * r.standard_normal(c)).astype(np.float32)),
        init("v", (1 + 0.1 * r.random(c)).astype(np.float32)),
        init("w2", conv_w(r, c, c)),
        init("b2", (0.1 * r.standard_normal(c)).astype(np.float32)),
        init("wf", (r.standard_normal((5, c)) / 2).astype(np.float32)),
        init("bf", np.zeros(5, np.float32)),
    ]
    return model(nodes, [fvi("x", ["N", 3, 8, 8])], [fvi("y", ["N", 5])], inits)


def skip_produced_late(seed: int = 0) -> onnx.ModelProto:
    """A residual Add whose other input is produced after the absorbing Conv in graph order (ResNet shortcut)."""
    r = _rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], "main_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "ws"], ["s"], "shortcut_conv"),
        helper.make_node("Add", ["a", "s"], ["y0"], "add"),
        helper.make_node("Relu", ["y0"], ["y"], "relu"),
    ]
    inits = [init("wa", conv_w(r, 4, 3)), init("ws", conv_w(r, 4, 3, 1))]
    return model(nodes, [fvi("x", ["N", 3, 6, 6])], [fvi("y", ["N", 4, 6, 6])], inits)


def gates(seed: int = 0) -> onnx.ModelProto:
    """Conv + SiLU (x*sigmoid(x)), then Conv + HardSwish written as x*clip(x+3,0,6)/6, then MatMul + bias."""
    r = _rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], "conv_silu", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"], "sig"),
        helper.make_node("Mul", ["c1", "s1"], ["a1"], "silu_mul"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], "conv_hswish", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "three"], ["t"], "hs_add"),
        helper.make_node("Clip", ["t", "zero", "six"], ["cl"], "hs_clip"),
        helper.make_node("Mul", ["c2", "cl"], ["m"], "hs_mul"),
        helper.make_node("Div", ["m", "six"], ["a2"], "hs_div"),
        helper.make_node("Flatten", ["a2"], ["f"], "flatten"),
        helper.make_node("MatMul", ["f", "wm"], ["mm"], "matmul"),
        helper.make_node("Add", ["mm", "bm"], ["y"], "bias"),
    ]
    inits = [
        init("w1", conv_w(r, 4, 2)), init("w2", conv_w(r, 4, 4)),
        init("three", np.float32(3)), init("zero", np.float32(0)), init("six", np.float32(6)),
        init("wm", (r.standard_normal((4 * 4 * 4, 6)) / 8).astype(np.float32)),
        init("bm", (0.1 * r.standard_normal(6)).astype(np.float32)),
    ]
    return model(nodes, [fvi("x", ["N", 2, 4, 4])], [fvi("y", ["N", 6])], inits)


def attention_matmul(seed: int = 0) -> onnx.ModelProto:
    """Two projections (MatMul with weights) and an activation x activation MatMul (both inputs quantized)."""
    r = _rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], "proj_q"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], "proj_k"),
        helper.make_node("Transpose", ["k"], ["kt"], "kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["y"], "scores"),
    ]
    inits = [init("wq", (r.standard_normal((8, 8)) / 3).astype(np.float32)),
             init("wk", (r.standard_normal((8, 8)) / 3).astype(np.float32))]
    return model(nodes, [fvi("x", ["N", 5, 8])], [fvi("y", ["N", 5, 5])], inits)


def heavy_tailed(seed: int = 0) -> onnx.ModelProto:
    """A projection of exp(x), then another: log-normal activations, whose max, percentile, entropy and mse
    thresholds lie far apart (as a GELU's output in a transformer)."""
    r = _rng(seed)
    nodes = [helper.make_node("Exp", ["x"], ["e"], "exp"),
             helper.make_node("MatMul", ["e", "w1"], ["h"], "fc1"),
             helper.make_node("Exp", ["h"], ["g"], "exp2"),
             helper.make_node("MatMul", ["g", "w2"], ["y"], "fc2")]
    inits = [init("w1", (r.standard_normal((16, 16)) / 8).astype(np.float32)),
             init("w2", (r.standard_normal((16, 4)) / 4).astype(np.float32))]
    return model(nodes, [fvi("x", ["N", 16])], [fvi("y", ["N", 4])], inits)


def fp16_overflow(seed: int = 0) -> onnx.ModelProto:
    """A Gemm whose output exceeds the FP16 range (65504) for normal inputs."""
    r = _rng(seed)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], "big", transB=1)]
    inits = [init("w", (1e5 * r.standard_normal((3, 4))).astype(np.float32))]
    return model(nodes, [fvi("x", ["N", 4])], [fvi("y", ["N", 3])], inits)


def constant_weights(seed: int = 0) -> onnx.ModelProto:
    """Weights held in Constant nodes (as exported by paddle2onnx), opset 12, an unnamed node."""
    r = _rng(seed)
    w = conv_w(r, 3, 2)
    nodes = [
        helper.make_node("Constant", [], ["w"], "const_w", value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["lo"], value_float=0.0),
        helper.make_node("Constant", [], ["hi"], value_float=6.0),
        helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["y"]),
    ]
    return model(nodes, [fvi("x", ["N", 2, 5, 5])], [fvi("y", ["N", 3, 5, 5])], opset=12)


def if_subgraph(seed: int = 0) -> onnx.ModelProto:
    """Conv layers inside both branches of an If on a scalar int64 input (as in Silero VAD)."""
    r = _rng(seed)

    def branch(tag: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Conv", ["x", f"w_{tag}"], [f"y_{tag}"], f"conv_{tag}")],
            tag, [], [fvi(f"y_{tag}", ["N", 2, 4, 4])])

    nodes = [
        helper.make_node("Equal", ["sr", "k16"], ["cond"], "eq"),
        helper.make_node("If", ["cond"], ["y"], "if", then_branch=branch("then"), else_branch=branch("else")),
    ]
    inits = [init("k16", np.int64(16000)), init("w_then", conv_w(r, 2, 1, 1)), init("w_else", conv_w(r, 2, 1, 1))]
    inputs = [fvi("x", ["N", 1, 4, 4]), helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    return model(nodes, inputs, [fvi("y", ["N", 2, 4, 4])], inits)


def already_quantized() -> onnx.ModelProto:
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], "q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], "dq"),
    ]
    inits = [init("s", np.float32(0.1)), init("z", np.int8(0))]
    return model(nodes, [fvi("x", ["N", 4])], [fvi("y", ["N", 4])], inits)


def fp16_weights() -> onnx.ModelProto:
    nodes = [helper.make_node("Cast", ["x"], ["xh"], "c", to=TensorProto.FLOAT16),
             helper.make_node("MatMul", ["xh", "w"], ["yh"], "mm"),
             helper.make_node("Cast", ["yh"], ["y"], "c2", to=TensorProto.FLOAT)]
    return model(nodes, [fvi("x", ["N", 4])], [fvi("y", ["N", 2])], [init("w", np.ones((4, 2), np.float16))])


def embedding_residual(seed: int = 0) -> onnx.ModelProto:
    """A Gather from a 50 x 8 table (an embedding), index arithmetic on its shape, and a residual Add of it
    with a Softmax of ``x``: ids [2, 4] int64, x [2, 4, 8] -> sum [2, 4, 8], first [1] int64."""
    rng = _rng(seed)
    inits = [init("table", rng.normal(size=(50, 8)).astype(np.float32)), init("zero", np.array([0], np.int64))]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], "embed"),
             helper.make_node("Shape", ["emb"], ["shape"], "shape"),  # index arithmetic: no decision
             helper.make_node("Gather", ["shape", "zero"], ["first"], "pick"),
             helper.make_node("Softmax", ["x"], ["rx"], "soft"),
             helper.make_node("Add", ["emb", "rx"], ["sum"], "residual")]
    return model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 4]), fvi("x", [2, 4, 8])],
                 [fvi("sum", [2, 4, 8]), helper.make_tensor_value_info("first", TensorProto.INT64, [1])], inits)


def norm_fanout(seed: int = 0) -> onnx.ModelProto:
    """A LayerNorm read by two weight MatMuls and a residual Add of both, then a ReLU-free Add with the norm:
    x [2, 4, 8] -> y [2, 4, 8]; units: the norm, two GEMMs, the residual regions."""
    r = _rng(seed)
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], "norm", axis=-1),
             helper.make_node("MatMul", ["n", "wa"], ["a"], "proj_a"),
             helper.make_node("MatMul", ["n", "wb"], ["bb"], "proj_b"),
             helper.make_node("Add", ["a", "bb"], ["s"], "join"),
             helper.make_node("Add", ["s", "n"], ["y"], "skip")]
    inits = [init("g", np.ones(8, np.float32)), init("b", np.zeros(8, np.float32)),
             init("wa", (r.standard_normal((8, 8)) / 3).astype(np.float32)),
             init("wb", (r.standard_normal((8, 8)) / 3).astype(np.float32))]
    return model(nodes, [fvi("x", [2, 4, 8])], [fvi("y", [2, 4, 8])], inits, opset=17)


def quiet_outlier_channel(seed: int = 0) -> onnx.ModelProto:
    """Conv+Relu -> GAP -> Gemm on a 2-channel input whose second channel the conv all but ignores (weights
    1e-3): that channel's outliers set the input's max range without mattering to the output."""
    r = _rng(seed)
    w = conv_w(r, 4, 2)
    w[:, 1] *= 1e-3
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["p"], "gap"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], "fc", transB=1),
    ]
    inits = [init("w1", w), init("b1", np.zeros(4, np.float32)),
             init("wf", (r.standard_normal((5, 4)) / 2).astype(np.float32)), init("bf", np.zeros(5, np.float32))]
    return model(nodes, [fvi("x", ["N", 2, 8, 8])], [fvi("y", ["N", 5])], inits)


def detector_with_nms(seed: int = 0) -> onnx.ModelProto:
    """A tiny detector ending as TensorRT exports of YOLO do: boxes [N,16,4] and sigmoid scores [N,16,3] into an
    ``EfficientNMS_TRT`` plugin node (default domain, no ONNX schema), whose four outputs are the graph's."""
    r = _rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "wb"], ["cb"], "conv_boxes"),
        helper.make_node("Reshape", ["cb", "shape_b"], ["rb"], "reshape_boxes"),
        helper.make_node("Transpose", ["rb"], ["boxes"], "boxes", perm=[0, 2, 1]),
        helper.make_node("Conv", ["r1", "ws"], ["cs"], "conv_scores"),
        helper.make_node("Reshape", ["cs", "shape_s"], ["rs"], "reshape_scores"),
        helper.make_node("Transpose", ["rs"], ["ts"], "scores_t", perm=[0, 2, 1]),
        helper.make_node("Sigmoid", ["ts"], ["scores"], "sigmoid"),
        helper.make_node("EfficientNMS_TRT", ["boxes", "scores"], ["num_dets", "det_boxes", "det_scores",
                                                                   "det_classes"], "nms", background_class=-1,
                         box_coding=0, iou_threshold=0.45, max_output_boxes=10, plugin_version="1",
                         score_activation=0, score_threshold=0.25),
    ]
    inits = [init("w1", conv_w(r, 8, 3)), init("b1", (0.1 * r.standard_normal(8)).astype(np.float32)),
             init("wb", conv_w(r, 4, 8, 1)), init("ws", conv_w(r, 3, 8, 1)),
             init("shape_b", np.array([0, 4, -1], np.int64)), init("shape_s", np.array([0, 3, -1], np.int64))]
    outputs = [helper.make_tensor_value_info("num_dets", TensorProto.INT32, ["N", 1]), fvi("det_boxes", ["N", 10, 4]),
               fvi("det_scores", ["N", 10]), helper.make_tensor_value_info("det_classes", TensorProto.INT32, ["N", 10])]
    graph = helper.make_graph(nodes, "detector", [fvi("x", ["N", 3, 4, 4])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def custom_op_inside(seed: int = 0) -> onnx.ModelProto:
    """Conv -> com.example:MyOp -> Conv: an op no backend here runs, with a convolution after it."""
    r = _rng(seed)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("MyOp", ["c1"], ["m"], "mine", domain="com.example"),
             helper.make_node("Conv", ["m", "w2"], ["y"], "conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "custom", [fvi("x", ["N", 3, 8, 8])], [fvi("y", ["N", 4, 8, 8])],
                              [init("w1", conv_w(r, 4, 3)), init("w2", conv_w(r, 4, 4))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                   helper.make_opsetid("com.example", 1)], ir_version=8)


def circular_pad_conv(seed: int = 0) -> onnx.ModelProto:
    """Conv1d(padding_mode="circular") as PyTorch exports it, Concat(Slice(e, last), e, Slice(e, first)) into a
    Conv without padding, where e (a Sigmoid) is also subtracted from the Conv's output: the Sigmoid, the
    Concat and the Sub are connected float ops on both sides of the Conv (an EEG U-Net's block)."""
    r = _rng(seed)
    nodes = [helper.make_node("Sigmoid", ["x"], ["e"], "sig"),
             helper.make_node("Slice", ["e", "minus1", "big", "axis2"], ["tail"], "slice_tail"),
             helper.make_node("Slice", ["e", "zero", "one", "axis2"], ["head"], "slice_head"),
             helper.make_node("Concat", ["tail", "e", "head"], ["pad"], "concat", axis=2),
             helper.make_node("Conv", ["pad", "w"], ["c"], "conv"),
             helper.make_node("Sub", ["c", "e"], ["y"], "sub")]
    inits = [init("w", (r.standard_normal((4, 4, 3)) / 3).astype(np.float32)),
             init("minus1", np.array([-1], np.int64)), init("big", np.array([2**31 - 1], np.int64)),
             init("zero", np.array([0], np.int64)), init("one", np.array([1], np.int64)),
             init("axis2", np.array([2], np.int64))]
    return model(nodes, [fvi("x", ["N", 4, 16])], [fvi("y", ["N", 4, 16])], inits)


def batch_checked_head(seed: int = 0) -> onnx.ModelProto:
    """A wake-word head that checks its batch size: If(Shape(x)[0] >= 1) runs three Gemm layers, else passes x."""
    r = _rng(seed)
    layers = [helper.make_node("Gemm", ["x" if k == 0 else f"h{k}", f"w{k}"], [f"h{k + 1}" if k < 2 else "y_then"],
                               f"fc{k}", transB=1) for k in range(3)]
    then = helper.make_graph(layers, "then", [], [fvi("y_then", ["N", 8])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y_else"], "pass")], "else", [],
                              [fvi("y_else", ["N", 8])])
    nodes = [helper.make_node("Shape", ["x"], ["shape"], "shape"),
             helper.make_node("Gather", ["shape", "zero"], ["n"], "batch"),
             helper.make_node("GreaterOrEqual", ["n", "one"], ["cond"], "check"),
             helper.make_node("If", ["cond"], ["y"], "if", then_branch=then, else_branch=other)]
    inits = [init("zero", np.int64(0)), init("one", np.int64(1)),
             *[init(f"w{k}", (r.standard_normal((8, 8)) / 3).astype(np.float32)) for k in range(3)]]
    return model(nodes, [fvi("x", ["N", 8])], [fvi("y", ["N", 8])], inits)


def dynamically_quantized() -> onnx.ModelProto:
    """ONNX Runtime's dynamic quantization: DynamicQuantizeLinear + MatMulInteger (integer operators, no Q/DQ)."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], "dql"),
             helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"], "mmi"),
             helper.make_node("Cast", ["acc"], ["accf"], "cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["accf", "xs"], ["y"], "rescale")]
    inits = [init("w", np.full((4, 4), 3, np.uint8)), init("wz", np.uint8(0))]
    return model(nodes, [fvi("x", ["N", 4])], [fvi("y", ["N", 4])], inits)


def quantize_static_qdq(src: Path, calib: np.ndarray, out: Path, name: str = "input") -> Path:
    """``src`` quantized by ONNX Runtime's ``quantize_static`` as users run it: Q/DQ format, per-channel INT8
    weights, uint8 activations calibrated on ``calib``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: calib[i:i + 8]} for i in range(0, len(calib), 8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out
