"""Where independent jobs run: one after another in this process (``Serial``, the default) or spread over a
Ray cluster (``RayExecutor``, ``pip install 'trt-mpq[ray]'``); the answer is the same either way."""

from .base import BatchReader, Executor, MemoryBatches, Serial, chunks_for, ordered
from .ray_cluster import RayExecutor, open_executor

__all__ = ["BatchReader", "Executor", "MemoryBatches", "RayExecutor", "Serial", "chunks_for", "open_executor",
           "ordered"]
