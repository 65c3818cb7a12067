"""The backend contract: what every backend promises, run against each registered backend that this machine
can open, and against the in-memory reference backend the algorithm tests may use (tests/fakes.py)."""

from __future__ import annotations

import argparse
from dataclasses import fields

import numpy as np
import onnx
import pytest

import builders
from fakes import ReferenceBackend, ToyBackend, ToyOptions
from trt_mpq.backends import Backend, open_backend, restore_backend
from trt_mpq.backends.base import REGISTRY, EngineBuilder, LayerProfile, backend_class, backend_names
from trt_mpq.errors import BackendError
from trt_mpq.network.graph import consumers, descendants, extract_region
from trt_mpq.network.weights import split_weights
from trt_mpq.precision import Plan, Precision
from trt_mpq.quant.lower import lower
from trt_mpq.quant.ranges import Ranges

CASES = [("onnxruntime", ()), ("onnxruntime", ("all",)), ("onnxruntime-cuda", ()), ("tensorrt", ()),
         ("reference", ())]


def _open(name: str, args: tuple) -> Backend:
    if name == "reference":
        return ReferenceBackend()
    cls = backend_class(name)
    options = cls.options_type(*args)
    try:
        return open_backend(name, (options,)).backend
    except BackendError as exc:
        pytest.skip(f"backend {name} is not available here: {exc}")


@pytest.fixture(params=CASES, ids=lambda c: "-".join((c[0], *c[1])))
def backend(request) -> Backend:
    return _open(*request.param)


def _feeds(batch: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((batch, 3, 8, 8)).astype(np.float32)}


def _expected(model: onnx.ModelProto, feeds) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(names, feeds), strict=True))


def test_describes_itself_in_one_line_and_records_what_recreates_it(backend):
    text = backend.describe()
    assert text and "\n" not in text
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in backend.versions().items())
    options = backend.options_type.from_json(backend.options_json())
    assert options.to_json() == backend.options_json()
    if backend.name in REGISTRY:
        assert restore_backend(backend.record()).backend.options_json() == backend.options_json()
    names = {f.name for f in fields(backend.options_type)}
    assert all(flag.field in names and flag.flag.startswith("--") for flag in backend.flags)


def test_runs_a_model_and_returns_the_outputs_asked_for(backend):
    model, feeds = builders.conv_bn_relu_residual(), _feeds()
    with backend.compile(model) as session:
        every = session.run(feeds)
        name = model.graph.output[0].name
        one = session.run(feeds, [name])
    expected = _expected(model, feeds)
    assert set(every) == set(expected) and list(one) == [name]
    for k, v in expected.items():
        np.testing.assert_allclose(every[k], v, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(one[name], every[name])


def test_weights_handed_over_from_the_bank_change_nothing(backend):
    model, feeds = builders.conv_bn_relu_residual(), _feeds()
    skeleton, weights = split_weights(model, min_bytes=64)
    assert weights.placeholders(skeleton)  # the test means something: weights really left the graph
    with backend.compile(model) as whole, backend.compile(skeleton, weights) as shared:
        a, b = whole.run(feeds), shared.run(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_lowered_models_run(backend):
    model = builders.conv_bn_relu_residual()
    from trt_mpq.network.units import find_units

    units = find_units(model).units
    ranges = Ranges("max", {n: 4.0 for u in units for n in (*u.inputs, *u.outputs)})
    for p in (Precision.INT8, Precision.FP16):
        lowered = lower(model, units, Plan.of({u.name: p for u in units if p in u.allowed}), ranges)
        with backend.compile(lowered) as session:
            out = next(iter(session.run(_feeds()).values()))
        assert np.isfinite(out).all()


def test_exact_regions_compute_what_the_whole_model_does(backend):
    if not backend.capabilities.exact_regions:
        pytest.skip(f"{backend.describe()} does not promise exact regions")
    model, feeds = builders.conv_bn_relu_residual(), _feeds()
    graph = model.graph
    start = next(i for i, n in enumerate(graph.node) if n.op_type == "Conv" and i > 0)
    region = descendants(graph, [start], consumers(graph))
    frontier = sorted({t for i in region for t in graph.node[i].input} - {t.name for t in graph.initializer}
                      - {graph.node[i].output[0] for i in region})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in frontier if t != "x")
    with backend.compile(probe) as session:
        values = {**feeds, **session.run(feeds)}
    sub = extract_region(model, region, {t: (values[t].dtype, list(values[t].shape)) for t in frontier})
    with backend.compile(sub) as session:
        part = session.run({t: values[t] for t in frontier})
    for k, v in part.items():
        np.testing.assert_array_equal(v, values[k])


def test_what_it_cannot_do_is_one_sentence(backend):
    model = builders.conv_bn_relu_residual()
    if backend.capabilities.profiles_layers:
        profile = backend.profile(model, _feeds())
        assert isinstance(profile, LayerProfile) and profile.ms and set(profile.ms) <= set(profile.nodes)
    else:
        with pytest.raises(BackendError, match="cannot profile"):
            backend.profile(model, _feeds())
    if backend.capabilities.builds_engines:
        assert isinstance(backend.engine_builder(), EngineBuilder)
    else:
        with pytest.raises(BackendError, match="does not build engines; 'build' needs --backend tensorrt"):
            backend.engine_builder()
    graph = onnx.helper.make_graph([onnx.helper.make_node("MyOp", ["x"], ["y"], domain="com.example")], "custom",
                                   [builders.fvi("x", [1, 4])], [builders.fvi("y", [1, 4])])
    broken = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17),
                                                          onnx.helper.make_opsetid("com.example", 1)])
    with pytest.raises(BackendError):
        with backend.compile(broken) as session:
            session.run({"x": np.zeros((1, 4), np.float32)})


def test_a_registered_backend_brings_its_flags_to_the_command_line(monkeypatch, capsys):
    from trt_mpq.cli import _analyze_options, build_parser

    monkeypatch.setitem(REGISTRY, "toy", "fakes:ToyBackend")
    assert "toy" in backend_names()
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "--help"])
    assert "--toy-level" in capsys.readouterr().out
    args = parser.parse_args(["analyze", "m.onnx", "--out", "o", "--backend", "toy", "--toy-level", "3"])
    options = _analyze_options(args)
    assert ToyOptions(3) in options.backend_options
    chosen = open_backend(options.backend, options.backend_options).backend
    assert isinstance(chosen, ToyBackend) and chosen.describe() == "toy level 3"
    default = _analyze_options(parser.parse_args(["analyze", "m.onnx", "--out", "o"]))
    assert ToyOptions() in default.backend_options


def test_flags_of_one_backend_are_not_given_to_another():
    from trt_mpq.backends.arguments import add_backend_flags, backend_options

    parser = argparse.ArgumentParser()
    add_backend_flags(parser, "analyze")
    given = backend_options(parser.parse_args(["--ort-opt", "all", "--probe-opt-level", "2"]))
    kinds = {type(o).__name__: o for o in given}
    assert kinds["OnnxRuntimeOptions"].optimize == "all" and kinds["TensorRTOptions"].probe_opt_level == 2
    assert open_backend("onnxruntime", given).backend.options.optimize == "all"
