"""Joining a cluster, and GPUs: with a backend on a GPU each job asks Ray for one GPU, so N GPUs run N jobs at
once (checked on a local cluster that declares two: stand-ins, Ray hands out their ids, nothing runs on a GPU)."""

from __future__ import annotations

import os
import sys

import pytest
from test_ray import start_or_skip

from trt_mpq.executors import RayExecutor, ordered

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'trt-mpq[ray]')")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _gpu_of(job):
    import time

    time.sleep(0.05)
    return os.environ.get("CUDA_VISIBLE_DEVICES"), tuple(ray.get_gpu_ids())


def test_each_job_of_a_gpu_backend_holds_one_gpu():
    start_or_skip(lambda: ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
                                   logging_level="ERROR"))
    try:
        executor = RayExecutor(workers=2)
        executor.use_gpus(True)
        seen = ordered(executor.map(_gpu_of, list(range(8)), []), 8)
        assert all(len(ids) == 1 for _, ids in seen)  # one GPU per job, never both
        assert {str(ids[0]) for _, ids in seen} <= {"0", "1"}
        assert all(visible == str(ids[0]) for visible, ids in seen)  # what CUDA (and TensorRT) will see
    finally:
        ray.shutdown()


def test_an_address_where_no_cluster_answers_is_one_sentence_at_once():
    import time

    from trt_mpq.errors import ConfigError

    if ray.is_initialized():  # joining needs a driver that is not connected yet
        ray.shutdown()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"no Ray cluster answers at 127\.0\.0\.1:1 .*ray start --head"):
        RayExecutor(address="127.0.0.1:1")
    assert time.perf_counter() - t0 < 30  # Ray alone retries a dead address for minutes
