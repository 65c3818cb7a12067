"""The project's own example (examples/digits) is self-contained: real data from a package, a trained model."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort

from trt_mpq import AnalyzeOptions
from trt_mpq import analyze as analyze_model
from trt_mpq.data.datasets import load_dataset
from trt_mpq.network.model import load_model


def test_example_model_is_accurate_and_matches_its_data(example_dir):
    model = load_model(example_dir / "digits" / "digits_cnn.onnx")
    calib = load_dataset(model, example_dir / "digits" / "calib.npz")
    evaluation = load_dataset(model, example_dir / "digits" / "eval.npz")
    assert calib.num_samples == 256 and evaluation.labels is not None
    session = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(None, evaluation.take(0, evaluation.num_samples))[0]
    assert np.mean(logits.argmax(1) == evaluation.labels) >= 0.95


def test_demo_analysis_of_the_example(example_dir, tmp_path):
    doc = analyze_model(example_dir / "digits" / "digits_cnn.onnx", tmp_path,
                        AnalyzeOptions(calib=str(example_dir / "digits" / "calib.npz"), samples=64)).to_json()
    names = [u["name"] for u in doc["units"]]
    assert names == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert doc["units"][1]["op_types"] == ["Conv", "Relu", "Add", "Relu"]  # residual Add fused into conv2
    assert json.loads((tmp_path / "sensitivity.json").read_text())["units"][0]["results"]["int8"]["cosine"] > 0.9


def test_training_script_reproduces_a_good_model(example_dir, tmp_path):
    done = subprocess.run([sys.executable, str(example_dir / "digits" / "train.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("digits_cnn.onnx", "calib.npz", "eval.npz"):
        assert (tmp_path / name).stat().st_size > 0
    model = load_model(tmp_path / "digits_cnn.onnx")
    data = load_dataset(model, tmp_path / "eval.npz")
    session = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.mean(session.run(None, data.take(0, data.num_samples))[0].argmax(1) == data.labels) >= 0.95
