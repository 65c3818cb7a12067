"""The backend interface: choosing by name or auto, each backend's own options, records, sessions."""

from __future__ import annotations

import numpy as np
import pytest

import builders
from fakes import CountingBackend
from trt_mpq.artifacts import BackendRecord
from trt_mpq.backends import BackendContext, Session, backend_names, open_backend, restore_backend
from trt_mpq.backends.onnxrt import OnnxRuntimeOptions
from trt_mpq.backends.tensorrt import TensorRTOptions
from trt_mpq.errors import BackendError


def test_each_backend_takes_the_options_of_its_own_type():
    options = (TensorRTOptions(probe_opt_level=2), OnnxRuntimeOptions(optimize="all"))
    backend = open_backend("onnxruntime", options).backend
    assert backend.options == OnnxRuntimeOptions(optimize="all") and "graph optimizations on" in backend.describe()
    assert open_backend("onnxruntime").backend.options == OnnxRuntimeOptions()  # none given: its defaults
    with pytest.raises(BackendError, match="--ort-opt 'fast'"):
        OnnxRuntimeOptions(optimize="fast")
    with pytest.raises(BackendError, match="unknown backend 'cuda'"):
        open_backend("cuda")
    assert backend_names() == ["auto", "onnxruntime", "onnxruntime-cuda", "tensorrt"]
    assert backend_names(builds_engines=True) == ["tensorrt"]


def test_a_record_recreates_its_backend_unless_another_is_named():
    record = open_backend("onnxruntime", (OnnxRuntimeOptions(optimize="all"),)).backend.record()
    assert record == BackendRecord("onnxruntime", record.description, {"ort_optimize": "all"})
    assert restore_backend(record).backend.options.optimize == "all"
    other = BackendRecord("onnxruntime", "?", {"ort_optimize": "none"})
    assert restore_backend(other, "onnxruntime").backend.options.optimize == "none"


def test_chosen_says_how_it_was_chosen():
    chosen = open_backend("onnxruntime")
    assert chosen.reason == "" and chosen.log_line("onnxruntime") == ""
    auto = open_backend("auto", context=BackendContext(max_batch=4))
    assert auto.log_line("auto").startswith(" (chosen by --backend auto")


def test_sessions_close_on_exit_even_on_errors():
    closed = []

    class Probe(Session):
        def run(self, feeds, outputs=None):
            raise BackendError("boom")

        def close(self):
            closed.append(True)

    with pytest.raises(BackendError), Probe() as session:
        session.run({})
    assert closed == [True]
    model = builders.conv_bn_relu_residual()
    with open_backend("onnxruntime").backend.compile(model) as session:
        out = session.run({"x": np.zeros((2, 3, 8, 8), np.float32)})
    assert next(iter(out.values())).shape[0] == 2


def test_what_a_backend_cannot_do_is_one_sentence():
    backend = CountingBackend()
    with pytest.raises(BackendError, match="cannot profile per node; use --latency-from"):
        backend.profile(builders.conv_bn_relu_residual(), {})
    with pytest.raises(BackendError, match="does not build engines"):
        backend.engine_builder()
    assert not backend.capabilities.builds_engines and not backend.capabilities.latency_is_deployment
