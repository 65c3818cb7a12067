"""The FP32 pass's side of calibration: per batch, what each tensor adds to its range (maxima, channel sums,
histograms), folded in batch order into ``Ranges``. Observing a batch is pure, so batches can be observed
anywhere (``executors``) and still fold into the same floats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .ranges import AUTO_START, THRESHOLDS, AbsHistogram, AbsMax, Ranges, check_calibrator


class ChannelMean:
    """Running mean of a tensor per channel (``axis``), over every other axis: what bias correction needs."""

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.total: np.ndarray | None = None
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        if not x.size or not np.issubdtype(x.dtype, np.floating):
            return
        ax = self.axis % x.ndim
        others = tuple(k for k in range(x.ndim) if k != ax)
        s = x.sum(axis=others, dtype=np.float64)
        if not np.all(np.isfinite(s)):  # rare: leave the non-finite values out (converting every batch is slow)
            s = np.nan_to_num(x.astype(np.float64), posinf=0.0, neginf=0.0).sum(axis=others)
        self.total = s if self.total is None else self.total + s
        self.count += x.size // x.shape[ax]

    def value(self) -> tuple[float, ...]:
        return () if self.total is None else tuple(float(v) for v in self.total / max(self.count, 1))


@dataclass(frozen=True)
class BatchRanges:
    """What one batch of the FP32 pass adds to the ranges (``RangeCollector.observe``): folded in batch
    order (``fold``), wherever each batch ran, they give the same floats as one pass here."""

    maxima: Mapping[str, tuple[float, int]]  # tensor -> (max |x| over its finite values, how many were not)
    sums: Mapping[str, tuple[np.ndarray, int]]  # tensor -> (per-channel sums, values per channel)
    shapes: Mapping[str, tuple[int, ...]]  # per-sample shapes seen in this batch


class RangeCollector:
    """Folds batches into ranges: ``observe`` a batch (pure; it can run anywhere) and ``fold`` the result,
    batches in order; then the same for histograms, once every maximum is known (``start_histograms``)."""

    def __init__(self, calibrator: str, observed: Iterable[str], quantized: Iterable[str],
                 channel_axes: Mapping[str, int] | None = None, weight_scales: str = "max",
                 bias_correction: bool = False) -> None:
        self.calibrator = check_calibrator(calibrator)
        self.maxima = {n: AbsMax() for n in dict.fromkeys(observed)}
        self.means = {n: ChannelMean(a) for n, a in (channel_axes or {}).items()} if bias_correction else {}
        self.weight_scales, self.bias_correction = weight_scales, bias_correction
        self.quantized = list(dict.fromkeys(quantized))
        self.hists: dict[str, AbsHistogram] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    @property
    def needs_histograms(self) -> bool:
        return self.calibrator != "max"

    def observe(self, tensors: Mapping[str, np.ndarray], samples: int) -> BatchRanges:
        """One batch's maxima, channel sums and per-sample shapes (a leading axis that holds the batch is
        divided by ``samples``)."""
        shapes = {}
        for name, v in tensors.items():
            if np.issubdtype(v.dtype, np.floating):
                dims = list(v.shape)
                if dims and samples > 1 and dims[0] % samples == 0:
                    dims[0] //= samples
                shapes[name] = tuple(int(d) for d in dims)
        maxima = {}
        for name in self.maxima:
            if name in tensors and np.issubdtype(tensors[name].dtype, np.floating):
                m = AbsMax()
                m.update(tensors[name])
                maxima[name] = (m.value, m.nonfinite)
        sums = {}
        for name, c in self.means.items():
            if name in tensors:
                one = ChannelMean(c.axis)
                one.update(tensors[name])
                if one.total is not None:
                    sums[name] = (one.total, one.count)
        return BatchRanges(maxima, sums, shapes)

    def fold(self, batch: BatchRanges) -> None:
        for name, dims in batch.shapes.items():
            self.shapes.setdefault(name, dims)
        for name, (value, nonfinite) in batch.maxima.items():
            m = self.maxima[name]
            m.value, m.nonfinite = max(m.value, value), m.nonfinite + nonfinite
        for name, (total, count) in batch.sums.items():
            c = self.means[name]
            c.total = total if c.total is None else c.total + total
            c.count += count

    def update_max(self, tensors: Mapping[str, np.ndarray]) -> None:
        """The first pass: maxima (and channel means, for bias correction)."""
        b = self.observe(tensors, 1)
        self.fold(BatchRanges(b.maxima, b.sums, {}))

    def histogram_limits(self) -> dict[str, float]:
        """The range each quantized tensor's histogram spans: its maximum over the whole first pass."""
        return {n: self.maxima[n].value for n in self.quantized}

    def start_histograms(self) -> None:
        self.hists = {n: AbsHistogram(amax) for n, amax in self.histogram_limits().items()}

    def update_histograms(self, tensors: Mapping[str, np.ndarray]) -> None:
        self.fold_histograms(batch_histograms(self.histogram_limits(), tensors))

    def fold_histograms(self, counts: Mapping[str, np.ndarray]) -> None:
        for name, c in counts.items():
            self.hists[name].counts += c

    def result(self, candidates: Mapping[str, Mapping[str, float]] | None = None) -> Ranges:
        """The ranges; ``candidates`` (tensor -> method -> threshold, from ``candidate_thresholds``) when they
        were computed elsewhere, else computed here from the histograms."""
        absmax = {n: m.value for n, m in self.maxima.items()}
        if candidates is None:
            methods = self.threshold_methods()
            candidates = {n: candidate_thresholds(h, absmax[n], methods) for n, h in self.hists.items()}
        start = AUTO_START if self.calibrator == "auto" else self.calibrator
        amax = {n: candidates[n][start] if n in candidates else absmax[n] for n in self.quantized}
        methods = {n: start if n in candidates else "max" for n in self.quantized}
        means = {n: c.value() for n, c in self.means.items() if c.count}
        return Ranges(self.calibrator, amax, absmax, dict(self.shapes), dict(candidates), methods, means,
                      self.weight_scales, self.bias_correction)

    def threshold_methods(self) -> tuple[str, ...]:
        """auto chooses among every method's threshold; a fixed calibrator needs only its own (and max)."""
        return tuple(THRESHOLDS) if self.calibrator == "auto" else \
            tuple(m for m in THRESHOLDS if m == self.calibrator)


def batch_histograms(limits: Mapping[str, float], tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One batch's |x| histogram counts of each tensor in ``limits`` (name -> the range it spans)."""
    out = {}
    for name, amax in limits.items():
        if name in tensors:
            h = AbsHistogram(amax)
            h.update(tensors[name])
            out[name] = h.counts
    return out


def candidate_thresholds(hist: AbsHistogram, absmax: float, methods: Iterable[str]) -> dict[str, float]:
    """Every method's threshold of one tensor from its histogram (``max``: the tensor's maximum)."""
    return {"max": absmax, **{m: THRESHOLDS[m](hist) for m in methods}}
