"""Shared fixtures: the real models of ../shared/models (skipped with a reason when absent) and tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRT_MPQ_SHARED_MODELS", ROOT.parent / "shared" / "models"))
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def shared_models() -> Path:
    if not (SHARED / "MANIFEST.md").exists():
        pytest.skip(f"real models not available: {SHARED} is absent (set TRT_MPQ_SHARED_MODELS)")
    return SHARED


@pytest.fixture
def example_dir() -> Path:
    return ROOT / "examples"
