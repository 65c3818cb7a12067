"""The analysis spread over Ray: the same answer as one process, on a real local cluster (skipped with a
reason where Ray is not installed); a worker killed mid-job; errors raised on workers; Ray absent."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import builders
import fakes
from trt_mpq.backends.onnxrt import OnnxRuntimeOptions
from trt_mpq.cli import main
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.errors import BackendError, ConfigError
from trt_mpq.executors import RayExecutor, open_executor
from trt_mpq.measure.sensitivity import Settings, analyze
from trt_mpq.network.model import load_model
from trt_mpq.precision import Precision

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'trt-mpq[ray]')")
ray.cloudpickle.register_pickle_by_value(fakes)  # the test backends travel to the workers with the jobs

def start_or_skip(start):
    """Start a local Ray cluster, or skip saying why this machine cannot (a test of the code, not of the host)."""
    try:
        return start()
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds when a host cannot run it
        pytest.skip(f"Ray could not start a local cluster on this machine: {str(exc).splitlines()[0]}")


SETTINGS = Settings(precisions=(Precision.INT8, Precision.FP16), calibrator="auto", batch=4, weight_scales="mse",
                    bias_correction=True)


def _analyse(tmp_path, name, builder, executor=None, backend=None, samples=24, seed=5):
    model = load_model(builders.save(builder(), tmp_path))
    data = generated_dataset(model, samples=samples, seed=seed)
    # one thread per session, as on every Ray worker: the numbers of a GEMM on a dequantized weight depend on it
    backend = backend or fakes.OnnxRuntimeBackend(OnnxRuntimeOptions(threads=1))
    analyze(model, data, backend, tmp_path / name, SETTINGS, executor=executor)
    doc = json.loads((tmp_path / name / "sensitivity.json").read_text())
    doc.pop("elapsed_s")
    return doc, json.loads((tmp_path / name / "ranges.json").read_text())


@pytest.fixture(scope="module")
def cluster():
    """One local cluster of 2 single-CPU workers for the module's tests."""
    start_or_skip(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                                   logging_level="ERROR"))
    yield
    ray.shutdown()


@pytest.mark.parametrize("builder", [builders.conv_bn_relu_residual, builders.attention_matmul,
                                     builders.norm_fanout])
def test_two_workers_give_the_answer_of_one_process_byte_for_byte(tmp_path, cluster, builder):
    serial = _analyse(tmp_path, "serial", builder)
    spread = _analyse(tmp_path, "ray", builder, RayExecutor(workers=2))
    assert spread[0] == serial[0] and spread[1] == serial[1]
    assert any(u["results"].get("int8", {}).get("nmse") for u in serial[0]["units"])  # something was measured


def test_thresholds_searched_between_the_candidates_are_those_of_one_process(tmp_path, cluster):
    serial = _analyse(tmp_path, "serial", builders.heavy_tailed, samples=16, seed=9)
    spread = _analyse(tmp_path, "ray", builders.heavy_tailed, RayExecutor(workers=2), samples=16, seed=9)
    assert spread[0] == serial[0] and spread[1] == serial[1]
    assert serial[1]["methods"]["g"] == "refined"  # a threshold between two methods' won (exp2's output)


def test_an_error_on_a_worker_ends_the_run_with_its_own_sentence(tmp_path, cluster):
    with pytest.raises(BackendError) as caught:
        _analyse(tmp_path, "fail", builders.conv_bn_relu_residual, RayExecutor(workers=2),
                 fakes.FailingBackend())
    assert str(caught.value) == "the worker's backend cannot load the model: it is a test."


def test_without_ray_asking_for_workers_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'trt-mpq\[ray\]'"):
        open_executor(workers=2)
    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    assert main(["analyze", str(path), "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'trt-mpq[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "sensitivity.json").exists()


def _job_processes() -> list[int]:
    """Ray worker processes running a job now (Ray titles them after the function: ray::_run)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().startswith(b"ray::_run"):
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def test_a_worker_killed_mid_job_is_retried_on_a_two_node_cluster(tmp_path):
    from ray.cluster_utils import Cluster

    expected = _analyse(tmp_path, "serial", builders.conv_bn_relu_residual)
    nodes = start_or_skip(lambda: Cluster(initialize_head=True, head_node_args={"num_cpus": 1}))
    nodes.add_node(num_cpus=1)
    try:
        executor = RayExecutor(address=nodes.address)
        assert executor.workers == 2
        outcome = {}

        def run():
            try:
                outcome["doc"] = _analyse(tmp_path, "ray", builders.conv_bn_relu_residual, executor,
                                          fakes.SlowBackend())
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        killed, deadline = None, time.monotonic() + 120
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            running = _job_processes()
            if running:
                killed = running[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        thread.join(300)
        assert killed is not None, "no job was seen running"
        assert "error" not in outcome, outcome.get("error")
        assert outcome["doc"] == expected
    finally:
        ray.shutdown()
        nodes.shutdown()



def test_a_plan_scored_on_two_workers_is_the_plan_of_one_process(tmp_path, cluster):
    """The project's example end to end (analysis, search, confirm looks with replicas, Pareto front): every
    file the same as in one process with one thread per session, timings apart."""
    import trt_mpq

    example = Path(__file__).resolve().parents[2] / "examples" / "digits"
    docs = {}
    for name, workers in (("one", None), ("two", 2)):
        analyze = trt_mpq.AnalyzeOptions(calib=str(example / "calib.npz"), samples=64, workers=workers,
                                         backend="onnxruntime", backend_options=(OnnxRuntimeOptions(threads=1),))
        plan = trt_mpq.PlanOptions(eval=str(example / "eval.npz"), metric="accuracy",
                                   budget=trt_mpq.Budget(max_drop=0.02), pareto=True, latency_batch=256)
        trt_mpq.run(example / "digits_cnn.onnx", tmp_path / name, analyze, plan)
        docs[name] = {}
        for f in ("plan.json", "report.json", "sensitivity.json"):
            doc = json.loads((tmp_path / name / f).read_text())
            doc.pop("elapsed_s", None)
            docs[name][f] = doc
    assert docs["two"] == docs["one"]
    assert docs["one"]["report.json"]["verification"]  # mixes were scored


def test_a_killed_driver_resumes_from_its_journal(tmp_path, cluster):
    model = load_model(builders.save(builders.attention_matmul(), tmp_path))
    data = generated_dataset(model, samples=24, seed=5)
    backend = fakes.OnnxRuntimeBackend(OnnxRuntimeOptions(threads=1))
    with pytest.raises(KeyboardInterrupt):
        analyze(model, data, backend, tmp_path / "ray", SETTINGS, fakes.StopAfter(3), executor=RayExecutor(workers=2))
    assert not (tmp_path / "ray" / "sensitivity.json").exists()
    journal = next((tmp_path / "ray").glob(".trt-mpq/*/results.jsonl"))
    assert len(journal.read_text().splitlines()) == 3
    analyze(model, data, backend, tmp_path / "ray", SETTINGS, executor=RayExecutor(workers=2))
    resumed = json.loads((tmp_path / "ray" / "sensitivity.json").read_text())
    resumed.pop("elapsed_s")
    assert resumed == _analyse(tmp_path, "serial", builders.attention_matmul)[0]
