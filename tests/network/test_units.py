import onnx

import builders
from trt_mpq.network.units import find_units


def _units(m):
    table = find_units(m)
    return {u.name: u for u in table.units}, table


def test_conv_bn_relu_and_residual_fuse_into_units():
    units, table = _units(builders.conv_bn_relu_residual())
    assert list(units) == ["conv1", "conv2", "gap", "fc"]
    assert units["conv1"].op_types == ("Conv", "BatchNormalization", "Relu")
    # conv1's output feeds conv2 and the residual Add: BN+Relu stop there, the Add belongs to conv2.
    assert units["conv2"].nodes == ("conv2", "relu2", "add", "relu3")
    assert units["conv2"].activations == ("r1",)  # the conv input and the residual input are the same tensor
    assert units["conv1"].weight == "w1" and units["conv1"].weight_axis == 0
    assert units["fc"].weight_axis == 0  # Gemm transB=1: weight [N, K], output channels on axis 0
    assert table.skipped == []


def test_residual_input_is_quantized_input():
    units, _ = _units(builders.skip_produced_late())
    main = units["main_conv"]
    assert main.nodes == ("main_conv", "add", "relu")
    assert main.activations == ("x", "s")
    assert units["shortcut_conv"].nodes == ("shortcut_conv",)


def test_gates_and_matmul_bias_are_absorbed():
    units, _ = _units(builders.gates())
    assert units["conv_silu"].op_types == ("Conv", "Sigmoid", "Mul")
    assert units["conv_hswish"].nodes == ("conv_hswish", "hs_add", "hs_clip", "hs_mul", "hs_div")
    assert units["matmul"].nodes == ("matmul", "bias")
    assert units["matmul"].weight_axis == 1  # MatMul weight [K, N]: N on axis 1
    assert units["conv_hswish"].outputs == ("a2",)


def test_activation_matmul_is_a_unit_without_weight():
    units, _ = _units(builders.attention_matmul())
    assert set(units) == {"proj_q", "proj_k", "scores"}
    assert units["scores"].weight is None
    assert units["scores"].activations == ("q", "kt")


def test_layers_inside_if_branches_are_skipped_with_reason():
    units, table = _units(builders.if_subgraph())
    assert units == {}
    assert {s.node for s in table.skipped} == {"conv_then", "conv_else"}
    assert all("control-flow" in s.reason for s in table.skipped)


def _attention_head():
    """x [batch,4,8] -> MatMul(q) -> scores (MatMul x^T) + mask -> Softmax -> LayerNorm -> Where(isnan) -> out."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "wq"),
             numpy_helper.from_array(np.ones(4, np.float32), "ln_s"), numpy_helper.from_array(np.zeros(4, np.float32),
                                                                                             "ln_b"),
             numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "neg"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], "q_proj"),
        helper.make_node("Transpose", ["x"], ["xt"], "xt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "xt"], ["s"], "scores"),
        helper.make_node("Cast", ["mask"], ["maskf"], "mask_cast", to=TensorProto.FLOAT),
        helper.make_node("Equal", ["maskf", "zero"], ["pad"], "is_pad"),
        helper.make_node("Where", ["pad", "neg", "zero"], ["bias"], "mask_bias"),
        helper.make_node("Add", ["s", "bias"], ["sm"], "add_mask"),
        helper.make_node("Softmax", ["sm"], ["p"], "softmax", axis=-1),
        helper.make_node("LayerNormalization", ["p", "ln_s", "ln_b"], ["n"], "ln", axis=-1),
        helper.make_node("Mul", ["n", "n"], ["n2"], "square"),
        helper.make_node("Sqrt", ["n2"], ["out"], "root"),
    ]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 8]),
                                              helper.make_tensor_value_info("mask", TensorProto.INT64, ["b", 1, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_every_float_op_gets_a_unit_and_masks_are_never_cast():
    import numpy as np
    import onnxruntime as ort

    from trt_mpq.precision import Plan, Precision
    from trt_mpq.quant.lower import lower

    model = _attention_head()
    units, _ = _units(model)
    kinds = {name: u.kind for name, u in units.items()}
    assert kinds["softmax"] == "softmax" and kinds["ln"] == "norm" and kinds["mask_bias"] == "region"
    assert units["square"].nodes == ("square", "root") and units["square"].allowed == (Precision.FP16, Precision.BF16)
    assert "mask_cast" not in {n for u in units.values() for n in u.nodes}  # shape/index/type ops: no decision
    assert units["mask_bias"].casts == ()  # the Where's condition is boolean and its branches are constants
    from trt_mpq.network.placement import placements
    from trt_mpq.network.shapes import infer_tensors

    places = placements(model, find_units(model), infer_tensors(model))
    assert len(places) == len(model.graph.node) and not [p for p in places if "runs FP32" in p.why]
    assert {p.node: p.unit for p in places}["root"] == "square"
    half = lower(model, list(units.values()), Plan.of({u: Precision.FP16 for u in units}), None)
    casts = [n for n in half.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16]
    assert not any(n.input[0] in ("mask", "pad", "maskf") for n in casts)
    feeds = {"x": np.random.default_rng(1).normal(size=(2, 4, 8)).astype(np.float32),
             "mask": np.array([[[1, 1, 1, 0]], [[1, 1, 0, 0]]], np.int64)}
    ref = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    got = ort.InferenceSession(half.SerializeToString()).run(None, feeds)[0]  # runs: every type lines up
    assert got.dtype == np.float32 and np.allclose(got, ref, atol=2e-2)


def test_an_lstm_is_a_unit_with_an_fp16_result(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    import trt_mpq

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(scale=0.3, size=(1, 32, 6)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(scale=0.3, size=(1, 32, 8)).astype(np.float32), "R")]
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["y", "h"], "lstm", hidden_size=8),
             helper.make_node("Squeeze", ["h", "axes"], ["hs"], "sq")]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axes"))
    graph = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "b", 6])],
                              [helper.make_tensor_value_info("hs", TensorProto.FLOAT, ["b", 8])], inits)
    path = tmp_path / "lstm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(4, 5, 1, 6)).astype(np.float32))  # one full input each
    analysis = trt_mpq.analyze(path, tmp_path / "run", trt_mpq.AnalyzeOptions(calib=str(tmp_path / "calib.npz")))
    (lstm,) = [u for u in analysis.units if u.kind == "recurrent"]
    fp16 = lstm.results[trt_mpq.Precision.FP16]
    assert set(lstm.results) == {trt_mpq.Precision.FP16} and 0 < fp16.nmse < 1e-4  # FP16 only: no INT8 LSTM


def test_embedding_lookup_runs_fp16_and_a_lone_residual_add_may_run_int8():
    import numpy as np
    import onnxruntime as ort

    from trt_mpq.precision import Plan, Precision
    from trt_mpq.quant.lower import lower
    from trt_mpq.quant.ranges import Ranges

    rng = np.random.default_rng(0)
    model = builders.embedding_residual()
    units, _ = _units(model)
    assert units["embed"].kind == "embedding" and units["embed"].allowed == (Precision.FP16, Precision.BF16)
    assert "pick" not in {n for u in units.values() for n in u.nodes}  # a Gather on a shape is no decision
    add = units["residual"]
    assert add.allowed == (Precision.INT8, Precision.FP16, Precision.BF16) and set(add.activations) == {"emb", "rx"}
    feeds = {"ids": rng.integers(0, 50, size=(2, 4)), "x": rng.normal(size=(2, 4, 8)).astype(np.float32)}
    ref = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    ranges = Ranges("max", {"emb": 6.0, "rx": 1.0})
    plan = Plan.of({"embed": Precision.FP16, "residual": Precision.INT8})
    mixed = lower(model, list(units.values()), plan, ranges)
    assert "table_fp16" in {t.name for t in mixed.graph.initializer}  # the table itself is stored FP16
    assert sum(n.op_type == "QuantizeLinear" for n in mixed.graph.node) == 2
    got = ort.InferenceSession(mixed.SerializeToString()).run(None, feeds)[0]
    assert got.dtype == np.float32 and np.abs(got - ref).max() < 7.0 / 254  # half an INT8 step on each input


def test_float_ops_on_both_sides_of_a_conv_are_two_units():
    # circular padding: Sigmoid -> Slice/Concat -> Conv, and Sub(Conv, Sigmoid) after it. One region for the
    # three would sit on both sides of the Conv; its downstream part would swallow the Conv's input.
    units = find_units(builders.circular_pad_conv()).units
    assert [u.nodes for u in units] == [("sig", "concat"), ("conv",), ("sub",)]
    assert units[1].activations == ("pad",)
