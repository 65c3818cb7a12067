"""Jobs on threads in one process: the answer of one job at a time, batches kept in order whatever finishes
first, errors and interruptions that end the run cleanly, and how many jobs run by default."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import builders
import fakes
from fakes import read_sums
from trt_mpq.backends.onnxrt import OnnxRuntimeOptions
from trt_mpq.cli import main
from trt_mpq.commands.analyze import AnalyzeOptions
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.errors import BackendError, ConfigError
from trt_mpq.executors import AUTO_JOBS, Serial, Threads, cores, jobs_for, open_executor, ordered
from trt_mpq.executors.threads import cpu_quota
from trt_mpq.measure.sensitivity import Settings, analyze
from trt_mpq.measure.store import ActivationStore
from trt_mpq.network.model import load_model
from trt_mpq.precision import Precision

SETTINGS = Settings(precisions=(Precision.INT8, Precision.FP16), calibrator="auto", batch=4)


def _analyse(tmp_path, name, builder, executor, backend=None):
    model = load_model(builders.save(builder(), tmp_path))
    data = generated_dataset(model, samples=24, seed=5)
    backend = backend or fakes.OnnxRuntimeBackend(OnnxRuntimeOptions(threads=1))
    analyze(model, data, backend, tmp_path / name, SETTINGS, executor=executor)
    doc = json.loads((tmp_path / name / "sensitivity.json").read_text())
    doc.pop("elapsed_s")
    return doc, json.loads((tmp_path / name / "ranges.json").read_text())


@pytest.mark.parametrize("builder", [builders.conv_bn_relu_residual, builders.attention_matmul,
                                     builders.norm_fanout, builders.heavy_tailed])
def test_two_jobs_at_a_time_give_the_answer_of_one_at_a_time_byte_for_byte(tmp_path, builder):
    one = _analyse(tmp_path, "serial", builder, Serial())
    with Threads(2, threads=1) as executor:
        two = _analyse(tmp_path, "threads", builder, executor)
    assert two == one
    assert executor.workers == 2 and len(executor.job_times) > 0
    assert any(u["results"].get("int8", {}).get("nmse") for u in one[0]["units"])  # something was measured


def _make_late_first(job, count):
    time.sleep(0.02 * (count - job.batch))  # the first batch finishes last
    return job.batch, {"t": np.full((2, 3), job.batch, np.float32)}


def test_kept_batches_are_written_in_order_whatever_finishes_first(tmp_path):
    store = ActivationStore(tmp_path / "store")
    with Threads(3, threads=1) as executor:
        made = list(executor.keep(_make_late_first, [fakes.Make(b) for b in range(5)], [5], store))
        assert sorted(made) == [(b, b) for b in range(5)] and store.complete
        got = ordered(executor.map(read_sums, [fakes.Read((4, 0)), fakes.Read((2,))], [], reads_batches=True), 2)
    assert got == [[24.0, 0.0], [12.0]]
    assert [name for name, _, _ in executor.job_times].count("_make_late_first") == 5


def test_at_most_twice_the_workers_are_queued_and_every_job_is_answered_once():
    running, most, lock = [0], [0], threading.Lock()

    def job(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i * i

    with Threads(2, threads=1) as executor:
        results = list(executor.map(job, list(range(20)), []))
    assert sorted(results) == [(i, i * i) for i in range(20)]
    assert most[0] == 2  # two threads, never more at once


def test_an_error_in_a_job_ends_the_run_with_its_own_sentence(tmp_path):
    with Threads(2, threads=1) as executor, pytest.raises(BackendError) as caught:
        _analyse(tmp_path, "fail", builders.conv_bn_relu_residual, executor, fakes.FailingBackend())
    assert "it is a test" in str(caught.value)


def test_an_interrupted_run_resumes_with_the_same_answer(tmp_path):
    model = load_model(builders.save(builders.attention_matmul(), tmp_path))
    data = generated_dataset(model, samples=24, seed=5)
    backend = fakes.OnnxRuntimeBackend(OnnxRuntimeOptions(threads=1))
    with Threads(2, threads=1) as executor, pytest.raises(KeyboardInterrupt):
        analyze(model, data, backend, tmp_path / "cut", SETTINGS, fakes.StopAfter(2), executor=executor)
    with Threads(2, threads=1) as executor:
        analyze(model, data, backend, tmp_path / "cut", SETTINGS, executor=executor)
    whole = _analyse(tmp_path, "whole", builders.attention_matmul, Serial())
    resumed = json.loads((tmp_path / "cut" / "sensitivity.json").read_text())
    resumed.pop("elapsed_s")
    assert resumed == whole[0]


def test_jobs_by_default_and_when_asked(monkeypatch):
    monkeypatch.setattr("trt_mpq.executors.threads.cpu_quota", lambda: None)  # whatever the host's cgroup says
    assert jobs_for(3, False, None) == 3
    assert jobs_for(None, False, None) == min(AUTO_JOBS, cores())
    assert jobs_for(None, True, None) == 1  # one GPU: one job at a time
    monkeypatch.setattr("trt_mpq.executors.threads.cores", lambda: 16)
    assert jobs_for(None, False, None) == AUTO_JOBS
    assert jobs_for(None, False, 8) == 2  # --ort-threads 8 (or an analysis recorded with 8): what the cores hold
    assert jobs_for(None, False, 32) == 1
    executor = Threads(4)
    assert executor.threads == 4 and "4 at a time (4 threads each)" in executor.where
    executor.close()
    assert isinstance(open_executor(jobs=1), Serial) and open_executor(jobs=1).threads is None  # no quota here
    with open_executor(jobs=2) as two, open_executor(jobs=3, threads=1) as given:
        assert isinstance(two, Threads) and two.workers == 2 and two.threads == 8
        assert given.workers == 3 and given.threads == 1  # --ort-threads 1 with --jobs 3: kept
    with pytest.raises(ConfigError, match="--jobs"):
        AnalyzeOptions(jobs=0)
    with pytest.raises(ConfigError, match="not both"):
        AnalyzeOptions(jobs=2, workers=2)


def test_the_command_line_takes_jobs_and_records_the_threads_per_session(tmp_path, capsys):
    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    code = main(["analyze", str(path), "--out", str(tmp_path / "run"), "--samples", "8", "--batch", "4",
                 "--jobs", "2", "--precisions", "fp16"])
    assert code == 0
    doc = json.loads((tmp_path / "run" / "sensitivity.json").read_text())
    threads = max(1, cores() // 2)
    assert doc["backend_settings"].get("ort_threads") == threads
    assert "2 at a time" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["analyze", str(path), "--jobs", "0"])
    assert refused.value.code == 2 and "--jobs: must be at least 1" in capsys.readouterr().err


def test_a_run_with_jobs_side_by_side_writes_the_files_of_one_job_at_a_time(tmp_path, monkeypatch):
    """The project's example end to end (analysis, search, confirm looks with replicas, Pareto front), one
    thread per session: every file the same with 1 and 3 jobs at a time, timings apart."""
    import trt_mpq
    from trt_mpq.measure import task_metric

    spans, run_span = [], task_metric.span_outputs
    monkeypatch.setattr(task_metric, "span_outputs", lambda job, *a: spans.append(job) or run_span(job, *a))
    example = Path(__file__).resolve().parents[2] / "examples" / "digits"
    docs = {}
    for jobs in (1, 3):
        analyze = trt_mpq.AnalyzeOptions(calib=str(example / "calib.npz"), samples=64, jobs=jobs,
                                         backend="onnxruntime", backend_options=(OnnxRuntimeOptions(threads=1),))
        plan = trt_mpq.PlanOptions(eval=str(example / "eval.npz"), metric="accuracy",
                                   budget=trt_mpq.Budget(max_drop=0.02), pareto=True, latency_batch=256)
        trt_mpq.run(example / "digits_cnn.onnx", tmp_path / str(jobs), analyze, plan, fakes.CountingProgress())
        docs[jobs] = {}
        for f in ("plan.json", "report.json", "sensitivity.json"):
            doc = json.loads((tmp_path / str(jobs) / f).read_text())
            doc.pop("elapsed_s", None)
            docs[jobs][f] = doc
    assert docs[3] == docs[1]
    assert docs[1]["report.json"]["verification"]  # mixes were scored
    assert spans  # with 3 jobs, the batches of the mixes ran side by side on one session


def test_a_cgroup_cpu_quota_narrows_the_cores(tmp_path, monkeypatch):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert cpu_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(v1.parent) == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(v1.parent) is None
    assert cpu_quota(tmp_path / "none") is None
    (v2 / "cpu.max").write_text("garbage\n")
    assert cpu_quota(v2) is None
    monkeypatch.setattr("trt_mpq.executors.threads.cpu_quota", lambda: 1.5)
    assert cores() == 1
    assert jobs_for(None, False, None) == 1  # one job on every core it may use: the serial path
    serial = open_executor(jobs=1)
    assert isinstance(serial, Serial) and serial.threads == 1  # on its one core, not on every core of the host
    monkeypatch.setattr("trt_mpq.executors.threads.cpu_quota", lambda: 64.0)
    assert cores() == len(os.sched_getaffinity(0))  # a quota above the affinity changes nothing
