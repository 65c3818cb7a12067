"""Output-delta metrics between a configured model and the FP32 reference, accumulated batch by batch.

Per output, over all values of all samples together: cosine similarity, SQNR in dB, normalised MSE and max
absolute error; and top-1 agreement when the output looks like class scores ([N, C], C >= 2). The cosine is
not averaged per sample on purpose: a sample whose output is nearly zero (a detector's map of an image with
no text) has an ill-conditioned cosine that would dominate the mean. A model with
several outputs reports the worst value of each metric across its outputs, plus each output separately.

JSON has no infinities, so: identical outputs give ``sqnr_db: null`` with ``nmse: 0``; a configured model that
produces NaN or Inf gives ``nonfinite`` (how many values) and null for the metrics it makes meaningless.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..artifacts import UnitResult

METRICS = ("cosine", "sqnr_db", "nmse", "max_abs", "top1_agreement")
CHUNK = 1 << 14  # values per float64 chunk of a comparison (128 KB: stays in cache)


@dataclass(frozen=True)
class BatchDelta:
    """One batch's contribution to one output's metrics: what a measurement sends back from wherever it ran.
    Folding these in batch order gives the same floats as comparing the batches one after another here."""

    ref2: float
    err2: float
    dot: float
    got2: float
    max_abs: float
    agree: int = 0
    classified: int = 0
    nonfinite: int = 0

    @classmethod
    def of(cls, ref: np.ndarray, got: np.ndarray) -> BatchDelta:
        # float64 sums over cache-sized chunks: 4x faster than whole float64 copies on a 640x640 map (the
        # same sums to ~1e-15), and numpy's own reduction, never a BLAS one whose order follows the thread count
        r_all, g_all = ref.reshape(-1), got.reshape(-1)
        ref2 = err2 = dot = got2 = max_abs = 0.0
        nonfinite = 0
        for lo in range(0, r_all.size, CHUNK):
            r = r_all[lo:lo + CHUNK].astype(np.float64)
            g = g_all[lo:lo + CHUNK].astype(np.float64)
            bad = ~np.isfinite(g)
            if bad.any():
                nonfinite += int(bad.sum())
                g[bad] = 0.0  # keep the finite part measurable; the count says what happened
            d = g - r
            ref2 += float(np.sum(r * r))
            err2 += float(np.sum(d * d))
            dot += float(np.sum(r * g))
            got2 += float(np.sum(g * g))
            max_abs = max(max_abs, float(np.max(np.abs(d))))
        agree = classified = 0
        if ref.ndim == 2 and ref.shape[1] >= 2 and np.issubdtype(ref.dtype, np.floating):
            g = np.where(np.isfinite(got), got, 0.0)
            agree, classified = int(np.sum(np.argmax(ref, axis=1) == np.argmax(g, axis=1))), ref.shape[0]
        return cls(ref2, err2, dot, got2, max_abs, agree, classified, nonfinite)


class _OutputDelta:
    def __init__(self) -> None:
        self.ref2 = 0.0
        self.err2 = 0.0
        self.max_abs = 0.0
        self.dot = 0.0
        self.got2 = 0.0
        self.agree = 0
        self.classified = 0
        self.nonfinite = 0

    def add(self, b: BatchDelta) -> None:
        self.nonfinite += b.nonfinite
        self.ref2 += b.ref2
        self.err2 += b.err2
        self.dot += b.dot
        self.got2 += b.got2
        self.max_abs = max(self.max_abs, b.max_abs)
        self.agree += b.agree
        self.classified += b.classified

    def result(self) -> UnitResult:
        top1 = self.agree / self.classified if self.classified else None
        if self.nonfinite:
            return UnitResult(None, None, None, None, top1, self.nonfinite)
        if self.err2 == 0:
            nmse, sqnr = 0.0, None  # identical outputs: infinite SQNR, written as null
        elif self.ref2 == 0:
            nmse, sqnr = None, None
        else:
            nmse = self.err2 / self.ref2
            sqnr = 10.0 * math.log10(self.ref2 / self.err2)
        if self.ref2 == 0 or self.got2 == 0:
            cosine = 1.0 if self.ref2 == self.got2 else 0.0
        else:
            cosine = self.dot / math.sqrt(self.ref2 * self.got2)
        return UnitResult(cosine, sqnr, nmse, self.max_abs, top1)


class OutputDelta:
    """Streaming comparison over all float outputs of a model."""

    def __init__(self) -> None:
        self.outputs: dict[str, _OutputDelta] = {}

    @staticmethod
    def compare(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict[str, BatchDelta]:
        """One batch's contribution, per float output (``add`` folds it in)."""
        return {name: BatchDelta.of(r, got[name]) for name, r in ref.items() if np.issubdtype(r.dtype, np.floating)}

    def add(self, batch: Mapping[str, BatchDelta]) -> None:
        """Fold in one batch (batches in order: float sums depend on it)."""
        for name, b in batch.items():
            self.outputs.setdefault(name, _OutputDelta()).add(b)

    def update(self, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], samples: int) -> None:
        self.add(self.compare(ref, got))

    def result(self) -> UnitResult:
        """The worst of each metric over the outputs (each output's own result inside, when there are several);
        every metric None when no float output was compared."""
        per = {name: acc.result() for name, acc in self.outputs.items()}
        if not per:
            return UnitResult(None, None, None, None)
        outputs = per if len(per) > 1 else {}
        agree = [r.top1_agreement for r in per.values() if r.top1_agreement is not None]
        nonfinite = sum(r.nonfinite for r in per.values())
        if nonfinite:
            return UnitResult(None, None, None, None, min(agree) if agree else None, nonfinite, outputs=outputs)
        values = {m: [getattr(r, m) for r in per.values()] for m in ("cosine", "max_abs")}
        sqnrs, nmses = [r.sqnr_db for r in per.values()], [r.nmse for r in per.values()]
        # a null SQNR means +inf (identical output) unless that output's nmse is null too (error on a zero
        # reference, -inf): then the worst SQNR is unknown and stays null
        finite = [v for v in sqnrs if v is not None]
        sqnr = None if any(v is None for v in nmses) or not finite else min(finite)
        nmse = None if any(v is None for v in nmses) else max(nmses)
        return UnitResult(min(values["cosine"]), sqnr, nmse, max(values["max_abs"]), min(agree) if agree else None,
                          outputs=outputs)
