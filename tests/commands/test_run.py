"""The run command (commands/run.py): analyse, plan and emit in one go, as a user runs it."""

import json

import numpy as np
import pytest
from PIL import Image

import builders
import trt_mpq
from trt_mpq.cli import main
from trt_mpq.errors import ConfigError


def test_run_with_generated_calibration_and_an_image_folder_to_verify_on(tmp_path, capsys, monkeypatch):
    """--preprocess in 'run' serves --eval, and without --calib the generated (pink-and-leaves) images too; with
    --calib noise (shaped like the inputs) it serves --eval alone (PP-OCR's case)."""
    from trt_mpq.data import autograd

    monkeypatch.setattr(autograd, "torch_available", lambda: False)  # else its BatchNorm asks for synthesized
    model = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "pre.json").write_text('{"resize": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}')
    code = main(["run", str(model), "--out", str(tmp_path / "out"), "--eval", str(folder), "--preprocess",
                 str(tmp_path / "pre.json"), "--metric", "cosine", "--max-drop", "0.5", "--quiet"])
    assert code == 0, capsys.readouterr().err
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["evaluation"]["kind"] == "images" and plan["calibration"]["kind"] == "generated"
    assert "pink-and-leaves" in plan["calibration"]["generator"]
    code = main(["run", str(model), "--out", str(tmp_path / "noise"), "--calib", "noise", "--eval", str(folder),
                 "--preprocess", str(tmp_path / "pre.json"), "--metric", "cosine", "--max-drop", "0.5", "--quiet"])
    assert code == 0, capsys.readouterr().err
    plan = json.loads((tmp_path / "noise" / "plan.json").read_text())
    assert plan["evaluation"]["kind"] == "images" and "generator" not in plan["calibration"]


def test_run_checks_its_typing_before_the_analysis(tmp_path):
    with pytest.raises(ConfigError, match="--typing must be strong or weak"):
        trt_mpq.run(tmp_path / "m.onnx", tmp_path / "out", trt_mpq.AnalyzeOptions(),
                    trt_mpq.PlanOptions(eval=str(tmp_path / "e.npz"), budget=trt_mpq.Budget(max_drop=0.1)),
                    typing="wek")
    assert not (tmp_path / "out").exists()
