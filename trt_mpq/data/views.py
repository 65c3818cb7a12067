"""Views of a dataset: a subset, a seeded split into two disjoint parts, batches that each hold samples from the
whole set, and jittered replicas.

Replicas stand in for another backend's arithmetic: every float input gets independent uniform noise of
``relative`` times the tensor's RMS (about eight float32 rounding steps at the default 2^-20), reproducible
per sample and replica, so the same sample is jittered the same way whatever the batch size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .datasets import Dataset

CACHE_BYTES = 1 << 30  # a confirm part up to this size is decoded once and kept
JITTER = 2.0 ** -20  # relative to a tensor's RMS: float32 rounding scale (one ULP is 2^-23 relative)


def _stack(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Samples' feeds as one batch along axis 0 (one sample: as it is)."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def _gather(ds: Dataset, indices: Sequence[int]):
    def take(lo: int, hi: int) -> dict[str, np.ndarray]:
        return _stack([ds.take_fn(i, i + 1) for i in indices[lo:hi]])

    return take


def subset(ds: Dataset, indices: Sequence[int], label: str) -> Dataset:
    """The samples ``indices`` of ``ds``, in that order; ``label`` names the part in logs and reports."""
    indices = [int(i) for i in indices]
    fp = hashlib.sha256(json.dumps([ds.fingerprint, indices]).encode()).hexdigest()
    return Dataset(ds.model_inputs, len(indices), _gather(ds, indices), f"{ds.source} ({label})", ds.kind,
                   ds.details, fp, ds.labels[indices] if ds.labels is not None else None,
                   [ds.name(i) for i in indices])


def spread_batches(ds: Dataset, batch: int) -> Dataset:
    """The same samples, reordered so that each batch of ``batch`` holds samples from all over the set (with n
    batches, batch k holds samples k, k + n, k + 2n, ...): data sets are often sorted (by class, by source), and
    so any one batch stands for the whole of it. Errors name samples by their place in ``ds``."""
    b = ds.effective_batch(batch)
    n = -(-ds.num_samples // b)
    order = [i for k in range(n) for i in range(k, ds.num_samples, n)]
    if order == list(range(ds.num_samples)):
        return ds

    def take(lo: int, hi: int) -> dict[str, np.ndarray]:
        return _stack([ds.take(i, i + 1) for i in order[lo:hi]])

    fp = hashlib.sha256(json.dumps([ds.fingerprint, "spread batches", b]).encode()).hexdigest()
    return replace(ds, take_fn=take, fingerprint=fp, labels=ds.labels[order] if ds.labels is not None else None,
                   names=[ds.name(i) for i in order])


def split(ds: Dataset, share: float = 0.5, seed: int = 0) -> tuple[Dataset, Dataset, list[int], list[int]]:
    """Two disjoint parts of a seeded permutation: (first, second, their indices); ``share`` goes to the first."""
    order = np.random.default_rng(seed).permutation(ds.num_samples)
    cut = min(max(1, round(ds.num_samples * share)), ds.num_samples - 1)
    first, second = sorted(order[:cut].tolist()), sorted(order[cut:].tolist())
    return subset(ds, first, "search part"), subset(ds, second, "confirm part"), first, second


def cached(ds: Dataset, max_bytes: int = CACHE_BYTES) -> Dataset:
    """The same samples kept in memory once read (decoded images, sliced arrays) when they fit in
    ``max_bytes``; otherwise ``ds`` itself, read again on every pass. Each sample is read when first asked
    for, by whichever job asks (jobs on threads decode side by side); two jobs that ask at once read it alike."""
    first = ds.take_fn(0, 1)
    if sum(v.nbytes for v in first.values()) * ds.num_samples > max_bytes:
        return ds
    samples: list[dict[str, np.ndarray] | None] = [first] + [None] * (ds.num_samples - 1)

    def take(lo: int, hi: int) -> dict[str, np.ndarray]:
        for i in range(lo, hi):
            if samples[i] is None:
                samples[i] = ds.take_fn(i, i + 1)
        return _stack(samples[lo:hi])

    return replace(ds, take_fn=take)


def jittered(ds: Dataset, replica: int, relative: float = JITTER) -> Dataset:
    """The same samples with every float input perturbed at rounding scale (replica ``replica``)."""

    def take(lo: int, hi: int) -> dict[str, np.ndarray]:
        parts = []
        for i in range(lo, hi):
            feeds = dict(ds.take_fn(i, i + 1))
            rng = np.random.default_rng([replica, i])
            for k, v in feeds.items():
                if np.issubdtype(v.dtype, np.floating) and v.size:
                    rms = float(np.sqrt(np.mean(np.square(v, dtype=np.float64))))
                    noise = rng.uniform(-1.0, 1.0, v.shape) * relative * (rms or 1.0)
                    feeds[k] = (v + noise).astype(v.dtype)
            parts.append(feeds)
        return _stack(parts)

    fp = hashlib.sha256(json.dumps([ds.fingerprint, "jitter", replica, relative]).encode()).hexdigest()
    return replace(ds, take_fn=take, fingerprint=fp, source=f"{ds.source} (replica {replica})")
