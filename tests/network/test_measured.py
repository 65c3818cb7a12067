"""Where sensitivity is measured (network/measured.py): before a final plugin the backend cannot run, at
--outputs, and one sentence where an op it cannot run sits inside the network."""

import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from trt_mpq.backends.onnxrt import OnnxRuntimeBackend, OnnxRuntimeOptions
from trt_mpq.errors import BackendError, ConfigError
from trt_mpq.network.measured import measured_at, measured_model
from trt_mpq.network.model import load_model

ORT = OnnxRuntimeBackend()


def test_onnxruntime_says_which_ops_it_runs():
    assert ORT.runs_op("", "Conv") and ORT.runs_op("ai.onnx", "LayerNormalization")
    assert ORT.runs_op("com.microsoft", "FusedConv")  # a contrib kernel of its own
    assert not ORT.runs_op("", "EfficientNMS_TRT") and not ORT.runs_op("com.example", "MyOp")


def test_a_custom_op_library_is_trusted_for_its_domain_and_must_exist(tmp_path):
    lib = tmp_path / "libmyops.so"
    lib.write_bytes(b"\0")
    trusting = OnnxRuntimeBackend(OnnxRuntimeOptions(custom_ops=(str(lib),)))
    assert trusting.runs_op("com.example", "MyOp") and not trusting.runs_op("", "EfficientNMS_TRT")
    assert OnnxRuntimeOptions.from_json(trusting.options_json()).custom_ops == (str(lib.resolve()),)
    with pytest.raises(BackendError, match="does not exist"):
        OnnxRuntimeOptions(custom_ops="nowhere/libx.so")
    with pytest.raises(BackendError, match="could not load the custom-op library"):
        trusting.session_options()  # not a shared library: one sentence, not a crash


def test_a_final_plugin_is_measured_before_and_the_cut_runs(tmp_path):
    model = load_model(builders.save(builders.detector_with_nms(), tmp_path))  # ONNX's checker would refuse it
    at = measured_at(model.proto, None, ORT.runs_op, ORT.name)
    assert at.outputs == ("boxes", "scores") and at.left_out == ("EfficientNMS_TRT 'nms'",)
    assert "onnxruntime cannot run EfficientNMS_TRT" in at.note()
    part = measured_model(model, at.outputs, at.note())
    assert [o.name for o in part.outputs] == ["boxes", "scores"] and part.measured == at.outputs
    assert part.whole is model.proto and part.whole.graph.node[-1].op_type == "EfficientNMS_TRT"
    assert "EfficientNMS_TRT" not in {n.op_type for n in part.proto.graph.node}
    x = np.ones((2, 3, 4, 4), np.float32)
    got = ORT.compile(part.proto).run({"x": x})
    assert got["boxes"].shape == (2, 16, 4) and got["scores"].shape == (2, 16, 3)


def test_outputs_chosen_by_name(tmp_path):
    model = load_model(builders.save(builders.conv_bn_relu_residual(), tmp_path))
    at = measured_at(model.proto, ["r1"], ORT.runs_op, ORT.name)
    assert at.outputs == ("r1",) and at.why == "--outputs" and "Gemm 'fc'" in at.left_out
    part = measured_model(model, at.outputs)
    assert [n.name for n in part.proto.graph.node] == ["conv1", "bn1", "relu1"]
    assert {t.name for t in part.proto.graph.initializer} == {"w1", "g", "b", "m", "v"}
    assert measured_at(model.proto, None, ORT.runs_op, ORT.name) is None  # nothing to cut: its outputs
    with pytest.raises(ConfigError, match="'nope' is not a tensor"):
        measured_at(model.proto, ["nope"], ORT.runs_op, ORT.name)


def test_an_op_it_cannot_run_inside_the_network_or_alone_is_one_sentence(tmp_path):
    inside = load_model(builders.save(builders.custom_op_inside(), tmp_path))
    with pytest.raises(ConfigError, match=r"cannot run com\.example:MyOp 'mine', and 1 convolution"):
        measured_at(inside.proto, None, ORT.runs_op, ORT.name)
    with pytest.raises(ConfigError, match="which --outputs y depend on"):
        measured_at(inside.proto, ["y"], ORT.runs_op, ORT.name)
    node = helper.make_node("MyOp", ["x"], ["y"], "mine", domain="com.example")
    graph = helper.make_graph([node], "alone", [builders.fvi("x", [1, 4])], [builders.fvi("y", [1, 4])])
    alone = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(ConfigError, match="nothing it can run comes before"):
        measured_at(alone, None, ORT.runs_op, ORT.name)


def test_a_cut_keeps_the_weights_an_ifs_branches_read():
    from trt_mpq.network.measured import cut
    from trt_mpq.network.shapes import infer_tensors

    model = builders.if_subgraph()
    part = cut(model, ["y"], infer_tensors(model))
    assert {t.name for t in part.graph.initializer} == {"k16", "w_then", "w_else"}
    onnx.checker.check_model(part)
