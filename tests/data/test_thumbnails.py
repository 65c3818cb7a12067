"""Generated calibration samples as a thumbnail strip, written by analyze and shown in report.html."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

import builders
from data_models import gather_model
from trt_mpq import AnalyzeOptions, PlanOptions, analyze, plan
from trt_mpq.artifacts import Budget
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.data.thumbnails import SHOWN, SIDE, thumbnails
from trt_mpq.network.model import load_model


def test_a_strip_of_the_first_samples_each_stretched_to_full_range(tmp_path):
    model = load_model(builders.save(builders.conv_bn_relu_residual(), tmp_path))  # x: [N, 3, 8, 8]
    strip = Image.open(io.BytesIO(thumbnails(generated_dataset(model, 12))))
    assert strip.size == (SHOWN * (SIDE + 4), SIDE)  # 8x8 samples blown up to 96x96, square pixels
    first = np.asarray(strip)[:, :SIDE]
    assert first.min() == 0 and first.max() == 255
    assert len(np.unique(first[:, :, 0])) <= 64  # each tile holds the sample's 8x8 values, not a blur


def test_no_strip_for_inputs_that_are_not_images(tmp_path):
    assert thumbnails(generated_dataset(gather_model(tmp_path), 4)) is None


def test_analyze_writes_it_and_the_report_shows_it(tmp_path, monkeypatch):
    from trt_mpq.data import autograd

    monkeypatch.setattr(autograd, "torch_available", lambda: False)  # else its BatchNorm asks for synthesized
    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x)
    analyze(path, tmp_path / "run", AnalyzeOptions(samples=8, precisions="fp16"))
    assert (tmp_path / "run" / "calibration.png").is_file()
    plan(tmp_path / "run", PlanOptions(eval=str(tmp_path / "eval.npz"), metric="agreement",
                                       budget=Budget(max_drop=0.1)))
    text = (tmp_path / "run" / "report.html").read_text()
    assert "Generated calibration data" in text and "alt='generated calibration samples'" in text
    assert "float ~ N(0,1)" in text and "noise, chosen because nothing in the model" in text
    analyze(path, tmp_path / "real", AnalyzeOptions(calib=str(tmp_path / "eval.npz"), precisions="fp16"))
    assert not (tmp_path / "real" / "calibration.png").exists()  # real data: nothing to show


def test_the_report_says_how_near_drawn_images_came_to_photos_statistics(tmp_path):
    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)  # x: [N, 3, 8, 8]
    (tmp_path / "pre.json").write_text('{"resize": 64, "crop": 8, "mean": [0.5], "std": [0.25]}')
    np.savez(tmp_path / "eval.npz", x=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    analyze(path, tmp_path / "run", AnalyzeOptions(calib="pink-noise", preprocess=str(tmp_path / "pre.json"),
                                                   samples=8, precisions="fp16"))
    plan(tmp_path / "run", PlanOptions(eval=str(tmp_path / "eval.npz"), metric="agreement",
                                       budget=Budget(max_drop=0.1)))
    text = (tmp_path / "run" / "report.html").read_text()
    assert "Drawn images: spectral slope" in text and "photos&#x27; medians: 1.30-1.47 and 6.4-10.9" in text
