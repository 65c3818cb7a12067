"""Output-delta metrics between a configured model and the FP32 reference, accumulated batch by batch.

Per output: cosine similarity (mean over samples), SQNR in dB and normalised MSE (over all values), max
absolute error, and top-1 agreement when the output looks like class scores ([N, C], C >= 2). A model with
several outputs reports the worst value of each metric across its outputs, plus each output separately.

JSON has no infinities, so: identical outputs give ``sqnr_db: null`` with ``nmse: 0``; a configured model that
produces NaN or Inf gives ``nonfinite`` (how many values) and null for the metrics it makes meaningless.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

METRICS = ("cosine", "sqnr_db", "nmse", "max_abs", "top1_agreement")
_WORST = {"cosine": min, "sqnr_db": min, "nmse": max, "max_abs": max, "top1_agreement": min}


class _OutputDelta:
    def __init__(self) -> None:
        self.ref2 = 0.0
        self.err2 = 0.0
        self.max_abs = 0.0
        self.cos_sum = 0.0
        self.rows = 0
        self.agree = 0
        self.classified = 0
        self.nonfinite = 0

    def update(self, ref: np.ndarray, got: np.ndarray, samples: int) -> None:
        r = ref.astype(np.float64, copy=False)
        g = got.astype(np.float64, copy=False)
        bad = ~np.isfinite(g)
        if bad.any():
            self.nonfinite += int(bad.sum())
            g = np.where(bad, 0.0, g)  # keep the finite part measurable; the count says what happened
        d = g - r
        self.ref2 += float(np.sum(r * r))
        self.err2 += float(np.sum(d * d))
        if d.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(d))))
        # Rows are samples when axis 0 is the batch; otherwise the whole output is one vector.
        rows = samples if r.ndim and r.shape[0] == samples else 1
        r2, g2 = r.reshape(rows, -1), g.reshape(rows, -1)
        nr, ng = np.linalg.norm(r2, axis=1), np.linalg.norm(g2, axis=1)
        dot = np.sum(r2 * g2, axis=1)
        both_zero = (nr == 0) & (ng == 0)
        cos = np.where(both_zero, 1.0, dot / np.maximum(nr * ng, 1e-300))
        self.cos_sum += float(np.sum(cos))
        self.rows += rows
        if r.ndim == 2 and r.shape[1] >= 2 and np.issubdtype(ref.dtype, np.floating):
            self.agree += int(np.sum(np.argmax(r, axis=1) == np.argmax(g, axis=1)))
            self.classified += r.shape[0]

    def result(self) -> dict[str, float | None]:
        if self.nonfinite:
            out = {"cosine": None, "sqnr_db": None, "nmse": None, "max_abs": None, "nonfinite": self.nonfinite}
            if self.classified:
                out["top1_agreement"] = self.agree / self.classified
            return out
        if self.err2 == 0:
            nmse, sqnr = 0.0, None  # identical outputs: infinite SQNR, written as null
        elif self.ref2 == 0:
            nmse, sqnr = None, None
        else:
            nmse = self.err2 / self.ref2
            sqnr = 10.0 * math.log10(self.ref2 / self.err2)
        out: dict[str, float | None] = {
            "cosine": self.cos_sum / max(self.rows, 1),
            "sqnr_db": sqnr,
            "nmse": nmse,
            "max_abs": self.max_abs,
        }
        if self.classified:
            out["top1_agreement"] = self.agree / self.classified
        return out


class OutputDelta:
    """Streaming comparison over all float outputs of a model."""

    def __init__(self) -> None:
        self.outputs: dict[str, _OutputDelta] = {}

    def update(self, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], samples: int) -> None:
        for name, r in ref.items():
            if np.issubdtype(r.dtype, np.floating):
                self.outputs.setdefault(name, _OutputDelta()).update(r, got[name], samples)

    def result(self) -> dict:
        per = {name: acc.result() for name, acc in self.outputs.items()}
        out: dict = {}
        nonfinite = sum(p.get("nonfinite", 0) for p in per.values())
        if nonfinite:
            out = {"cosine": None, "sqnr_db": None, "nmse": None, "max_abs": None, "nonfinite": nonfinite}
            agree = [p["top1_agreement"] for p in per.values() if "top1_agreement" in p]
            if agree:
                out["top1_agreement"] = min(agree)
            if len(per) > 1:
                out["outputs"] = per
            return out
        for metric in METRICS:
            values = [p[metric] for p in per.values() if metric in p]
            if not values:
                continue
            if metric == "sqnr_db" and any(v is None for v in values):
                # null means +inf (identical output) unless that output's nmse is null too (error on a zero
                # reference, -inf): then the worst SQNR is unknown and stays null.
                worst_unknown = any(p.get("nmse") is None for p in per.values())
                finite = [v for v in values if v is not None]
                out[metric] = None if worst_unknown or not finite else min(finite)
            elif metric == "nmse" and any(v is None for v in values):
                out[metric] = None
            else:
                out[metric] = _WORST[metric](values)
        if len(per) > 1:
            out["outputs"] = per
        return out


def severity(result: dict) -> float:
    """Sort key, larger = more sensitive: NaN/Inf outputs first, then normalised MSE."""
    if result.get("nonfinite"):
        return float("inf")
    return result.get("nmse") or 0.0
