"""Calibration data optimised through the model (trt_mpq.data.synthesis, autograd; trt-mpq generate)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper, numpy_helper

from builders import conv_bn_relu_residual, save
from data_models import gather_model
from trt_mpq.cli import main
from trt_mpq.data import autograd
from trt_mpq.data.datasets import generated_dataset, load_dataset
from trt_mpq.data.images import load_preprocess
from trt_mpq.data.synthesis import bn_targets, classifier_output, synthesize, synthesized_dataset
from trt_mpq.errors import ConfigError, DataError
from trt_mpq.network.model import load_model


def _reference(model):
    from trt_mpq.backends import open_backend
    from trt_mpq.commands.analyze import fp32_outputs

    return fp32_outputs(open_backend("onnxruntime").backend, model)


needs_torch = pytest.mark.skipif(not autograd.torch_available(),
                                 reason="needs trt-mpq[datagen] (onnx2torch and PyTorch)")


def test_bn_targets_are_the_running_statistics():
    m = conv_bn_relu_residual()
    (t,) = bn_targets(m)
    inits = {i.name: np.frombuffer(i.raw_data, np.float32) for i in m.graph.initializer}
    assert t.tensor == "c1"
    np.testing.assert_array_equal(t.mean, inits["m"])
    np.testing.assert_allclose(t.std, np.sqrt(inits["v"] + 1e-5), rtol=1e-6)


def test_class_scores_are_told_from_an_embedding():
    m = conv_bn_relu_residual()
    assert classifier_output(m) == (0, 5)
    m.graph.node.append(helper.make_node("LpNormalization", ["y"], ["e"], "l2", axis=1, p=2))
    m.graph.output[0].name = "e"  # the same [N, 5], scaled to unit length: an embedding, no classes
    assert classifier_output(m) is None
    m = conv_bn_relu_residual()  # F.normalize as exported: y / clamp(ReduceL2(y))
    m.graph.node.extend([helper.make_node("ReduceL2", ["y"], ["n"], "norm", axes=[1], keepdims=1),
                         helper.make_node("Clip", ["n", "eps"], ["c"], "clamp"),
                         helper.make_node("Div", ["y", "c"], ["e"], "div")])
    m.graph.output[0].name = "e"
    assert classifier_output(m) is None
    m = conv_bn_relu_residual()  # logits over a temperature are still class scores
    m.graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "t"))
    m.graph.node.append(helper.make_node("Div", ["y", "t"], ["e"], "temperature"))
    m.graph.output[0].name = "e"
    assert classifier_output(m) == (0, 5)


@needs_torch
def test_synthesized_batches_move_toward_the_statistics_and_the_target_classes(tmp_path):
    model = load_model(save(conv_bn_relu_residual(), tmp_path))
    x, info = synthesize(model, [1, 3, 8, 8], 16, seed=3, pre=None, reference=_reference(model), steps=150)
    assert x.shape == (16, 3, 8, 8) and x.dtype == np.float32 and np.isfinite(x).all()
    assert info.bn_after < 0.5 * info.bn_before
    _, start = synthesize(model, [1, 3, 8, 8], 16, seed=3, pre=None, reference=_reference(model), steps=0)
    assert info.confidence > start.confidence + 0.05  # toward each sample's own target class
    assert "batchnorm statistics (1 layers)" in info.describe() and "inversion (5 classes)" in info.describe()
    again, _ = synthesize(model, [1, 3, 8, 8], 16, seed=3, pre=None, reference=_reference(model), steps=150)
    np.testing.assert_array_equal(x, again)  # seeded: the same data
    other, _ = synthesize(model, [1, 3, 8, 8], 16, seed=4, pre=None, reference=_reference(model), steps=40)
    assert not np.array_equal(x, other)


@needs_torch
def test_with_preprocess_the_batches_start_from_pink_noise_images(tmp_path):
    model = load_model(save(conv_bn_relu_residual(), tmp_path))
    (tmp_path / "pre.json").write_text('{"resize": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}')
    pre = load_preprocess(tmp_path / "pre.json")
    start, info = synthesize(model, [1, 3, 8, 8], 12, seed=2, pre=pre, reference=_reference(model), steps=0)
    images = generated_dataset(model, 12, 2, pre).take(0, 12)["x"]
    np.testing.assert_array_equal(start, images)  # what pink-noise calibration would be, before any step
    assert info.describe().startswith("from pink-noise images")
    moved, _ = synthesize(model, [1, 3, 8, 8], 12, seed=2, pre=pre, reference=_reference(model), steps=5)
    assert not np.array_equal(moved, images)
    _, plain = synthesize(model, [1, 3, 8, 8], 8, seed=2, pre=None, reference=_reference(model), steps=0)
    assert plain.describe().startswith("from noise N(0, 1)")


@needs_torch
def test_a_conversion_that_computes_something_else_is_refused(tmp_path):
    model = load_model(save(conv_bn_relu_residual(), tmp_path))
    module = autograd.torch_module(model.proto)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    import onnxruntime as ort

    ref = ort.InferenceSession(model.proto.SerializeToString()).run(None, {"x": x})
    autograd.check_same(module, {"x": x}, ref)  # the same function: accepted
    with pytest.raises(ConfigError, match="computes something else"):
        autograd.check_same(module, {"x": x}, [r + 1.0 for r in ref])


@needs_torch
def test_generate_writes_data_that_analyze_reads_with_its_record(tmp_path, capsys):
    path = save(conv_bn_relu_residual(), tmp_path)
    out = tmp_path / "calib.npz"
    assert main(["generate", str(path), "--out", str(out), "--method", "synthesized", "--samples", "10",
                 "--quiet"]) == 0
    assert "wrote 10 samples" in capsys.readouterr().out
    data = load_dataset(load_model(path), out)
    assert data.num_samples == 10 and data.take(0, 10)["x"].shape == (10, 3, 8, 8)
    assert data.details["generated"]["method"] == "synthesized"
    assert "batchnorm statistics" in data.details["generated"]["optimised"]
    assert not (tmp_path / ".calib.npz.parts").exists()  # the finished batches go once the file is written


@needs_torch
def test_an_interrupted_synthesis_resumes_from_its_finished_batches(tmp_path):
    model = load_model(save(conv_bn_relu_residual(), tmp_path))
    parts = tmp_path / "parts"
    whole, info = synthesize(model, [1, 3, 8, 8], 20, seed=5, pre=None, reference=_reference(model), steps=5,
                             parts=parts)
    assert sorted(p.name for p in parts.iterdir()) == ["000000.npz", "000001.npz", "000002.npz"]  # 8 + 8 + 4

    def never(feeds):
        raise AssertionError("every batch is on disk: the gradient copy is not even made")

    again, info_again = synthesize(model, [1, 3, 8, 8], 20, seed=5, pre=None, reference=never, steps=5, parts=parts)
    np.testing.assert_array_equal(again, whole)
    assert info_again == info
    (parts / "000001.npz").write_bytes(b"cut short")  # a batch written half (or by another version) is made again
    (parts / "000002.npz").unlink()
    resumed, _ = synthesize(model, [1, 3, 8, 8], 20, seed=5, pre=None, reference=_reference(model), steps=5,
                            parts=parts)
    np.testing.assert_array_equal(resumed, whole)


def test_generate_noise_and_bad_requests(tmp_path, capsys):
    path = save(conv_bn_relu_residual(), tmp_path)
    out = tmp_path / "noise.npz"
    assert main(["generate", str(path), "--out", str(out), "--method", "noise", "--samples", "4", "--quiet"]) == 0
    assert load_dataset(load_model(path), out).details["generated"]["method"] == "noise"
    assert main(["generate", str(path), "--out", str(tmp_path / "x.txt")]) == 2
    assert "must name a .npz" in capsys.readouterr().err
    assert main(["generate", str(path), "--out", str(tmp_path / "d.npz"), "--method", "dead-leaves"]) == 2
    err = capsys.readouterr().err
    assert "--method dead-leaves draws images" in err and "--preprocess" in err and "--calib" not in err
    assert not (tmp_path / "d.npz").exists()
    (tmp_path / "pre.json").write_text('{"resize": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}')
    out = tmp_path / "pink.npz"
    assert main(["generate", str(path), "--out", str(out), "--preprocess", str(tmp_path / "pre.json"),
                 "--method", "pink-noise", "--samples", "3", "--quiet"]) == 0
    assert load_dataset(load_model(path), out).details["generated"]["method"] == "pink-noise"


def test_without_the_extra_it_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(autograd, "torch_available", lambda: False)
    path = save(conv_bn_relu_residual(), tmp_path)
    assert main(["analyze", str(path), "--out", str(tmp_path / "run"), "--calib", "synthesized", "--quiet"]) == 2
    assert "trt-mpq[datagen]" in capsys.readouterr().err


def test_integer_inputs_are_refused_in_one_sentence(tmp_path):
    with pytest.raises(DataError, match="one float input"):
        synthesized_dataset(gather_model(tmp_path), 4, 0, None, lambda feeds: [])


def test_a_foreign_generator_array_is_refused_in_one_sentence(tmp_path):
    path = save(conv_bn_relu_residual(), tmp_path)
    x = np.zeros((2, 3, 8, 8), np.float32)
    np.savez(tmp_path / "odd.npz", x=x, trt_mpq_generator=np.array("not json"))
    with pytest.raises(DataError, match="not the record 'trt-mpq generate' writes"):
        load_dataset(load_model(path), tmp_path / "odd.npz")


@needs_torch
def test_the_default_synthesizes_for_a_model_that_keeps_batchnorm_and_says_why(tmp_path, capsys):
    path = save(conv_bn_relu_residual(), tmp_path)
    assert main(["analyze", str(path), "--out", str(tmp_path / "run"), "--samples", "8", "--precisions", "fp16"]) == 0
    assert "8 samples; synthesized, chosen because the model keeps 1 BatchNormalization layer" in \
        capsys.readouterr().err
    calibration = json.loads((tmp_path / "run" / "sensitivity.json").read_text())["calibration"]
    assert calibration["method"] == "synthesized" and calibration["generator"].startswith("synthesized")
