"""Jobs on a Ray cluster: a local one of ``workers`` single-threaded workers, or an existing one joined by
address. Ray schedules, ships and retries; this module only says what a job is.

The driver ships everything a job needs (the model's graph, the weight bank, the data's batches) through
Ray's object store: workers need trt-mpq installed, not the model's or the data's paths. Batches of FP32
activations are made on the workers and stay in the object store (owned by the driver, so Ray rebuilds a
lost one by re-running its job); a job on the same node reads them without copying. A worker that dies
mid-job has the job retried elsewhere (``RETRIES``); a job that raises a ``TrtMpqError`` ends the run
with that error's own sentence.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..artifacts.folder import WORKER_ENV
from ..errors import ConfigError, TrtMpqError
from .base import Executor, MemoryBatches, parts, timed

RETRIES = 3  # a job whose worker died is run again, up to this many times
INSTALL = "pip install 'trt-mpq[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"spreading work over workers needs Ray, which is not installed; run: {INSTALL}") from None
    return ray


def _unreachable(address: str) -> str | None:
    """Why nothing answers at ``host:port`` within a few seconds (None: something does, or the address is not
    host:port, e.g. ``auto``, which Ray resolves itself). Ray alone would retry a dead address for minutes."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return None
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        return str(exc) or type(exc).__name__
    return None


def _run(fn: Callable, job: Any, n_shared: int, *args: Any) -> tuple[float, Any]:
    """What runs on a worker: ``args`` = the shared values, then the batches ``job.batches`` names."""
    shared, batches = args[:n_shared], args[n_shared:]
    return timed(fn, job, *shared, MemoryBatches(dict(zip(job.batches, batches, strict=True))))


def _run_plain(fn: Callable, job: Any, *shared: Any) -> tuple[float, Any]:
    return timed(fn, job, *shared)


def _make(fn: Callable, job: Any, *shared: Any) -> tuple[tuple[float, Any], Any]:
    seconds, (result, tensors) = timed(fn, job, *shared)
    return (seconds, result), tensors


class RayExecutor(Executor):
    """``workers``: start a local cluster of that many single-threaded workers; ``address``: join a running
    cluster instead (``auto``: the one ``ray start`` made on this machine), using every CPU it has."""

    in_process = False

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        ray = self._ray = _ray()
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers {workers}: give at least 1.")
        self.started = not ray.is_initialized()
        if self.started:
            env = {WORKER_ENV: "ray", "OMP_NUM_THREADS": "1"}
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                                      "runtime_env": {"env_vars": env}}
            why = _unreachable(address) if address else None
            if why:
                raise ConfigError(f"no Ray cluster answers at {address} ({why}); start one there with "
                                  "'ray start --head', or check --ray-address / RAY_ADDRESS.")
            try:
                if address:
                    ray.init(address=address, **kwargs)
                else:
                    ray.init(num_cpus=workers or os.cpu_count() or 1, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                raise ConfigError(f"could not start or join {where}: {str(exc).splitlines()[0]}") from None
        self.workers = int(ray.cluster_resources().get("CPU", 1)) if address else (workers or 1)
        self.threads = 1
        self.where = (f"on the Ray cluster at {address} ({self.workers} CPUs)" if address
                      else f"on {self.workers} Ray workers (local cluster, 1 thread each)")
        options = {"num_cpus": 1, "max_retries": RETRIES, "retry_exceptions": False}
        self._map = ray.remote(**options)(_run)
        self._plain = ray.remote(**options)(_run_plain)
        self._keep = ray.remote(num_returns=2, **options)(_make)
        self.batches: dict[int, Any] = {}
        self.gpu_jobs = False
        self.job_times = []
        self.busy = 0.0

    def use_gpus(self, gpu: bool) -> None:
        self.gpu_jobs = gpu

    def _opts(self, fn):
        return fn.options(num_gpus=1) if self.gpu_jobs else fn

    def share(self, value):
        return self._ray.put(value)

    def keep(self, fn, jobs, shared, sink):
        start, pending = time.perf_counter(), {}
        for i, job in enumerate(jobs):
            result, tensors = self._opts(self._keep).remote(fn, job, *shared)
            self.batches[job.batch] = tensors
            pending[result] = (i, parts(job))
        yield from self._collect(pending, fn.__name__, start)

    def map(self, fn, jobs, shared, reads_batches=False):
        start, pending = time.perf_counter(), {}
        for i, job in enumerate(jobs):
            if reads_batches:
                batches = [self.batches[b] for b in job.batches]
                ref = self._opts(self._map).remote(fn, job, len(shared), *shared, *batches)
            else:
                ref = self._opts(self._plain).remote(fn, job, *shared)
            pending[ref] = (i, parts(job))
        yield from self._collect(pending, fn.__name__, start)

    def _collect(self, pending: dict, name: str, start: float) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    seconds, result = self._get(ref)
                    i, size = pending.pop(ref)
                    self.job_times.append((name, seconds, size))
                    yield i, result
        finally:
            self.busy += time.perf_counter() - start
            for ref in pending:  # the run stopped (an error, Ctrl-C): what is queued is not needed
                ray.cancel(ref, force=False)

    def _get(self, ref) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, TrtMpqError):
                raise cause from None
            raise TrtMpqError(f"a job failed on a Ray worker: {type(cause).__name__}: {cause}") from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError) as exc:
            raise TrtMpqError(f"a Ray worker died {RETRIES + 1} times running the same job; the run stops "
                              f"({type(exc).__name__}). Re-running the same command resumes it.") from None

    def drop_batches(self) -> None:
        self.batches = {}

    def close(self) -> None:
        self.batches = {}
        if self.started and self._ray.is_initialized():
            self._ray.shutdown()


def open_executor(workers: int | None = None, address: str | None = None, jobs: int = 1,
                  threads: int | None = None) -> Executor:
    """Ray when workers or an address (or ``RAY_ADDRESS``) ask for it; else this process, ``jobs`` at a time
    (``Threads``; ``threads`` per session, default its share of the cores) or one after another (``Serial``)."""
    from .base import Serial
    from .threads import Threads, quota_cores

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None and workers is None:
        if jobs > 1:
            return Threads(jobs, threads)
        return Serial(threads or quota_cores())  # under a CPU quota, its cores, not every core of the host
    return RayExecutor(workers, address)

