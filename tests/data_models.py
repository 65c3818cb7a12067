"""Tiny models and helpers for the data tests: every model is an ONNX graph built in code under tmp_path."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trt_mpq.network.model import load_model

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def save_model(tmp_path, nodes, inputs, outputs, inits=(), name="model.onnx"):
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m)
    path = tmp_path / name
    onnx.save(m, str(path))
    return load_model(path)


def identity_model(tmp_path, *inputs, shapes=None, name="model.onnx"):
    """A model passing each (name, elem_type, shape) input through an Identity to '<name>_out'."""
    vis = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    outs = [helper.make_tensor_value_info(f"{n}_out", t, s) for n, t, s in inputs]
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"], name=f"id_{n}") for n, _, _ in inputs]
    graph = helper.make_graph(nodes, "tiny", vis, outs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m)
    path = tmp_path / name
    onnx.save(m, str(path))
    return load_model(path, shapes)


def image_model(tmp_path, shape=("batch", 3, 8, 8)):
    return identity_model(tmp_path, ("image", FLOAT, list(shape)), name="image_model.onnx")


def gather_model(tmp_path, table_rows=7, through_cast=False):
    """ids int64[batch,50] -> (Cast to int32) -> Gather on a constant [table_rows, 4] table."""
    table = numpy_helper.from_array(np.arange(table_rows * 4, dtype=np.float32).reshape(table_rows, 4), "table")
    nodes, idx = [], "ids"
    if through_cast:
        nodes.append(helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32))
        idx = "ids32"
    nodes.append(helper.make_node("Gather", ["table", idx], ["emb"], axis=0))
    return save_model(tmp_path, nodes, [helper.make_tensor_value_info("ids", INT64, ["batch", 50])],
                 [helper.make_tensor_value_info("emb", FLOAT, ["batch", 50, 4])], [table], name="gather.onnx")


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def collect(ds, batch):
    """All batches, concatenated per input, plus the list of batch sizes along axis 0."""
    parts = list(ds.batches(batch))
    sizes = [next(iter(p.values())).shape[0] for p in parts]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}, sizes



def random_x(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)
