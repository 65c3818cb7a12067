"""Importing per-layer times from trtexec profiles (10.x and 11.x layer-info variants) and mapping them to units."""

import json
from pathlib import Path

import pytest

import builders
from trt_mpq.backends.trt_layers import attribute, nodes_in_name, read_layer_nodes, read_profile
from trt_mpq.errors import ConfigError
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision as P
from trt_mpq.precision import precision_files as parse_pairs

RS = "\x1e"  # trtexec separates metadata entries with the ASCII record separator


def _profile(tmp_path, name, layers):
    path = tmp_path / name
    path.write_text(json.dumps([{"count": 100}] + [
        {"name": n, "timeMs": ms * 100, "averageMs": ms, "medianMs": ms, "percentage": 1.0} for n, ms in layers]))
    return path


def test_profile_and_layer_info_map_to_units_10x(tmp_path):
    m = builders.conv_bn_relu_residual()
    units = find_units(m).units
    order = [n.name for n in m.graph.node]
    prof = _profile(tmp_path, "int8.json", [
        ("conv1 + bn1 + relu1", 0.010),                      # fused names, no metadata needed
        ("Reformatting CopyNode for Input Tensor 0 to conv2", 0.002),
        ("fused_conv2_layer", 0.020),                        # mapped only through the layer info
        ("gap", 0.001),
        ("fc", 0.003),
    ])
    info = tmp_path / "layers.json"
    info.write_text(json.dumps({"Layers": [
        {"Name": "fused_conv2_layer", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "r1", "Format/Datatype": "Channel major INT8 format"}],
         "Metadata": f"[ONNX Layer: conv2]{RS}[ONNX Layer: relu2]{RS}[ONNX Layer: add]{RS}[ONNX Layer: relu3]"},
        {"Name": "gap", "LayerType": "Reduce", "Metadata": "[ONNX Layer: gap]"},
    ], "Bindings": ["x", "y"]}))
    got = attribute({P.INT8: read_profile(prof)}, {P.INT8: read_layer_nodes(info)}, units, order)
    assert got.ms[("conv1", P.INT8)] == pytest.approx(0.010)
    assert got.ms[("conv2", P.INT8)] == pytest.approx(0.022)  # with the reformat that feeds it
    assert got.ms[("fc", P.INT8)] == pytest.approx(0.003)
    assert got.ms[("gap", P.INT8)] == pytest.approx(0.001)  # the pooling is a unit of its own
    assert got.unattributed_ms[P.INT8] == 0
    assert got.total_ms[P.INT8] == pytest.approx(0.036)


def test_layer_info_11x_and_inserted_qdq_names(tmp_path):
    m = builders.conv_bn_relu_residual()
    units = find_units(m).units
    info = tmp_path / "layers11.json"
    info.write_text(json.dumps({"Layers": [
        {"Name": "myelin_region", "Inputs": [{"Name": "x", "Datatype": "FP16", "Format": "Row major linear"}],
         "Metadata": f"[ONNX Layer: x_cast_fp16]{RS}[ONNX Layer: conv1]{RS}[ONNX Layer: fc]"}],
        "I/O Tensors": ["x", "y"]}))
    prof = _profile(tmp_path, "fp16.json", [("myelin_region", 0.04), ("r1_QuantizeLinear + conv2", 0.02)])
    got = attribute({P.FP16: read_profile(prof)}, {P.FP16: read_layer_nodes(info)}, units,
                    [n.name for n in m.graph.node])
    assert got.ms[("conv1", P.FP16)] == pytest.approx(0.02)  # one layer covering two units: split evenly
    assert got.ms[("fc", P.FP16)] == pytest.approx(0.02)
    assert got.ms[("conv2", P.FP16)] == pytest.approx(0.02)  # the Q node the lowering named after r1


def test_foreign_node_ranges_and_pwn_names():
    order = ["a", "b", "c", "d", "e"]
    assert nodes_in_name("{ForeignNode[b...d]}", order) == ["b", "c", "d"]
    assert nodes_in_name("PWN(c, e)", order) == ["c", "e"]
    assert nodes_in_name("a + PWN(b)", order) == ["a", "b"]


def test_bad_files_and_pairs(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_profile(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_profile(tmp_path / "bad.json")
    (tmp_path / "dict.json").write_text("{}")
    with pytest.raises(ConfigError, match="exportProfile"):
        read_profile(tmp_path / "dict.json")
    with pytest.raises(ConfigError, match="Layers"):
        read_layer_nodes(tmp_path / "dict.json")
    with pytest.raises(ConfigError, match="PRECISION=FILE"):
        parse_pairs(["int3=x.json"], "--latency-from")
    assert parse_pairs(["INT8=p.json"], "--latency-from") == {P.INT8: Path("p.json")}


def test_plan_uses_imported_latency(analysed, tmp_path):
    from trt_mpq import PlanOptions
    from trt_mpq import plan as plan_from_analysis
    from trt_mpq.artifacts import Budget

    files = []
    for p, slow in (("fp32", 1.0), ("fp16", 0.5), ("int8", 0.1)):
        path = _profile(tmp_path, f"{p}.json", [("conv1 + bn1 + relu1", slow), ("conv2 + relu2 + add + relu3", slow),
                                                ("gap", slow), ("fc", slow)])
        files.append(f"{p}={path}")
    report = plan_from_analysis(analysed / "run", PlanOptions(eval=str(analysed / "eval.npz"), metric="agreement",
                                budget=Budget(max_drop=1.0), latency_from=tuple(files))).to_json()
    assert report["latency"]["kind"].startswith("measured (trtexec profiles)")
    assert report["result"]["units"]["int8"] == 4  # measured INT8 is 10x faster and the budget allows it
    assert report["units"][0]["latency_ms"]["int8"] == pytest.approx(0.1)


def test_plan_measures_latency_on_the_backend(analysed):
    from trt_mpq import PlanOptions
    from trt_mpq import plan as plan_from_analysis
    from trt_mpq.artifacts import Budget

    report = plan_from_analysis(analysed / "run", PlanOptions(eval=str(analysed / "eval.npz"), metric="agreement",
                                budget=Budget(max_drop=1.0), measure_latency=True, latency_batch=4)).to_json()
    kind = report["latency"]["kind"]
    assert kind.startswith("measured (onnxruntime") and "batch 4" in kind
    assert report["latency"]["target"].startswith("this machine")
    for u in report["units"]:
        assert all(v > 0 for v in u["latency_ms"].values())  # every unit timed at every precision
    with pytest.raises(ConfigError, match="not both"):
        plan_from_analysis(analysed / "run", PlanOptions(eval=str(analysed / "eval.npz"), budget=Budget(max_drop=1),
                                                         measure_latency=True, latency_from=("int8=x.json",)))


def _layer(name, nodes, dtype, v11=False):
    tensor = {"Name": "t", "Datatype": dtype, "Format": "Row major"} if v11 else \
        {"Name": "t", "Format/Datatype": f"Row major linear {dtype}"}
    return {"Name": name, "Inputs": [tensor], "Outputs": [tensor],
            "Metadata": RS.join(f"[ONNX Layer: {n}]" for n in nodes)}


@pytest.mark.parametrize("v11", [False, True])
def test_check_reports_units_whose_realized_precision_differs(analysed, tmp_path, capsys, v11):
    from trt_mpq import PlanOptions
    from trt_mpq import plan as plan_from_analysis
    from trt_mpq.artifacts import Budget
    from trt_mpq.cli import main

    files = []
    for p, t in (("fp32", 1.0), ("fp16", 0.5), ("int8", 0.1)):
        path = _profile(tmp_path, f"{p}.json", [("conv1 + bn1 + relu1", t), ("conv2 + relu2 + add + relu3", t),
                                                ("gap", t), ("fc", t)])
        files.append(f"{p}={path}")
    plan_from_analysis(analysed / "run", PlanOptions(eval=str(analysed / "eval.npz"), metric="agreement",
                       budget=Budget(max_drop=1.0), latency_from=tuple(files)))  # all four units INT8
    info = tmp_path / "engine_layers.json"
    layers = [_layer("a", ["r1_QuantizeLinear", "conv2", "relu2"], "Int8" if not v11 else "INT8", v11),
              _layer("b", ["x_QuantizeLinear", "conv1", "bn1"], "FP32" if not v11 else "Float", v11),
              _layer("c", ["fc"], "Int8", v11), _layer("d", ["gap"], "Int8", v11)]
    info.write_text(json.dumps({"Layers": layers, ("I/O Tensors" if v11 else "Bindings"): ["x", "y"]}))
    code = main(["check", str(analysed / "run"), "--layer-info", str(info)])
    out = capsys.readouterr().out
    assert code == 3
    assert "conv1" in out and "FP32" in out and "3 of 4 units run in their planned precision; 1 differ" in out


def test_measured_latency_profiles_units_that_have_no_int8(tmp_path):
    """All-INT8 profiling lowers only the units TensorRT runs in INT8 (an embedding and a Softmax have none)."""
    import numpy as np

    import builders
    import trt_mpq
    from trt_mpq.artifacts import Budget

    path = builders.save(builders.embedding_residual(), tmp_path)
    rng = np.random.default_rng(0)
    for name, n in (("calib", 8), ("eval", 8)):
        np.savez(tmp_path / f"{name}.npz", ids=rng.integers(0, 50, size=(n, 2, 4)),  # the model fixes [2, 4]
                 x=rng.normal(size=(n, 2, 4, 8)).astype(np.float32))
    trt_mpq.analyze(path, tmp_path / "run", trt_mpq.AnalyzeOptions(calib=str(tmp_path / "calib.npz"), batch=2))
    report = trt_mpq.plan(tmp_path / "run", trt_mpq.PlanOptions(
        eval=str(tmp_path / "eval.npz"), metric="cosine", budget=Budget(max_drop=0.5), measure_latency=True,
        batch=2)).to_json()
    by_name = {u["name"]: u["latency_ms"] for u in report["units"]}
    assert set(by_name["embed"]) == {"fp32", "fp16"} and set(by_name["residual"]) == {"fp32", "fp16", "int8"}


def test_realised_precision_reads_each_units_own_input_and_admits_what_it_cannot_tell():
    import builders
    from trt_mpq.artifacts import CheckRow
    from trt_mpq.backends.trt_layers import FUSED, UNKNOWN, realized
    from trt_mpq.network.units import find_units

    units = find_units(builders.conv_bn_relu_residual()).units  # conv1, conv2 (+ residual add), gap, fc

    def tensor(name, dtype):
        return {"Name": name, "Format/Datatype": f"Row major linear {dtype}"}

    layers = {"Layers": [
        # conv2's kernel lists the residual (FP32 here) first; its own input is the quantized r1
        {"Name": "conv2 + relu2 + add + relu3",
         "Inputs": [tensor("r1_residual", "FP32"), tensor("r1_quantized", "Int8")]},
        # what serves conv2's layer reads its output, not its input: it must not overwrite conv2's type
        {"Name": "Reformatting CopyNode for Output Tensor 0 to conv2 + relu2 + add + relu3",
         "Inputs": [tensor("r2", "FP16")]},
        {"Name": "reshape_after_conv2", "Inputs": [tensor("r2", "FP32")]},
        {"Name": "{ForeignNode[gap...fc]}", "Inputs": [tensor("r3", "FP16")]},  # one Myelin region, two units
        {"Name": "conv1 + bn1 + relu1", "Inputs": [{"Name": "x", "Format/Datatype": "N/A due to dynamic shapes"}]},
    ]}
    got = realized(layers, units)
    assert got == {"conv1": UNKNOWN, "conv2": P.INT8, "gap": FUSED, "fc": FUSED}
    rows = [CheckRow(u, P.INT8, v.value if isinstance(v, P) else v) for u, v in got.items()]
    assert [r.differs for r in rows] == [False, False, False, False]  # unknown is not a mismatch
    assert CheckRow("conv1", P.INT8, "fp32").differs


def test_layer_metadata_of_nodes_inside_onnx_local_functions_names_the_node():
    from trt_mpq.backends.trt_layers import layer_nodes

    meta = RS.join(["[ONNX Layer: /enc/ln/Mul | Local Function: LayerNorm]", "[ONNX Layer: /enc/ln/Add]"])
    assert layer_nodes({"Layers": [{"Name": "ln", "Metadata": meta}]}) == {"ln": ["/enc/ln/Mul", "/enc/ln/Add"]}


def test_realised_types_of_the_new_precisions_read_as_planned():
    from trt_mpq.artifacts import CheckRow
    from trt_mpq.backends.trt_layers import _datatype

    assert _datatype({"Format/Datatype": "Row major linear BFloat16"}) is P.BF16
    assert _datatype({"Datatype": "FP8"}) is P.FP8 and _datatype({"Datatype": "Int4"}) is P.INT4
    assert _datatype({"Format/Datatype": "Row major linear FP32"}) is P.FP32
    assert CheckRow("u", P.TF32, "fp32").matches and not CheckRow("u", P.TF32, "fp16").matches  # FP32 storage
    assert CheckRow("u", P.INT4, "fp16").matches  # weight-only: the layer reads FP16
    assert CheckRow("u", P.BF16, "bf16").matches and CheckRow("u", P.BF16, "fp32").differs
