"""The executor contract without Ray: the serial executor, the chunked measurement jobs, layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest

import builders
import fakes
from fakes import CountingBackend, read_sums
from trt_mpq.artifacts.folder import WORKER_ENV, RunFolder
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.executors import MemoryBatches, Serial, ordered
from trt_mpq.measure.fp32_pass import Layout
from trt_mpq.measure.sensitivity import Settings, analyze
from trt_mpq.measure.store import ActivationStore
from trt_mpq.network.model import load_model
from trt_mpq.precision import Precision


def _make(job, scale):
    return job.batch * scale, {"t": np.full((2, 3), job.batch * scale, np.float32)}


def test_serial_keeps_batches_in_its_store_and_jobs_read_them(tmp_path):
    executor, store = Serial(), ActivationStore(tmp_path / "store")
    made = list(executor.keep(_make, [fakes.Make(0), fakes.Make(1), fakes.Make(2)], [10], store))
    assert made == [(0, 0), (1, 10), (2, 20)] and store.complete
    got = ordered(executor.map(read_sums, [fakes.Read((2, 0)), fakes.Read((1,))], [], reads_batches=True), 2)
    assert got == [[120.0, 0.0], [60.0]]
    assert [name for name, _, _ in executor.job_times] == ["_make"] * 3 + ["read_sums"] * 2
    assert all(seconds >= 0 for _, seconds, _ in executor.job_times)
    fresh = Serial()
    assert fresh.resume(ActivationStore(tmp_path / "store"))  # a resumed run reads the kept batches
    assert ordered(fresh.map(read_sums, [fakes.Read((1,))], [], reads_batches=True), 1) == [[60.0]]
    assert not Serial().resume(ActivationStore(tmp_path / "none"))


def test_memory_batches_and_layouts():
    reader = MemoryBatches({3: {"a": np.ones(2), "b": np.zeros(1)}})
    assert list(reader.read(3, ["a"])) == ["a"]
    layout = Layout.of([{"x": ("<f4", (8, 3))}, {"x": ("<f4", (5, 3))}])
    dtype, dims = layout.dtype_shape("x")
    assert dtype == np.float32 and dims == [None, 3]  # the short last batch leaves the batch axis free


class Wide(Serial):
    """One process that says it has 16 workers: the analysis cuts measurements into batch chunks."""

    workers = 16


@pytest.mark.parametrize("builder", [builders.conv_bn_relu_residual, builders.attention_matmul])
def test_measurements_cut_into_batch_chunks_give_the_same_answer(tmp_path, builder):
    model = load_model(builders.save(builder(), tmp_path))
    data = generated_dataset(model, samples=40, seed=1)
    settings = Settings(precisions=(Precision.INT8, Precision.FP16), calibrator="auto", batch=4)
    docs = []
    for name, executor in (("one", Serial()), ("chunked", Wide())):
        backend = CountingBackend("none")
        analyze(model, data, backend, tmp_path / name, settings, executor=executor)
        doc = json.loads((tmp_path / name / "sensitivity.json").read_text())
        doc.pop("elapsed_s")
        docs.append((doc, backend.compiled, len(executor.job_times)))
    (one, compiled_one, jobs_one), (chunked, compiled_chunked, jobs_chunked) = docs
    assert chunked == one
    assert jobs_chunked > jobs_one and compiled_chunked > compiled_one  # it did cut them


def test_a_ray_worker_keeps_the_timing_cache_of_its_gpu(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert folder.timing_cache_of_gpu() == folder.timing_cache  # one process: the run's shared cache
    monkeypatch.setenv(WORKER_ENV, "ray")
    assert folder.timing_cache_of_gpu() == tmp_path / "timing.gpu3.cache"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert folder.timing_cache_of_gpu() == folder.timing_cache
