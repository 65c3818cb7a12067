"""Already-quantized (Q/DQ) models back to their float graph (network/qdq.py), keeping what the file decided."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import builders
from trt_mpq.errors import ModelError
from trt_mpq.network.model import load_model
from trt_mpq.network.qdq import float_graph
from trt_mpq.network.units import find_units

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _run(model, x):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _cosine(a, b):
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def digits_qdq(tmp_path_factory):
    calib = np.load(DIGITS / "calib.npz")["input"][:64]
    return builders.quantize_static_qdq(DIGITS / "digits_cnn.onnx", calib,
                                        tmp_path_factory.mktemp("q") / "digits_qdq.onnx")


def test_a_quantize_static_model_becomes_its_float_graph(digits_qdq):
    shipped = load_model(digits_qdq)
    fp32 = load_model(DIGITS / "digits_cnn.onnx")
    ops = {n.op_type for n in shipped.proto.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"} and "already quantized" in shipped.notes[0]
    q_nodes = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(digits_qdq)).graph.node)
    assert len(shipped.shipped) == q_nodes and all(v > 0 for v in shipped.shipped.values())
    x = np.load(DIGITS / "calib.npz")["input"][64:128]  # samples the quantizer did not calibrate on
    got, file, ref = _run(shipped.proto, x), _run(digits_qdq, x), _run(fp32.proto, x)
    # the float graph keeps the file's weight rounding: nearer the file than FP32 is, close to both
    assert _cosine(got, ref) > 0.99 and _cosine(got, file) > 0.99
    assert np.mean(np.argmax(got, 1) == np.argmax(ref, 1)) >= 0.9
    gemms = [u for u in find_units(shipped.proto).units if u.kind == "gemm"]
    assert len(gemms) == len([u for u in find_units(fp32.proto).units if u.kind == "gemm"])
    assert all(all(t in shipped.shipped for t in u.activations) for u in gemms)  # the file's INT8 units


def test_ranges_of_one_pair_and_a_relu_folded_into_a_uint8_range():
    sym = builders.already_quantized()  # int8, zero point 0, scale 0.1
    shipped = float_graph(sym)
    assert shipped.thresholds == {"x": pytest.approx(12.7)} and shipped.pairs == 1
    assert [n.op_type for n in sym.graph.node] == ["Identity"]  # y keeps its name
    relu = builders.already_quantized()
    for t in relu.graph.initializer:
        if t.name == "z":
            t.CopyFrom(onnx.numpy_helper.from_array(np.uint8(0), "z"))
    shipped = float_graph(relu)
    assert shipped.thresholds == {"x_clip": pytest.approx(25.5)}
    assert [n.op_type for n in relu.graph.node] == ["Clip", "Identity"]
    x = np.array([[-3.0, 0.5, 7.0, 30.0]], np.float32)
    y = ort.InferenceSession(relu.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, [[0.0, 0.5, 7.0, 25.5]])  # the range's clip is kept, not its rounding


def test_integer_operators_and_lone_quantize_nodes_are_one_sentence(tmp_path):
    with pytest.raises(ModelError, match="integer operators .*MatMulInteger.*Q/DQ"):
        load_model(builders.save(builders.dynamically_quantized(), tmp_path, "dyn.onnx"))
    lone = builders.model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], "q")],
                          [builders.fvi("x", ["N", 4])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.INT8, ["N", 4])],
                          [builders.init("s", np.float32(0.1)), builders.init("z", np.int8(0))])
    with pytest.raises(ModelError, match="do not come in Q/DQ pairs"):
        load_model(builders.save(lone, tmp_path, "lone.onnx"))


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_a_tensorrt_style_qdq_file_reads_back_to_its_own_thresholds(tmp_path, precision):
    # the Q/DQ layout ModelOpt writes (and trt-mpq's own lowering): symmetric INT8 (zero point 0, +-127) or
    # FP8 E4M3 (+-448) activations, per-channel weights; reading it back recovers the thresholds it was made with
    from trt_mpq.network.units import find_units as units_of
    from trt_mpq.precision import Plan
    from trt_mpq.quant.lower import lower
    from trt_mpq.quant.ranges import Ranges

    fp32 = load_model(DIGITS / "digits_cnn.onnx", opset=21)
    units = units_of(fp32.proto).units
    amax = {t: 2.0 + i for i, t in enumerate(dict.fromkeys(t for u in units for t in u.activations))}
    ranges = Ranges("max", amax, fp8_amax=amax)
    plan = Plan.of({u.name: precision for u in units if precision in [p.value for p in u.allowed]})
    path = tmp_path / "lowered.onnx"
    onnx.save(lower(fp32.proto, units, plan, ranges), str(path))
    back = load_model(path)
    assert back.shipped == {t: pytest.approx(v, rel=1e-6) for t, v in amax.items() if t in back.shipped}
    assert len(back.shipped) == len(amax)
    assert [u.nodes for u in units_of(back.proto).units] == [u.nodes for u in units]
