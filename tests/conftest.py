"""Shared fixtures: the real models of ../shared/models (skipped with a reason when absent) and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRT_MPQ_SHARED_MODELS", ROOT.parent / "shared" / "models"))


CAPTURES = SHARED.parent / "trt-captures" / "resnet18-a100"


@pytest.fixture(scope="session")
def trt_captures() -> Path:
    if not (CAPTURES / "fp16.profile.json").exists():
        pytest.skip(f"real TensorRT captures not available: {CAPTURES} is absent")
    return CAPTURES


@pytest.fixture
def shared_models() -> Path:
    if not (SHARED / "MANIFEST.md").exists():
        pytest.skip(f"real models not available: {SHARED} is absent (set TRT_MPQ_SHARED_MODELS)")
    return SHARED


@pytest.fixture
def analysed(tmp_path: Path) -> Path:
    """A finished analysis of a tiny residual CNN in tmp_path/run, with calib.npz, eval.npz, eval_labels.npz."""
    import numpy as np
    import onnxruntime as ort

    import builders
    from trt_mpq import AnalyzeOptions
    from trt_mpq import analyze as analyze_model

    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((32, 3, 8, 8)).astype(np.float32))
    x = rng.standard_normal((40, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x)
    logits = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.savez(tmp_path / "eval_labels.npz", x=x, labels=logits.argmax(1))
    analyze_model(path, tmp_path / "run", AnalyzeOptions(calib=str(tmp_path / "calib.npz")))
    return tmp_path


@pytest.fixture
def example_dir() -> Path:
    return ROOT / "examples"
