"""Loading and normalising models: dims written as -1, unnamed dims that follow the batch."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import trt_mpq
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.network.model import load_model


def _model(tmp_path, inputs, name="m.onnx"):
    """Each (name, dims) input passed through Relu to '<name>_out' (dims: ints, -1, names or None)."""
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n, dims in inputs]
    outs = [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, [f"o{k}" for k in range(len(d))])
            for n, d in inputs]
    nodes = [helper.make_node("Relu", [n], [f"{n}_out"], name=f"relu_{n}") for n, _ in inputs]
    m = helper.make_model(helper.make_graph(nodes, "g", vis, outs), opset_imports=[helper.make_opsetid("", 17)],
                          ir_version=8)
    for vi in m.graph.input:  # make_tensor_value_info drops None; write the raw dims the way exporters do
        for d, want in zip(vi.type.tensor_type.shape.dim, dict(inputs)[vi.name], strict=True):
            if isinstance(want, int) and want < 0:
                d.Clear()
                d.dim_value = want
            elif want is None:
                d.Clear()
    onnx.save(m, str(tmp_path / name))
    return tmp_path / name


def test_dims_written_as_minus_one_are_dynamic(tmp_path):
    path = _model(tmp_path, [("x", [-1, 3, -1, -1])])
    model = load_model(path)
    assert model.inputs[0].batch_axis == 0 and not any(isinstance(d, int) for d in model.inputs[0].shape[2:])
    assert any("written as -1" in n for n in model.notes)
    fixed = load_model(path, {"x": (1, 3, 48, 192)})  # a Paddle classifier's --shape, refused before
    assert fixed.inputs[0].shape[1:] == (3, 48, 192)
    data = generated_dataset(fixed, samples=3)
    assert data.take(0, 3)["x"].shape == (3, 3, 48, 192)


def test_an_unnamed_dim_follows_the_batch_of_the_other_inputs(tmp_path):
    path = _model(tmp_path, [("input", ["batch", 8]), ("state", [2, None, 4])])
    data = generated_dataset(load_model(path), samples=2)
    assert data.take(0, 1)["state"].shape == (2, 1, 4) and "state axis 1" in data.details["assumed"]
    analysis = trt_mpq.analyze(path, tmp_path / "run", trt_mpq.AnalyzeOptions(samples=2))  # no --shape needed
    assert analysis.calibration.data.samples == 2
    assert np.isfinite(data.take(1, 2)["input"]).all()


def test_a_named_dim_fixed_on_one_input_is_fixed_on_the_others(tmp_path):
    path = _model(tmp_path, [("input_ids", ["batch", "seq"]), ("attention_mask", ["batch", "seq"])])
    model = load_model(path, {"input_ids": (1, 64)})  # one --shape, as for a tokenised sentence pair
    assert [s.shape[1] for s in model.inputs] == [64, 64]
    assert generated_dataset(model, samples=2).take(0, 2)["attention_mask"].shape == (2, 64)
