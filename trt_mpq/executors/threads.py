"""Jobs on a pool of threads in this process, each job's sessions on a share of the cores.

Several sessions side by side, each on fewer threads, do more work than one session whose intra-op threads
share every operator of a batch of 8: on this project's 2-core machine, MiniLM-L6 at batch 8 ran 1.43x
faster as two sessions of one thread than as one of two, PP-OCRv4 at 640x640 1.28x, MobileNetV2 1.02x.
Sessions release the GIL while they run. Everything stays in this process (the weight bank, the activation
store, one compiled FP32 probe): nothing is copied. The results are those of one job at a time with the same
threads per session (the count is part of the backend's description and of the run key).
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from .base import Serial, parts, timed

CGROUP = Path("/sys/fs/cgroup")


def cores() -> int:
    """CPU cores this process may use: its affinity (taskset, cpusets), narrowed by a cgroup CPU quota
    (docker --cpus, Kubernetes CPU limits), which the affinity does not show."""
    return quota_cores() or _affinity()


def quota_cores() -> int | None:
    """The cores a cgroup quota leaves where it is below the affinity, else None (a session left to its
    default threads would count the cores it sees, not the quota)."""
    quota = cpu_quota()
    return max(1, int(quota)) if quota is not None and int(quota) < _affinity() else None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs this process's cgroup may use (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``);
    None where there is no quota or no cgroup to read."""
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


AUTO_JOBS = 4  # by default at most this many jobs at a time: each holds its batches (more: not measured here)


def jobs_for(asked: int | None, gpu: bool, threads: int | None) -> int:
    """Jobs at a time in this process: ``asked``, or as many as the cores hold at ``threads`` per session
    (default 1), at most AUTO_JOBS; one on a GPU (one device)."""
    if asked is not None:
        return asked
    if gpu:
        return 1
    return max(1, min(AUTO_JOBS, cores() // (threads or 1)))


def _make_and_keep(fn, job, shared, sink) -> tuple[float, Any]:
    """A ``keep`` job on its thread: make the batch, write it, hand back (seconds making it, result)."""
    seconds, (result, tensors) = timed(fn, job, *shared)
    sink.write(job.batch, tensors)
    return seconds, result


class Threads(Serial):
    """``workers`` jobs at once in this process, each session on ``cores() // workers`` threads (at least 1;
    ``threads`` to set it); each batch kept in the store by the job that made it. At most ``2 * workers`` jobs
    are queued, so that finished results and the batches they read do not pile up."""

    def __init__(self, workers: int, threads: int | None = None) -> None:
        super().__init__(threads or max(1, cores() // workers))
        self.workers = workers
        each = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        self.where = f"in this process, {workers} at a time ({each} each)"
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="trt-mpq-job")

    def keep(self, fn, jobs, shared, sink):
        """Each job writes its own batch, on its own thread (the store takes batches in any order); at most
        ``workers + 1`` batches are made or held at a time."""
        self.sink = sink
        sink.reset()
        window: deque[tuple[int, Any, Future]] = deque()
        start = time.perf_counter()
        try:
            for i, job in enumerate(jobs):
                window.append((i, job, self.pool.submit(_make_and_keep, fn, job, shared, sink)))
                if len(window) > self.workers:
                    yield self._oldest(window, fn.__name__)
            while window:
                yield self._oldest(window, fn.__name__)
        finally:
            self._drain(f for _, _, f in window)
            self.busy += time.perf_counter() - start
        sink.finish()

    def _oldest(self, window, name: str) -> tuple[int, Any]:
        i, job, future = window.popleft()
        seconds, result = future.result()
        self.job_times.append((name, seconds, parts(job)))
        return i, result

    def map(self, fn, jobs, shared, reads_batches=False):
        extra = (self.sink,) if reads_batches else ()
        pending: dict[Future, tuple[int, int]] = {}
        todo = iter(enumerate(jobs))
        start = time.perf_counter()
        try:
            while True:
                for i, job in todo:
                    pending[self.pool.submit(timed, fn, job, *shared, *extra)] = (i, parts(job))
                    if len(pending) >= 2 * self.workers:
                        break
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: pending[f][0]):
                    i, size = pending.pop(future)
                    seconds, result = future.result()
                    self.job_times.append((fn.__name__, seconds, size))
                    yield i, result
        finally:
            self._drain(pending)
            self.busy += time.perf_counter() - start

    @staticmethod
    def _drain(futures) -> None:
        """The run stopped (an error, Ctrl-C): queued jobs are not needed, running ones end on their own."""
        for f in list(futures):
            f.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
