"""The analyze command (commands/analyze.py) as a user runs it: models as they are exported for deployment."""

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

import builders
from trt_mpq.cli import main


def test_a_detector_ending_in_a_tensorrt_plugin_plans_end_to_end(tmp_path, capsys):
    path = builders.save(builders.detector_with_nms(), tmp_path)
    np.savez(tmp_path / "eval.npz", x=np.random.default_rng(1).standard_normal((24, 3, 4, 4)).astype(np.float32))
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run), "--samples", "16", "--eval", str(tmp_path / "eval.npz"),
                 "--metric", "cosine", "--max-drop", "0.01", "--latency-batch", "4096", "--quiet"]) == 0
    record = json.loads((run / "sensitivity.json").read_text())
    assert record["model"]["measured"] == ["boxes", "scores"]
    assert any("EfficientNMS_TRT 'nms'" in note for note in record["model"]["notes"])
    mixed = onnx.load(str(run / "model.mixed.onnx"))
    ops = [n.op_type for n in mixed.graph.node]
    assert ops[-1] == "EfficientNMS_TRT" and "QuantizeLinear" in ops  # lowered, the plugin kept as it was
    assert [o.name for o in mixed.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    weak = onnx.load(str(run / "model.weak.onnx"))
    assert weak.graph.node[-1].op_type == "EfficientNMS_TRT"
    capsys.readouterr()


def test_an_op_the_backend_cannot_run_inside_the_network_stops_before_anything_runs(tmp_path, capsys):
    path = builders.save(builders.custom_op_inside(), tmp_path)
    code = main(["analyze", str(path), "--out", str(tmp_path / "run"), "--samples", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "com.example:MyOp" in err[0] and "--ort-custom-ops" in err[0]
    assert not (tmp_path / "run" / "sensitivity.json").exists()


def test_outputs_chosen_on_the_command_line(tmp_path, capsys):
    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    run = tmp_path / "run"
    assert main(["analyze", str(path), "--out", str(run), "--samples", "8", "--outputs", "s", "--quiet"]) == 0
    record = json.loads((run / "sensitivity.json").read_text())
    assert record["model"]["measured"] == ["s"] and [u["name"] for u in record["units"]] == ["conv1", "conv2"]
    code = main(["analyze", str(path), "--out", str(tmp_path / "bad"), "--outputs", "nope"])
    assert code == 2 and "'nope' is not a tensor" in capsys.readouterr().err


def test_circular_padding_before_a_conv_analyses(tmp_path, capsys):
    # was: internal error, KeyError of the Concat's output in the activation store (an EEG U-Net)
    path = builders.save(builders.circular_pad_conv(), tmp_path)
    assert main(["analyze", str(path), "--out", str(tmp_path / "run"), "--samples", "16", "--quiet"]) == 0
    units = json.loads((tmp_path / "run" / "sensitivity.json").read_text())["units"]
    conv = next(u for u in units if u["name"] == "conv")
    assert set(conv["results"]) == {"int8", "fp16"} and conv["results"]["int8"]["sqnr_db"] > 10
    capsys.readouterr()


def test_an_already_quantized_model_runs_and_is_compared_with_the_plan(tmp_path, capsys):
    digits = Path(__file__).resolve().parents[2] / "examples" / "digits"
    calib = np.load(digits / "calib.npz")["input"]
    path = builders.quantize_static_qdq(digits / "digits_cnn.onnx", calib[:64], tmp_path / "digits_qdq.onnx")
    run = tmp_path / "run"
    code = main(["run", str(path), "--out", str(run), "--calib", str(digits / "calib.npz"), "--eval",
                 str(digits / "eval.npz"), "--metric", "accuracy", "--max-drop", "0.01", "--latency-batch", "256"])
    out = capsys.readouterr()
    assert code == 0 and "already quantized" in out.err + out.out and "as shipped:" in out.out
    ranges = json.loads((run / "ranges.json").read_text())
    assert any("shipped" in c for c in ranges["candidates"].values())  # the file's scales were a candidate
    compared = json.loads((run / "report.json").read_text())["compared"]
    assert [c["name"] for c in compared] == ["as shipped", "this plan", "all-FP16"]
    assert all(0 <= c["score"] <= 1 and c["ms"] > 0 for c in compared)
    assert compared[1]["ms"] <= compared[2]["ms"] + 1e-9 or compared[1]["what"] == "all-FP32"
    assert "The file as shipped, this plan, all-FP16" in (run / "report.html").read_text()


def test_calibration_images_generated_in_pixel_space(tmp_path, capsys):
    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    (tmp_path / "pre.json").write_text('{"resize": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}')
    run = tmp_path / "run"
    assert main(["analyze", str(path), "--out", str(run), "--calib", "dead-leaves", "--preprocess",
                 str(tmp_path / "pre.json"), "--samples", "8"]) == 0
    assert "dead-leaves images, 8x8 pixels" in capsys.readouterr().err
    calibration = json.loads((run / "sensitivity.json").read_text())["calibration"]
    assert calibration["kind"] == "generated" and "dead-leaves" in calibration["generator"]
    assert main(["analyze", str(path), "--out", str(tmp_path / "pink"), "--preprocess", str(tmp_path / "pre.json"),
                 "--calib", "pink-noise", "--samples", "8"]) == 0
    err = capsys.readouterr().err
    assert "pink-noise images (1/f^a spectrum, a in 1.0-1.8; local contrast varied), 8x8 pixels" in err
    calibration = json.loads((tmp_path / "pink" / "sensitivity.json").read_text())["calibration"]
    assert "pink-noise" in calibration["generator"]
    assert (tmp_path / "pink" / "calibration.png").is_file()  # what the generated images look like


def test_generated_data_is_chosen_by_what_the_model_offers_and_says_why(tmp_path, capsys, monkeypatch):
    from trt_mpq.commands.analyze import generator_for
    from trt_mpq.data import autograd
    from trt_mpq.network.model import load_model

    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)  # one image input, a BatchNorm kept
    conv = helper.make_node("Conv", ["x", "w"], ["y"], "conv", pads=[1, 1, 1, 1])
    w = builders.init("w", builders.conv_w(np.random.default_rng(0), 4, 3))
    plain = builders.save(builders.model([conv], [builders.fvi("x", ["N", 3, 8, 8])],
                                         [builders.fvi("y", ["N", 4, 8, 8])], [w]), tmp_path, "plain.onnx")
    model = load_model(path)
    (tmp_path / "pre.json").write_text('{"resize": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}')
    assert generator_for(load_model(plain), "pre.json")[0] == "pink-and-leaves"
    assert generator_for(load_model(plain), None) == ("noise", "nothing in the model or the options says more")
    monkeypatch.setattr(autograd, "torch_available", lambda: True)
    assert generator_for(model, None) == ("synthesized", "the model keeps 1 BatchNormalization layer")
    assert generator_for(model, "pre.json")[0] == "synthesized"
    monkeypatch.setattr(autograd, "torch_available", lambda: False)  # without the extra: the next best
    assert generator_for(model, "pre.json")[0] == "pink-and-leaves" and generator_for(model, None)[0] == "noise"
    assert main(["analyze", str(path), "--out", str(tmp_path / "run"), "--samples", "8"]) == 0
    err = capsys.readouterr().err
    assert "8 samples; noise, chosen because nothing in the model or the options says more" in err
    assert json.loads((tmp_path / "run" / "sensitivity.json").read_text())["calibration"]["method"] == "noise"
    assert "--preprocess FILE (its resize and normalisation) generates images instead (pink noise" in err
    assert "keeps 1 BatchNormalization layer: --calib synthesized (needs pip install 'trt-mpq[datagen]')" in err
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    assert main(["analyze", str(path), "--out", str(tmp_path / "own"), "--calib", str(tmp_path / "c.npz")]) == 0
    assert "--preprocess FILE" not in capsys.readouterr().err  # the user's own data: nothing to suggest


def test_a_classifier_with_folded_batchnorm_keeps_generated_images_even_with_the_extra(tmp_path, monkeypatch):
    from trt_mpq.commands.analyze import generator_for
    from trt_mpq.data import autograd
    from trt_mpq.network.model import load_model

    folded = builders.conv_bn_relu_residual()
    bn = folded.graph.node[1]
    bn.op_type = "Identity"  # the statistics folded away, as most PyTorch exports ship
    del bn.input[1:]
    model = load_model(builders.save(folded, tmp_path))
    monkeypatch.setattr(autograd, "torch_available", lambda: True)
    # inversion toward random classes ranked MobileNetV2's units worse than pink noise alone (docs/results.md)
    assert generator_for(model, "pre.json") == ("pink-and-leaves", "--preprocess says how images reach the model")
    assert generator_for(model, None)[0] == "noise"
