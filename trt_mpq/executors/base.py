"""The executor contract: independent jobs handed out and their results collected, wherever they run.

A job is a pure function of its record, of values shared by every job (the weight bank, the backend, the
ranges) and of the batches of FP32 activations it reads; it returns a small record. The driver folds results
in a fixed order, so where and in which order jobs ran never changes an answer. Batches are *kept* where the
executor keeps data (on disk for ``Serial``; in Ray's object store for ``RayExecutor``) and jobs read only
the batches they name (``job.batches``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np


class BatchReader(Protocol):
    """What a job reads its data through: a batch of named FP32 tensors."""

    def read(self, batch: int, names: Iterable[str]) -> dict[str, np.ndarray]: ...


class MemoryBatches:
    """Batches held in memory (what a job on a Ray worker reads, from the object store without copying)."""

    def __init__(self, batches: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        self.batches = batches

    def read(self, batch: int, names: Iterable[str]) -> dict[str, np.ndarray]:
        return {n: self.batches[batch][n] for n in names}


class BatchSink(Protocol):
    """Where this process keeps batches: written whole, in any order and from any thread, read back by index
    (``ActivationStore``)."""

    complete: bool

    def reset(self) -> None: ...

    def finish(self) -> None: ...

    def write(self, batch: int, tensors: Mapping[str, np.ndarray]) -> None: ...

    def read(self, batch: int, names: Iterable[str]) -> dict[str, np.ndarray]: ...


class Executor(ABC):
    """Runs jobs; ``workers`` of them at once. ``threads``: how many threads each job's backend should use
    (None: the backend's default, every core of this machine). ``job_times``: (job function, seconds) of
    every job run so far, timed where it ran (what ``scripts/benchmark_scale.py`` schedules from)."""

    workers: int = 1
    threads: int | None = None
    where: str = "in this process"
    in_process: bool = True  # jobs run in this process: they can share objects a cluster would have to send
    job_times: list[tuple[str, float, int]]
    busy: float = 0.0

    def use_gpus(self, gpu: bool) -> None:
        """Whether each job needs a GPU of its own (the backend runs on one); one process has one."""
        return None

    def share(self, value: Any) -> Any:
        """A value every job reads, sent once (the weight bank, the backend, the ranges)."""
        return value

    @abstractmethod
    def keep(self, fn: Callable, jobs: Sequence[Any], shared: Sequence[Any], sink: BatchSink
             ) -> Iterator[tuple[int, Any]]:
        """Run ``fn(job, *shared) -> (result, tensors)`` for each job (``job.batch``: the batch it makes):
        yield ``(index, result)`` as each finishes and keep ``tensors`` as that batch for later jobs."""

    @abstractmethod
    def map(self, fn: Callable, jobs: Sequence[Any], shared: Sequence[Any], reads_batches: bool = False
            ) -> Iterator[tuple[int, Any]]:
        """Run ``fn(job, *shared)`` (``fn(job, *shared, reader)`` when ``reads_batches``: the batches kept
        so far, those ``job.batches`` names at least) for each job; yield ``(index, result)`` as each finishes."""

    def resume(self, sink: BatchSink) -> bool:
        """Read the batches an earlier run kept in ``sink``, if they are all there and this executor can."""
        return False

    def drop_batches(self) -> None:
        """Let go of the batches kept so far (the analysis that needed them is over)."""
        return None

    def close(self) -> None:
        """Let go of kept batches and of the cluster, if this executor started one."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Serial(Executor):
    """One job after another in this process, in order; ``threads`` per session (None: the backend's own)."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.sink: BatchSink | None = None
        self.job_times = []

    def keep(self, fn, jobs, shared, sink):
        self.sink = sink
        sink.reset()
        for i, job in enumerate(jobs):
            seconds, (result, tensors) = timed(fn, job, *shared)
            sink.write(job.batch, tensors)
            self.job_times.append((fn.__name__, seconds, parts(job)))
            self.busy += seconds
            yield i, result
        sink.finish()

    def map(self, fn, jobs, shared, reads_batches=False):
        extra = (self.sink,) if reads_batches else ()
        for i, job in enumerate(jobs):
            seconds, result = timed(fn, job, *shared, *extra)
            self.job_times.append((fn.__name__, seconds, parts(job)))
            self.busy += seconds
            yield i, result

    def resume(self, sink: BatchSink) -> bool:
        self.sink = sink if sink.complete else None
        return sink.complete


def parts(job: Any) -> int:
    """How many pieces a job could be cut into (recorded with its time)."""
    return int(getattr(job, "parts", 1))


def chunks_for(workers: int, jobs: int, most: int) -> int:
    """Pieces to cut each of ``jobs`` jobs into (at most ``most``) so that ``workers`` have about four
    jobs each: fewer, longer jobs than workers would leave workers idle while the largest finish."""
    return 1 if workers <= 1 else max(1, min(most, -(-4 * workers // max(1, jobs))))


def timed(fn: Callable, *args: Any) -> tuple[float, Any]:
    """(seconds, fn(*args))."""
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def ordered(results: Iterable[tuple[int, Any]], count: int) -> list[Any]:
    """Results that arrive in any order, put back in job order."""
    out: list[Any] = [None] * count
    for i, r in results:
        out[i] = r
    return out

