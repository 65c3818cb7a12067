import builders
from trt_mpq.network.units import find_units


def _units(m):
    table = find_units(m)
    return {u.name: u for u in table.units}, table


def test_conv_bn_relu_and_residual_fuse_into_units():
    units, table = _units(builders.conv_bn_relu_residual())
    assert list(units) == ["conv1", "conv2", "fc"]
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
