"""The command line as a user meets it: results on good input, one clear line and a non-zero exit on bad."""

import json
import shutil

import numpy as np
import onnx
import pytest

import builders
from trt_mpq.cli import main


@pytest.fixture
def tiny(tmp_path):
    return builders.save(builders.conv_bn_relu_residual(), tmp_path)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_lists_io_units_and_skips(capsys, tmp_path, tiny, example_dir):
    code, out, _ = run(capsys, "inspect", example_dir / "digits" / "digits_cnn.onnx")
    assert code == 0 and "[batch, 1, 8, 8]" in out  # lower-case brackets are not eaten as rich markup
    code, out, _ = run(capsys, "inspect", tiny)
    assert code == 0
    assert "conv1" in out and "Conv+BatchNormalization+Relu" in out and "input" in out and "[N, 3, 8, 8]" in out
    code, out, _ = run(capsys, "inspect", builders.save(builders.if_subgraph(), tmp_path, "if.onnx"))
    assert code == 0 and "0 units" in out and "control-flow" in out
    code, out, _ = run(capsys, "inspect", example_dir / "digits" / "digits_cnn.onnx", "--ops")
    assert code == 0 and "12 in the 5 units, 1 outside" in out and "Every op" in out
    assert "moves data: runs in the precision its input arrives in: Flatten x1" in out


def test_analyze_writes_json_and_prints_ranked_table(capsys, tmp_path, tiny):
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "analyze", tiny, "--out", out_dir, "--samples", 6, "--quiet")
    assert code == 0, err
    doc = json.loads((out_dir / "sensitivity.json").read_text())
    assert [u["name"] for u in doc["units"]] == ["conv1", "conv2", "gap", "fc"]
    assert "ranked by sensitivity" in out and "conv2" in out
    assert err == ""  # --quiet: no progress, no log lines
    code, out, err = run(capsys, "analyze", tiny, "--out", out_dir, "--samples", 6)
    assert code == 0 and "resuming: 8 of 8" in err  # 4 units x 2 precisions
    assert doc["calibration"]["calibrator"] == "auto" and doc["calibration"]["bias_correction"] is True
    plain = tmp_path / "plain"
    code, _, err = run(capsys, "analyze", tiny, "--out", plain, "--samples", 6, "--quiet", "--calibrator", "max",
                       "--weight-scales", "max", "--no-bias-correction")
    cal = json.loads((plain / "sensitivity.json").read_text())["calibration"]
    assert code == 0 and (cal["calibrator"], cal["weight_scales"], cal["bias_correction"]) == ("max", "max", False)
    ranges = json.loads((plain / "ranges.json").read_text())
    assert ranges["bias_correction"] is False and not ranges["means"] and not ranges["candidates"]


def test_help_explains_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["analyze", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--calibrator" in out and "resumes" in out and "--preprocess" in out


def _bad_inputs(tmp_path, tiny):
    """(name, argv, words the message must contain) for each kind of bad input."""
    good = ["--out", tmp_path / "out"]
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 3])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    quant = builders.save(builders.dynamically_quantized(), tmp_path, "q.onnx")
    half = builders.save(builders.fp16_weights(), tmp_path, "half.onnx")
    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    m = builders.conv_bn_relu_residual()
    onnx.save(m, str(ext_dir / "m.onnx"), save_as_external_data=True, location="m.weights", size_threshold=0)
    (ext_dir / "m.weights").unlink()
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "wrong_name.npz", image=x)
    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1).copy())
    np.savez(tmp_path / "uint8.npz", x=(x * 50).astype(np.uint8))
    nan = x.copy()
    nan[2, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan)
    (tmp_path / "empty_dir").mkdir()
    dyn = builders.conv_bn_relu_residual()
    for d in dyn.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.Clear()
        d.dim_param = "H"
    dynamic = builders.save(dyn, tmp_path, "dynamic.onnx")
    (tmp_path / "pre.json").write_text('{"resize": 8, "normalize": true}')
    (tmp_path / "afile").write_text("x")
    return [
        ("missing model", ["analyze", tmp_path / "nope.onnx", *good], ["does not exist"]),
        ("empty model", ["analyze", empty, *good], ["empty"]),
        ("truncated model", ["analyze", truncated, *good], ["truncated"]),
        ("not onnx", ["analyze", text, *good], ["ONNX"]),
        ("integer-quantized", ["analyze", quant, *good], ["already quantized", "MatMulInteger", "Q/DQ"]),
        ("fp16 model", ["analyze", half, *good], ["FP16"]),
        ("missing external data", ["analyze", ext_dir / "m.onnx", *good], ["external data", "m.weights"]),
        ("wrong input name", ["analyze", tiny, *good, "--calib", tmp_path / "wrong_name.npz"], ["'x'", "image"]),
        ("nhwc data", ["analyze", tiny, *good, "--calib", tmp_path / "nhwc.npz"], ["NHWC"]),
        ("uint8 data", ["analyze", tiny, *good, "--calib", tmp_path / "uint8.npz"], ["uint8", "float32"]),
        ("nan data", ["analyze", tiny, *good, "--calib", tmp_path / "nan.npz"], ["NaN", "sample 2"]),
        ("empty folder", ["analyze", tiny, *good, "--calib", tmp_path / "empty_dir"], ["no .npz"]),
        ("missing data", ["analyze", tiny, *good, "--calib", tmp_path / "nothing.npz"], ["does not exist"]),
        ("dynamic dims, no shape", ["analyze", dynamic, *good], ["--shape", "dynamic"]),
        ("shape for unknown input", ["analyze", tiny, *good, "--shape", "img:1x3x8x8"], ["img", "inputs are: x"]),
        ("shape syntax", ["analyze", tiny, *good, "--shape", "x=1,3,8,8"], ["NAME:DIMS"]),
        ("shape conflicts", ["analyze", tiny, *good, "--shape", "x:1x3x9x8"], ["fixes it to 8"]),
        ("bad precision", ["analyze", tiny, *good, "--precisions", "int3"], ["int3"]),
        ("tensorrt backend", ["analyze", tiny, *good, "--backend", "tensorrt"], ["TensorRT", "onnxruntime"]),
        ("unknown preprocess key", ["analyze", tiny, *good, "--calib", tmp_path / "empty_dir",
                                    "--preprocess", tmp_path / "pre.json"], ["normalize"]),
        ("noise with a preprocessing", ["analyze", tiny, *good, "--calib", "noise", "--preprocess",
                                        tmp_path / "pre.json"], ["takes no --preprocess", "pink-and-leaves"]),
        ("out is a file", ["analyze", tiny, "--out", tmp_path / "afile"], ["not a folder"]),
        ("zero batch", ["analyze", tiny, *good, "--batch", "0"], ["--batch", "at least 1"]),
        ("no out", ["analyze", tiny], ["--out"]),
        ("check without a plan", ["check", tmp_path / "empty_dir", "--layer-info", tmp_path / "pre.json"],
         ["plan.json"]),
        ("run: eval missing", ["run", tiny, *good, "--eval", tmp_path / "nope.npz", "--max-drop", "0.01"],
         ["evaluation data", "does not exist"]),
        ("run: negative drop", ["run", tiny, *good, "--eval", tmp_path / "nhwc.npz", "--max-drop", "-0.5"],
         ["--max-drop"]),
    ]


def test_bad_inputs_give_one_line_and_nonzero_exit(capsys, tmp_path, tiny):
    cases = _bad_inputs(tmp_path, tiny)
    assert len(cases) >= 12
    for name, argv, words in cases:
        try:
            code, out, err = run(capsys, *argv)
        except SystemExit as e:  # argparse exits itself
            code = e.code
            out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code != 0, name
        assert len(lines) == 1 and lines[0].startswith("trt-mpq: error:"), (name, err)
        assert "Traceback" not in err, name
        for w in words:
            assert w in lines[0], (name, w, lines[0])
        assert not (tmp_path / "out" / "sensitivity.json").exists(), name
        shutil.rmtree(tmp_path / "out", ignore_errors=True)


def test_fix_specialises_the_model_for_analyze_and_plan(capsys, tmp_path):
    import numpy as np

    path = builders.save(builders.if_subgraph(), tmp_path, "if.onnx")
    out = tmp_path / "run"
    code, _, err = run(capsys, "analyze", path, "--out", out, "--fix", "sr=16000", "--samples", 8, "--quiet")
    assert code == 0, err
    doc = json.loads((out / "sensitivity.json").read_text())
    assert [u["name"] for u in doc["units"]] == ["conv_then"] and doc["model"]["fixed"] == {"sr": 16000}
    np.savez(tmp_path / "eval.npz", x=np.random.default_rng(2).standard_normal((8, 1, 4, 4)).astype(np.float32))
    code, _, err = run(capsys, "plan", out, "--eval", tmp_path / "eval.npz", "--metric", "cosine",
                       "--max-drop", "0.05", "--quiet")  # plan re-opens the model specialised the same way
    assert code == 0, err
    code, _, err = run(capsys, "analyze", path, "--out", tmp_path / "bad", "--fix", "rate=1", "--quiet")
    assert code == 2 and "not an input of the model" in err


def test_plan_preprocesses_evaluation_images_as_the_analysis_did(tmp_path, capsys):
    """An image-folder analysis with --preprocess, then 'plan --eval folder' without it: the same pipeline."""
    from PIL import Image

    import builders

    model = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    rng = np.random.default_rng(0)
    for part, n in (("calib", 8), ("eval", 6)):
        (tmp_path / part).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / part / f"{i}.png")
    (tmp_path / "pre.json").write_text('{"resize": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}')
    out = tmp_path / "out"
    assert main(["analyze", str(model), "--out", str(out), "--calib", str(tmp_path / "calib"), "--preprocess",
                 str(tmp_path / "pre.json"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["plan", str(out), "--eval", str(tmp_path / "eval"), "--metric", "cosine", "--max-drop", "0.5"]) == 0
    assert "as the analysis did its calibration images" in capsys.readouterr().err
    plan = json.loads((out / "plan.json").read_text())
    assert plan["evaluation"]["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert plan["evaluation"]["preprocess"]["resize"] == 8
    # generated images (pink noise, no --calib) were preprocessed too: 'plan' takes that pipeline as well
    pink = tmp_path / "pink"
    assert main(["analyze", str(model), "--out", str(pink), "--preprocess", str(tmp_path / "pre.json"),
                 "--samples", "8", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["plan", str(pink), "--eval", str(tmp_path / "eval"), "--metric", "cosine", "--max-drop", "0.5"]) == 0
    assert "as the analysis did its calibration images" in capsys.readouterr().err
    assert json.loads((pink / "plan.json").read_text())["evaluation"]["preprocess"]["resize"] == 8


def test_fp8_only_analysis_plans_for_an_h100_and_is_refused_for_a_t4(tmp_path, capsys):
    """--precisions fp8 raises the model to opset 19; a T4 has no FP8: one sentence, exit 2; an H100 plans."""
    from onnx import helper

    import builders

    w = (np.random.default_rng(0).standard_normal((256, 256)) / 16).astype(np.float32)
    wide = builders.model([helper.make_node("MatMul", ["x", "w"], ["y"], "proj")], [builders.fvi("x", ["N", 256])],
                          [builders.fvi("y", ["N", 256])], [builders.init("w", w)])
    model = builders.save(wide, tmp_path)
    out = tmp_path / "run"
    code, _, err = run(capsys, "analyze", model, "--out", out, "--precisions", "fp8", "--samples", 16, "--quiet")
    assert code == 0, err
    doc = json.loads((out / "sensitivity.json").read_text())
    assert doc["precisions"] == ["fp8"] and all("fp8" in u["results"] for u in doc["units"] if u["kind"] == "gemm")
    code, _, err = run(capsys, "plan", out, "--eval", builders_data(tmp_path), "--metric", "cosine",
                       "--max-drop", "0.5", "--target", "t4")
    assert code == 2 and "measured only FP8, which the NVIDIA T4 cannot run" in err
    assert len(err.strip().splitlines()) == 1  # before anything runs
    code, _, err = run(capsys, "plan", out, "--eval", builders_data(tmp_path), "--metric", "cosine",
                       "--max-drop", "0.5", "--target", "h100", "--latency-batch", 4096)  # not launch-bound
    assert code == 0, err
    mixed = onnx.load(str(out / "model.mixed.onnx"))
    assert next(o.version for o in mixed.opset_import if o.domain in ("", "ai.onnx")) >= 19
    plan = json.loads((out / "plan.json").read_text())
    assert "fp8" in {u["precision"] for u in plan["units"]} <= {"fp8", "fp32"}
    assert "fp8" in (out / "report.html").read_text()


def builders_data(tmp_path):
    path = tmp_path / "eval.npz"
    if not path.exists():
        np.savez(path, x=np.random.default_rng(5).standard_normal((12, 256)).astype(np.float32))
    return path
