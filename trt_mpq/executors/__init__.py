"""Where independent jobs run: in this process, one after another (``Serial``) or several at a time on threads
(``Threads``), or spread over a Ray cluster (``RayExecutor``, ``pip install 'trt-mpq[ray]'``); the answer is
the same every way at the same threads per session."""

from .base import BatchReader, Executor, MemoryBatches, Serial, chunks_for, ordered
from .ray_cluster import RayExecutor, open_executor
from .threads import AUTO_JOBS, Threads, cores, jobs_for

__all__ = ["AUTO_JOBS", "BatchReader", "Executor", "MemoryBatches", "RayExecutor", "Serial", "Threads",
           "chunks_for", "cores", "jobs_for", "open_executor", "ordered"]
