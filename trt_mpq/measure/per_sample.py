"""A task metric sample by sample: its value, an interval, a smooth surrogate, and which samples changed.

- accuracy / agreement (top-1 of the first output): exact binomial interval when each sample makes one
  decision ([N, C] outputs), else a bootstrap over samples. The surrogate is the expected score if noise of the
  size measured on each sample were drawn again: per sample, P(the target class stays on top) =
  Phi(margin / sigma), with margin the candidate's logit of the target class minus the best other one and
  sigma = sqrt(2) x the RMS of its output error on that sample. It moves smoothly with the noise, where the
  exact count jumps when one sample flips, so the search is not decided by one sample.
- cosine / sqnr (all output values of all samples together, worst output): paired bootstrap over samples.
- a user metric: bootstrap by calling it again on resampled samples (or on its per-sample values when it
  returns one value per sample).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import special

from ..errors import TrtMpqError
from .intervals import binomial_interval, bootstrap, percentile_interval

USER_RESAMPLES = 199  # a user function is called once per resample
SQNR_CEILING = 100.0


@dataclass(frozen=True)
class Measured:
    value: float  # the exact metric
    smooth: float  # the surrogate the search uses (equal to value for smooth metrics)
    low: float  # interval at the requested confidence (lower bound only, when one-sided)
    high: float
    samples: int
    changed: tuple[int, ...] = ()  # samples whose top-1 decision differs from FP32's


def _flat(outputs: Mapping[str, np.ndarray], n: int) -> list[np.ndarray]:
    return [v.reshape(n, -1).astype(np.float64) for v in outputs.values()
            if np.issubdtype(v.dtype, np.floating) and v.ndim and v.shape[0] == n]


def _cosine(dot: np.ndarray, r2: np.ndarray, g2: np.ndarray) -> np.ndarray:
    """Per output (axis 0) the cosine over all samples (last axis); the worst output."""
    d, r, g = dot.sum(-1), r2.sum(-1), g2.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where((r == 0) | (g == 0), np.where(r == g, 1.0, 0.0), d / np.sqrt(r * g))
    return cos.min(axis=0)


def _sqnr(r2: np.ndarray, e2: np.ndarray) -> np.ndarray:
    r, e = r2.sum(-1), e2.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.where(e == 0, SQNR_CEILING, 10 * np.log10(r / e))
    return np.minimum(np.nan_to_num(db, nan=-SQNR_CEILING, neginf=-SQNR_CEILING), SQNR_CEILING).min(axis=0)


def top1(got: np.ndarray, ref: np.ndarray, target: np.ndarray | None, confidence: float,
         one_sided: bool) -> tuple[Measured, np.ndarray]:
    """Top-1 score of ``got`` against ``target`` (labels) or, when None, against ``ref``'s top-1."""
    n = got.shape[0]
    goal = np.argmax(ref, axis=-1) if target is None else np.asarray(target).reshape(np.argmax(got, -1).shape)
    correct = np.argmax(got, axis=-1) == goal
    per = correct.reshape(n, -1)
    scores = np.take_along_axis(got, goal[..., None], axis=-1)[..., 0]
    others = np.where(np.eye(got.shape[-1], dtype=bool)[goal], -np.inf, got).max(axis=-1)
    noise = np.sqrt(2 * np.mean((got.astype(np.float64) - ref) ** 2, axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(noise > 0, (scores - others) / noise, np.where(correct, np.inf, -np.inf))  # no noise: exact
    smooth = float(np.mean(special.ndtr(z)))
    if per.shape[1] == 1:
        low, high = binomial_interval(int(per.sum()), n, confidence, one_sided)
    else:
        low, high = bootstrap([per.mean(axis=1)], lambda a: a.mean(axis=-1), confidence, one_sided)
    return Measured(float(correct.mean()), smooth, low, high, n), per.all(axis=1)


def smooth_metric(name: str, got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], n: int,
                  confidence: float, one_sided: bool) -> Measured:
    """cosine or sqnr over all outputs, with a paired bootstrap interval."""
    g, r = _flat(got, n), _flat(ref, n)
    if name == "cosine":
        stats = [np.stack([(a * b).sum(1) for a, b in zip(r, g, strict=True)]),
                 np.stack([(a * a).sum(1) for a in r]), np.stack([(b * b).sum(1) for b in g])]
        fn = _cosine
    else:
        stats = [np.stack([(a * a).sum(1) for a in r]), np.stack([((b - a) ** 2).sum(1) for a, b in zip(r, g,
                                                                                                      strict=True)])]
        fn = _sqnr
    value = float(fn(*stats))
    low, high = bootstrap(stats, fn, confidence, one_sided)
    return Measured(value, value, low, high, n)


def user_metric(fn: Callable, outputs: Mapping[str, np.ndarray], labels: np.ndarray | None, n: int,
                confidence: float, one_sided: bool, call: Callable) -> Measured:
    """A user metric: its per-sample values' mean, or the function called again on resampled samples."""
    values = call(fn, outputs, labels)
    if isinstance(values, np.ndarray) and not (values.ndim == 1 and len(values) == n):
        raise TrtMpqError(f"the metric function returned an array of shape {values.shape}; return one number, "
                          f"or one number per evaluation sample (shape ({n},)).")
    if isinstance(values, np.ndarray):
        value = float(values.mean())
        low, high = bootstrap([values.astype(np.float64)], lambda a: a.mean(axis=-1), confidence, one_sided)
        return Measured(value, value, low, high, n)
    value = float(values)
    idx = np.random.default_rng(0).integers(0, n, size=(USER_RESAMPLES, n))
    draws = np.array([float(call(fn, {k: v[i] for k, v in outputs.items()},
                                 labels[i] if labels is not None else None)) for i in idx])
    low, high = percentile_interval(draws, confidence, one_sided)
    return Measured(value, value, low, high, n)
