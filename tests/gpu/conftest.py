"""GPU tests: they run only where an NVIDIA GPU, TensorRT >= 10, cuda-python and Polygraphy are present, and
skip everywhere else with the probe's reason. ``scripts/gpu_selftest.sh`` runs them and prints a summary."""

from __future__ import annotations

import pytest

from trt_mpq.backends.tensorrt import probe


def pytest_collection_modifyitems(config, items):
    gpu_items = [i for i in items if "tests/gpu/" in str(i.fspath).replace("\\", "/")]
    if not gpu_items:
        return
    missing = probe()
    for item in gpu_items:
        item.add_marker(pytest.mark.gpu)
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"GPU test: {missing}"))
