"""The TensorRT backend without a GPU: the probe and its messages, option mapping, optimisation profiles,
per-layer times, the inspector's layer information (10.x and 11.x fixtures) mapped to units, and the CLI.

The fixtures in tests/fixtures/tensorrt/ are written in the formats TensorRT documents (engine inspector JSON
at detailed verbosity; IProfiler's (layer name, ms) reports) for the digits CNN lowered with conv1/conv2/fc1 in
INT8 and conv3 in FP16; in them TensorRT 'declined' fc1's INT8 (its Q/DQ stayed apart), which the check must
report. They were not captured from a real engine (no GPU here); the 10.x file's format strings are ones
TensorRT really prints (as in the A100 captures of ../shared/trt-captures)."""

from __future__ import annotations

import enum
import inspect
import json
import types
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from trt_mpq.artifacts import BuildResult
from trt_mpq.backends import BackendContext, open_backend
from trt_mpq.backends import tensorrt as trtb
from trt_mpq.backends.trt_layers import attribute, layer_nodes, realized
from trt_mpq.cli import main
from trt_mpq.errors import BackendError
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision as P

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tensorrt"


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorNoDevice = 100


def importer(cuda=(CudaError.cudaSuccess, 1), trt_version="11.2.0", polygraphy=True, missing=(), driver=13000,
             bindings="13.0.1", polygraphy_version="0.53.6", cudart_lib=True):
    """A stand-in for importlib.import_module over fake cuda-python / tensorrt / polygraphy modules."""
    def wrapper():
        if not cudart_lib:
            raise OSError("libcudart.so: cannot open shared object file: No such file or directory")

    modules = {
        "cuda.bindings.runtime": types.SimpleNamespace(cudaGetDeviceCount=lambda: cuda,
                                                       cudaDriverGetVersion=lambda: (CudaError.cudaSuccess, driver)),
        "cuda.bindings": types.SimpleNamespace(__version__=bindings),
        "tensorrt": types.SimpleNamespace(__version__=trt_version),
        "polygraphy.backend.trt": types.SimpleNamespace(),
        "polygraphy": types.SimpleNamespace(__version__=polygraphy_version),
        "polygraphy.cuda": types.SimpleNamespace(wrapper=wrapper),
    }
    if not polygraphy:
        missing = (*missing, "polygraphy.backend.trt")

    def load(name):
        if name in missing or name not in modules:
            raise ImportError(name)
        return modules[name]
    return load


@pytest.mark.parametrize("kwargs, words", [
    (dict(missing=("cuda.bindings.runtime",)), "needs cuda-python .* pip install 'trt-mpq\\[gpu\\]'"),
    (dict(cuda=(CudaError.cudaErrorNoDevice, 0)), "needs an NVIDIA GPU and none is visible \\(cudaErrorNoDevice\\)"),
    (dict(cuda=(CudaError.cudaSuccess, 0)), "none is visible \\(0 devices\\).*--gpus all.*--backend onnxruntime"),
    (dict(missing=("tensorrt",)), "needs TensorRT, which is not installed"),
    (dict(trt_version="8.6.1"), "TensorRT 8.6.1 is too old: strongly typed networks need 10.0"),
    (dict(polygraphy=False), "needs Polygraphy"),
    (dict(driver=12040), "cuda-python 13.0.1 is built for CUDA 13, but the NVIDIA driver supports CUDA 12.4"
                         ".*tensorrt-cu12"),
    (dict(polygraphy_version="0.49.26"), "Polygraphy 0.49.26 cannot build with TensorRT 11.2.0.*polygraphy>=0.50.3"),
    (dict(cudart_lib=False), "could not load the CUDA runtime library \\(libcudart.so: .*nvidia-cuda-runtime"),
])
def test_probe_says_what_is_missing_in_one_sentence(kwargs, words):
    message = trtb.probe(importer(**kwargs))
    assert message is not None and "\n" not in message and message.endswith(".")
    assert pytest.importorskip("re").search(words, message), message


def test_probe_passes_with_everything_present_and_never_touches_tensorrt_without_a_gpu():
    assert trtb.probe(importer()) is None
    assert trtb.probe(importer(trt_version="10.13.3.9")) is None
    assert trtb.probe(importer(trt_version="10.13.3.9", polygraphy_version="0.49.26")) is None  # fine on 10.x
    assert trtb.probe(importer(driver=12040, bindings="12.9.0")) is None  # a CUDA 12 stack on a CUDA 12 driver
    # no GPU: TensorRT is not even imported (creating TensorRT objects without a GPU can crash the process)
    assert "GPU" in trtb.probe(importer(cuda=(CudaError.cudaErrorNoDevice, 0), missing=("tensorrt",)))


def test_network_is_strongly_typed_on_10x_and_11x():
    assert trtb.network_kwargs("10.13.3.9") == {"strongly_typed": True}
    assert trtb.network_kwargs("11.2.0") == {}  # always strongly typed in 11.x
    from polygraphy.backend.trt import NetworkFromOnnxPath

    assert "strongly_typed" in inspect.signature(NetworkFromOnnxPath).parameters


FAKE_TRT = types.SimpleNamespace(ProfilingVerbosity=types.SimpleNamespace(DETAILED="detailed",
                                                                          LAYER_NAMES_ONLY="names"))


def test_config_options_map_to_polygraphy(tmp_path):
    cache = tmp_path / "timing.cache"
    probe_cfg = trtb.config_kwargs(trtb.BuildSettings(1, cache, False, 8), FAKE_TRT)
    assert probe_cfg == {"tf32": False, "builder_optimization_level": 1, "profiling_verbosity": "names",
                         "load_timing_cache": None}  # no cache file yet: nothing to load
    cache.write_bytes(b"x")
    final = trtb.config_kwargs(trtb.BuildSettings(trtb.FINAL_OPT_LEVEL, cache, True, 8), FAKE_TRT)
    assert final["load_timing_cache"] == str(cache) and final["profiling_verbosity"] == "detailed"
    assert final["builder_optimization_level"] == 3 and final["tf32"] is False
    import importlib

    polygraphy_config = importlib.import_module("polygraphy.backend.trt.config")

    accepted = {*inspect.signature(polygraphy_config.CreateConfig).parameters,  # its own, then **kwargs for:
                *inspect.signature(polygraphy_config._CreateConfigCommon).parameters}
    assert set(final) | {"profiles"} <= accepted
    with pytest.raises(BackendError, match="0-5"):
        trtb.config_kwargs(trtb.BuildSettings(6), FAKE_TRT)
    with pytest.raises(BackendError, match="at least 1"):
        trtb.BuildSettings(max_batch=0).check()


def test_backend_options_reach_the_build_settings(monkeypatch):
    monkeypatch.setattr(trtb, "probe", lambda: None)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", types.SimpleNamespace(__version__="11.2.0"))
    backend = trtb.TensorRTBackend(trtb.TensorRTOptions(), BackendContext(Path("/run"), max_batch=32))
    assert backend.settings == trtb.BuildSettings(trtb.PROBE_OPT_LEVEL, Path("/run/timing.cache"), False, 32)
    assert trtb.TensorRTBackend(trtb.TensorRTOptions(probe_opt_level=4)).settings.opt_level == 4
    final = trtb.TensorRTBackend(trtb.TensorRTOptions(probe_opt_level=4), BackendContext(final=True))
    assert final.settings.opt_level == trtb.FINAL_OPT_LEVEL  # verification and deployment: the final level
    final5 = trtb.TensorRTBackend(trtb.TensorRTOptions(final_opt_level=5), BackendContext(final=True))
    assert final5.settings.opt_level == 5


def _vi(name, dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def test_shape_profile():
    assert trtb.shape_profile([_vi("x", ["batch", 3, 8, 8])], 16) == {"x": ((1, 3, 8, 8), (16, 3, 8, 8),
                                                                             (16, 3, 8, 8))}
    assert trtb.shape_profile([_vi("x", [1, 3, 8, 8])], 16) == {}  # static: no profile needed
    one = ((1, 3, 8, 8),) * 3  # a dynamic input needs a profile even when it spans only batch 1
    assert trtb.shape_profile([_vi("x", ["batch", 3, 8, 8]), _vi("k", [4])], 1) == {"x": one, "k": ((4,),) * 3}
    with pytest.raises(BackendError, match="axis 2.*--shape"):
        trtb.shape_profile([_vi("x", [1, 3, "h", "w"])], 16)


def test_layer_times_are_medians_over_runs_with_repeats_summed():
    runs = [[("a", 1.0), ("b", 2.0), ("a", 0.5)], [("a", 2.0), ("b", 4.0)], [("a", 1.6), ("b", 3.0)]]
    assert trtb.layer_times(runs) == {"a": 1.6, "b": 3.0}
    assert trtb.layer_times([]) == {}


def test_profiler_records_each_layer_report():
    class IProfiler:  # stand-in for trt.IProfiler, whose __init__ must be called
        def __init__(self):
            self.initialised = True

    recorder = trtb.make_profiler(types.SimpleNamespace(IProfiler=IProfiler))
    assert recorder.initialised
    recorder.report_layer_time("node_Conv_25 + node_relu", 0.004)
    assert recorder.current == [("node_Conv_25 + node_relu", 0.004)]


@pytest.fixture
def digits_units(shared_models):
    from trt_mpq.network.model import load_model

    return find_units(load_model(shared_models / "digits_cnn.onnx").proto).units


PLANNED = {"node_Conv_25": P.INT8, "node_Conv_26": P.INT8, "node_Conv_27": P.FP16, "node_linear": P.INT8,
           "node_linear_1": P.FP32}


@pytest.mark.parametrize("version", ["10x", "11x"])
def test_inspector_json_gives_realised_precision_per_unit(digits_units, version):
    info = json.loads((FIXTURES / f"digits_inspector_{version}.json").read_text())
    got = realized(info, digits_units)
    # fc1's INT8 was declined in the fixture; its max pools (units of their own now) ran FP32
    assert got == {**PLANNED, "node_linear": P.FP32, "node_max_pool2d": P.FP32, "node_max_pool2d_1": P.FP32}
    nodes = layer_nodes(info)
    assert nodes["node_Conv_27 + node_relu_2"] == ["node_Conv_27", "node_relu_2"]
    with pytest.raises(Exception, match="no 'Layers' list"):
        realized({"I/O Tensors": []}, digits_units)


@pytest.mark.parametrize("version", ["10x", "11x"])
def test_profiler_times_map_to_units_through_the_inspector(digits_units, version):
    info = json.loads((FIXTURES / f"digits_inspector_{version}.json").read_text())
    runs = json.loads((FIXTURES / "digits_profiler_runs.json").read_text())
    ms = trtb.layer_times(runs)
    order = [n for u in digits_units for n in u.nodes]
    got = attribute({P.INT8: ms}, {P.INT8: layer_nodes(info)}, digits_units, order)
    assert {u for u, _ in got.ms} == {u.name for u in digits_units}
    assert all(v > 0 for v in got.ms.values())
    # the input quantize belongs to conv1 (it exists because conv1 is INT8); each max pool is a unit
    assert got.ms[("node_Conv_25", P.INT8)] == pytest.approx(ms["input_QuantizeLinear"] + ms[
        "conv1.weight_DequantizeLinear + input_DequantizeLinear + node_Conv_25 + node_relu + relu_QuantizeLinear"])
    assert got.ms[("node_max_pool2d", P.INT8)] == pytest.approx(ms["node_max_pool2d"])
    assert got.ms[("node_max_pool2d_1", P.INT8)] == pytest.approx(ms["node_max_pool2d_1 + node_Reshape_30"])
    assert got.unattributed_ms[P.INT8] == 0
    assert sum(got.ms.values()) + got.unattributed_ms[P.INT8] == pytest.approx(sum(ms.values()))


def test_tensorrt_backend_without_a_gpu_is_one_sentence_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(trtb, "probe", lambda: "the TensorRT backend needs an NVIDIA GPU and none is visible "
                        "(cudaErrorNoDevice); run on an NVIDIA host.")
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        open_backend("tensorrt")
    chosen = open_backend("auto")
    assert chosen.backend.name == "onnxruntime"
    assert chosen.reason == "tensorrt not used: the TensorRT backend needs an NVIDIA GPU and none is visible " \
                                "(cudaErrorNoDevice)"


def test_cli_tensorrt_without_gpu(monkeypatch, tmp_path, capsys, analysed):
    monkeypatch.setattr(trtb, "probe", lambda: "the TensorRT backend needs TensorRT, which is not installed; "
                        "pip install 'trt-mpq[gpu]'.")
    model = analysed / "model.onnx"
    out = tmp_path / "trt"
    code = main(["run", str(model), "--out", str(out), "--eval", str(analysed / "eval.npz"), "--max-drop", "0.1",
                 "--backend", "tensorrt"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "TensorRT" in err[0] and "pip install" in err[0]
    assert not (out / "sensitivity.json").exists()
    # build needs a plan first, then a GPU
    assert main(["build", str(tmp_path / "none")]) == 2
    assert "run 'trt-mpq plan'" in capsys.readouterr().err
    main(["plan", str(analysed / "run"), "--eval", str(analysed / "eval.npz"), "--max-drop", "0.5", "--quiet"])
    capsys.readouterr()
    assert main(["build", str(analysed / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs TensorRT" in err[0]
    assert not (analysed / "run" / "model.engine").exists()
    assert main(["build", str(analysed / "run"), "--typing", "weak"]) == 2  # the same sentence, weakly typed too
    assert "needs TensorRT" in capsys.readouterr().err
    from trt_mpq.artifacts import PlanReport
    from trt_mpq.commands.build import weak_pins

    plan_doc = json.loads((analysed / "run" / "plan.json").read_text())
    pins = weak_pins(PlanReport.from_json(json.loads((analysed / "run" / "report.json").read_text())))
    assert set(pins) == {n for u in plan_doc["units"] if u["precision"] != "int8" for n in u["nodes"]}
    # auto: the same run on ONNX Runtime, and the log says why
    code = main(["analyze", str(model), "--out", str(tmp_path / "auto"), "--calib", str(analysed / "calib.npz")])
    assert code == 0
    assert "chosen by --backend auto; tensorrt not used: the TensorRT backend needs TensorRT" in \
        capsys.readouterr().err


def test_plan_verifies_on_the_backend_of_the_analysis(analysed, monkeypatch):
    from trt_mpq import PlanOptions
    from trt_mpq import plan as plan_from_analysis
    from trt_mpq.artifacts import Budget

    doc_path = analysed / "run" / "sensitivity.json"
    doc = json.loads(doc_path.read_text())
    doc["backend_settings"]["name"] = "tensorrt"  # as if analysed on a GPU
    doc_path.write_text(json.dumps(doc))
    monkeypatch.setattr(trtb, "probe", lambda: "the TensorRT backend needs an NVIDIA GPU and none is visible.")
    opts = PlanOptions(eval=str(analysed / "eval.npz"), budget=Budget(max_drop=0.5))
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        plan_from_analysis(analysed / "run", opts)
    report = plan_from_analysis(analysed / "run", PlanOptions(eval=str(analysed / "eval.npz"),
                                budget=Budget(max_drop=0.5), backend="onnxruntime")).to_json()
    assert report["backend"].startswith("onnxruntime")


def test_report_shows_planned_vs_realised(analysed):
    from trt_mpq.artifacts import PlanReport
    from trt_mpq.commands.opened import read_analysis as load_analysis
    from trt_mpq.report.html import render

    assert main(["plan", str(analysed / "run"), "--eval", str(analysed / "eval.npz"), "--max-drop", "0.5",
                 "--quiet"]) == 0
    report = PlanReport.from_json(json.loads((analysed / "run" / "report.json").read_text()))
    realized = BuildResult.from_json({"engine": "model.engine, tensorrt 11.2.0", "units": [
        {"unit": "conv1", "planned": "int8", "realized": "fp32", "matches": False},
        {"unit": "fc", "planned": "fp16", "realized": "fp16", "matches": True}]})
    page = render(report, load_analysis(analysed / "run")[0], realized)
    assert "Planned vs realised in the TensorRT engine" in page and "1 of 2 units run in their planned" in page
    assert "<td>FP32</td><td>NO</td>" in page


def test_build_hands_polygraphy_a_strongly_typed_network_config_and_profile(monkeypatch, tmp_path):
    """build() up to TensorRT itself: Polygraphy's engine_from_network is replaced by a recorder."""
    import builders

    monkeypatch.setattr(trtb, "probe", lambda: None)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", types.SimpleNamespace(
        __version__="10.13.3", ProfilingVerbosity=FAKE_TRT.ProfilingVerbosity))
    seen = {}

    def engine_from_network(network, config, save_timing_cache=None):
        seen.update(network=network, config=config, cache=save_timing_cache)
        return "engine"

    monkeypatch.setattr("polygraphy.backend.trt.engine_from_network", engine_from_network)
    cache = tmp_path / "timing.cache"
    backend = trtb.TensorRTBackend(trtb.TensorRTOptions(), BackendContext(tmp_path, max_batch=4))
    log: list[str] = []
    assert backend.build(builders.conv_bn_relu_residual(), log=log) == "engine"
    assert seen["network"].strongly_typed is True  # 10.x: the flag is set
    assert seen["cache"] == str(cache)
    config = seen["config"]
    assert config.tf32 is False and config.builder_optimization_level == trtb.PROBE_OPT_LEVEL
    (profile,) = config.profiles
    assert profile["x"].min == (1, 3, 8, 8) and profile["x"].max == (4, 3, 8, 8)

    def fails(*args, **kwargs):
        print("[V] parsing node_Conv_25")
        print("\x1b[31m[E] [TRT] node_Conv_25: unsupported data type\x1b[0m")  # the cause, in colour
        print("[E] [TRT] network creation failed")  # a follow-up
        print("[!] Invalid Engine. Please ensure the engine was built correctly")  # Polygraphy's verdict
        raise RuntimeError("Polygraphy: critical")

    monkeypatch.setattr("polygraphy.backend.trt.engine_from_network", fails)
    with pytest.raises(BackendError, match="could not build the model: \\[E\\] \\[TRT\\] node_Conv_25: "
                       "unsupported data type \\(full log: .*failed-build.log\\)$"):
        backend.build(builders.conv_bn_relu_residual(), log=log)
    assert any("unsupported data type" in line for line in log)  # what build.log gets
    kept = (tmp_path / ".trt-mpq" / "failed-build.log").read_text()  # a probe build's log is not lost either
    assert "[V] parsing node_Conv_25" in kept and "\x1b" not in kept
    verdict_only = trtb.build_error("[!] Invalid Engine", ValueError("x"))
    assert verdict_only == "TensorRT could not build the model: [!] Invalid Engine"
    from polygraphy.logger import G_LOGGER

    assert G_LOGGER.module_severity.get() != G_LOGGER.VERBOSE  # the log level is restored after a build
    assert trtb.build_error("", ValueError("")) == "TensorRT could not build the model: ValueError"


def test_session_feeds_what_the_engine_takes_keeps_scalars_and_copies_outputs():
    class Runner:  # stand-in for Polygraphy's TrtRunner
        def activate(self):
            self.buffer = {"y": np.zeros(2, np.float32)}

        def get_input_metadata(self):
            return {"x": None, "k": None}

        def infer(self, feeds):
            self.fed = feeds
            self.buffer["y"][:] = feeds["x"].sum()
            return self.buffer

        def deactivate(self):
            pass

    runner = Runner()
    session = trtb.TensorRTSession(runner)
    out = session.run({"x": np.ones((2, 3), np.float32)[:, ::2], "k": np.int64(4), "unused": np.zeros(1)})
    assert set(runner.fed) == {"x", "k"} and runner.fed["k"].shape == () and runner.fed["x"].flags.c_contiguous
    runner.buffer["y"][:] = -1  # the next run overwrites the buffer: results must be copies
    assert out["y"].tolist() == [4.0, 4.0]
    with pytest.raises(BackendError, match="engine has no output 'missing' \\(it has y\\)"):
        session.run({"x": np.ones((1, 1), np.float32)}, outputs=["missing"])


def test_probe_survives_a_binding_that_raises():
    def broken(name):
        if name == "cuda.bindings.runtime":
            return types.SimpleNamespace(cudaGetDeviceCount=lambda: (_ for _ in ()).throw(RuntimeError("libcuda")))
        raise ImportError(name)
    assert "could not query the GPUs through cuda-python (libcuda); check the NVIDIA driver" in trtb.probe(broken)


def test_the_inspector_sees_dynamic_inputs_at_their_opt_shape():
    """Without an execution context with shapes, a dynamic-batch engine reports no formats (issue 12, item 4)."""
    trt = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
                                LayerInformationFormat=types.SimpleNamespace(JSON="json"))

    class Context:
        shapes: dict = {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = shape

    class Inspector:
        execution_context = None

        def get_engine_information(self, fmt):
            ok = self.execution_context is not None and self.execution_context.shapes == {"x": (8, 3, 8, 8)}
            return json.dumps({"Layers": [], "formats": "known" if ok else "N/A"})

    class Engine:
        num_io_tensors = 3
        names = ["x", "scale", "y"]
        shapes = {"x": (-1, 3, 8, 8), "scale": (1,), "y": (-1, 10)}

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "out" if name == "y" else "in"

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def get_tensor_profile_shape(self, name, profile):
            assert name == "x" and profile == 0  # only the dynamic input
            return [(1, 3, 8, 8), (8, 3, 8, 8), (8, 3, 8, 8)]

        def create_engine_inspector(self):
            return Inspector()

        def create_execution_context(self):
            return Context()

    assert trtb.inspect_engine(Engine(), trt)["formats"] == "known"


def test_weak_typing_pins_the_plans_fp16_and_fp32_layers_on_10x_and_is_refused_on_11x(monkeypatch, tmp_path):
    """TensorRT 10.x weak typing through Polygraphy: fp16+int8 flags, constraints 'obey', a postprocess step
    that pins every layer of the FP16/FP32 units (engine_from_network is replaced by a recorder)."""
    import builders

    monkeypatch.setattr(trtb, "probe", lambda: None)
    fake = types.SimpleNamespace(__version__="10.13.3", ProfilingVerbosity=FAKE_TRT.ProfilingVerbosity,
                                 float16="half", float32="float", int64="int64")
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", fake)
    seen = {}

    def engine_from_network(network, config, save_timing_cache=None):
        seen.update(network=network, config=config)
        return "engine"

    monkeypatch.setattr("polygraphy.backend.trt.engine_from_network", engine_from_network)
    backend = trtb.TensorRTBackend(trtb.TensorRTOptions(), BackendContext(tmp_path, max_batch=4))
    pins = {"conv2": P.FP16, "relu2": P.FP16, "fc": P.FP32, "gone": P.FP16}
    assert backend.build_engine(builders.conv_bn_relu_residual(), [], pins) == "engine"
    config = seen["config"]
    assert config.fp16 and config.int8 and config.precision_constraints == "obey"

    class Layer:
        def __init__(self, name, out_dtype):
            self.name, self.precision, self.types = name, None, {}
            self.num_outputs, self._out = 1, types.SimpleNamespace(dtype=out_dtype)

        def get_output(self, k):
            return self._out

        def set_output_type(self, k, dtype):
            self.types[k] = dtype

    layers = [Layer("conv1", "float"), Layer("conv2", "float"), Layer("relu2", "float"), Layer("fc", "float"),
              Layer("shape_of_x", "int64")]
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    assert trtb.pin_layers(network, {**pins, "shape_of_x": P.FP16}, fake) == ["gone"]  # reported, not fatal
    assert [(x.precision, x.types) for x in layers] == [
        (None, {}), ("half", {0: "half"}), ("half", {0: "half"}), ("float", {0: "float"}), ("half", {})]
    seen["network"]._func(network=network)  # the postprocess step Polygraphy runs is pin_layers with the pins
    fake.__version__ = "11.2.0"
    with pytest.raises(BackendError, match="11.x removed weak typing"):
        backend.build_engine(builders.conv_bn_relu_residual(), [], pins)
