"""Activation ranges from streaming collectors, and symmetric INT8 scales for activations and weights.

Collectors are running reducers fed batch by batch, so memory does not depend on the number of samples.
``max`` needs one pass; ``percentile``, ``entropy`` and ``mse`` build a 2048-bin histogram of |x| over
[0, max] in a second pass (the range must be known before binning), as TensorRT's calibrators did. Once a
histogram exists every method's threshold is computed from it, so a tensor's candidates cost one pass:
``auto`` lets the analysis keep, per unit, the candidate with the least measured output delta.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from ..artifacts.record import Record
from ..errors import ConfigError
from .entropy import entropy_threshold

METHODS = ("max", "percentile", "entropy", "mse")  # the thresholds a calibrator sets from the data
CALIBRATORS = (*METHODS, "auto")
SHIPPED = "shipped"  # the threshold an already-quantized file's own scale gives (network.qdq)
CHOICES = (*METHODS, SHIPPED)  # the thresholds --calibrator auto chooses among, ties to the first
REFINED = "refined"  # auto's threshold between two of those, where its criterion found a better one there
HIST_BINS = 2048
INT8_MAX = 127
FP8_MAX = 448.0  # E4M3
INT4_MAX = 7
INT4_BLOCK = 128  # weights per INT4 scale along K (TensorRT's and ModelOpt's default)
FP16_MAX = 65504.0
PERCENTILE = 99.99


class AbsMax:
    """Running max(|x|) over the finite values, and how many were not finite (an additive attention mask
    holds -inf or -3.4e38: a mask, not a range to calibrate, and never an infinity in ranges.json)."""

    def __init__(self) -> None:
        self.value = 0.0
        self.nonfinite = 0

    def update(self, x: np.ndarray) -> None:
        if not x.size:
            return
        hi, lo = float(x.max()), float(x.min())  # max and -min avoid an |x| temporary the size of the tensor
        if not (np.isfinite(hi) and np.isfinite(lo)):
            finite = np.isfinite(x)
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            if not finite.any():
                return
            hi, lo = float(x[finite].max()), float(x[finite].min())
        self.value = max(self.value, hi, -lo)


class AbsHistogram:
    """Running histogram of |x| over [0, amax] with a fixed number of bins."""

    def __init__(self, amax: float, bins: int = HIST_BINS) -> None:
        self.amax = float(amax)
        self.counts = np.zeros(bins, dtype=np.int64)

    def update(self, x: np.ndarray) -> None:
        if self.amax <= 0 or not x.size:
            self.counts[0] += x.size
            return
        bins = len(self.counts)
        # float32 data is binned in float32 (half the memory traffic); float16 in float64, since a tensor with
        # a small range would overflow float16 when scaled to bin indices
        work = np.float32 if x.dtype == np.float32 else np.float64
        a = np.abs(x.ravel()).astype(work, copy=False)
        if not np.isfinite(a).all():
            a = a[np.isfinite(a)]  # infinities are not part of the range
        a *= work(bins / self.amax)
        idx = a.astype(np.int32)
        np.minimum(idx, bins - 1, out=idx)
        self.counts += np.bincount(idx, minlength=bins)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.amax, len(self.counts) + 1)


def percentile_threshold(hist: AbsHistogram, percentile: float = PERCENTILE) -> float:
    """Smallest upper bin edge below which ``percentile`` % of the values fall."""
    total = hist.counts.sum()
    if total == 0 or hist.amax == 0:
        return hist.amax
    cdf = np.cumsum(hist.counts) / total
    k = int(np.searchsorted(cdf, percentile / 100.0))
    return float(hist.edges[min(k, len(hist.counts) - 1) + 1])


def mse_threshold(hist: AbsHistogram, candidates: int = 256) -> float:
    """The threshold that minimises the expected squared error of symmetric INT8 quantization."""
    counts = hist.counts.astype(np.float64)
    if counts.sum() == 0 or hist.amax == 0:
        return hist.amax
    centers = (hist.edges[:-1] + hist.edges[1:]) / 2
    thresholds = hist.amax * np.linspace(1.0 / candidates, 1.0, candidates)
    scale = thresholds[:, None] / INT8_MAX
    q = np.minimum(np.round(centers[None, :] / scale), INT8_MAX) * scale
    err = ((centers[None, :] - q) ** 2 * counts[None, :]).sum(axis=1)
    return float(thresholds[int(np.argmin(err))])


THRESHOLDS = {"percentile": percentile_threshold, "entropy": entropy_threshold, "mse": mse_threshold}
AUTO_START = "mse"  # auto: the threshold of a tensor no unit chose for (the most robust single one measured)


def check_calibrator(name: str) -> str:
    if name not in CALIBRATORS:
        raise ConfigError(f"--calibrator '{name}' is not one of {', '.join(CALIBRATORS)}.")
    return name


def int8_scale(amax: float) -> float:
    """Symmetric INT8 scale; TensorRT requires a positive scale, so an all-zero tensor gets 1."""
    return float(amax) / INT8_MAX if amax > 0 else 1.0


WEIGHT_SCALES = ("max", "mse")


def weight_scales(w: np.ndarray, axis: int | None, method: str = "max") -> np.ndarray:
    """Symmetric per-channel (or per-tensor when ``axis`` is None) scales for a weight: ``max`` maps each
    channel's largest |w| to 127; ``mse`` clips each channel where its quantization error is least (a grid of
    clip ratios from 0.5 to 1: decided once per analysis, ``Ranges.weight_amax``)."""
    return scales_of(weight_amax(w, axis, method))


def scales_of(amax: np.ndarray) -> np.ndarray:
    """INT8 scales of per-channel clipping thresholds."""
    return np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)


def weight_amax(w: np.ndarray, axis: int | None, method: str = "max") -> np.ndarray:
    """The per-channel (or per-tensor) clipping threshold ``weight_scales`` derives its scales from."""
    a = np.abs(w.astype(np.float32))
    if axis is None:
        amax = np.array(a.max() if a.size else 0.0, dtype=np.float32)
    else:
        amax = a.max(axis=tuple(k for k in range(a.ndim) if k != axis)) if a.size else np.zeros(w.shape[axis])
    if method == "mse" and a.size:
        rows = (np.moveaxis(w, axis, 0) if axis is not None else w.reshape(1, -1)).reshape(amax.size, -1)
        rows = rows.astype(np.float64)
        base = np.asarray(amax, np.float64).reshape(-1)
        best_err, best = np.full(base.size, np.inf), base.copy()
        for r in np.linspace(0.5, 1.0, 51):
            s = np.where(base > 0, r * base / INT8_MAX, 1.0)[:, None]
            err = ((rows - np.clip(np.round(rows / s), -INT8_MAX - 1, INT8_MAX) * s) ** 2).sum(axis=1)
            better = err < best_err
            best_err, best = np.where(better, err, best_err), np.where(better, r * base, best)
        amax = best.reshape(np.shape(amax)).astype(np.float32)
    return np.asarray(amax, np.float32)


@dataclass(frozen=True)
class Ranges(Record):
    """What the FP32 pass observed: calibrated INT8 thresholds for quantized activations (``amax``, with the
    method that set each one and every method's candidate when histograms were built), raw |x| maxima and
    per-sample shapes of every observed tensor (ONNX Runtime knows every shape once it has run, where static
    shape inference may not)."""

    JSON_ORDER = ("calibrator", "amax", "methods")

    calibrator: str
    amax: Mapping[str, float] = field(default_factory=dict)
    absmax: Mapping[str, float] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    candidates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # tensor -> method -> amax
    methods: Mapping[str, str] = field(default_factory=dict)  # tensor -> the method its amax comes from
    means: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # weight-unit inputs: per-channel mean
    weight_scales: str = "max"  # how INT8 weight scales are set (see ``weight_scales``)
    bias_correction: bool = False  # INT8 weight units fold the mean shift of their quantized weight into the bias
    int4_block: int = INT4_BLOCK  # INT4 weights per scale along K
    fp8_amax: Mapping[str, float] = field(default_factory=dict)  # FP8 thresholds chosen per tensor (else max)
    fp8_methods: Mapping[str, str] = field(default_factory=dict)  # ... and the method each comes from
    weight_amax: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # INT8 weight -> clip per channel

    def int8_weight_scales(self, name: str, w: np.ndarray, axis: int | None) -> np.ndarray:
        """A weight's INT8 scales under ``weight_scales``: from the thresholds decided with the ranges
        (``weight_amax``) where they are there for it, else computed now (the same numbers, slower for mse)."""
        amax = self.weight_amax.get(name)
        expected = 1 if axis is None else w.shape[axis]
        if amax is None or len(amax) != expected:
            return weight_scales(w, axis, self.weight_scales)
        return scales_of(np.asarray(amax, np.float32).reshape(() if axis is None else (-1,)))

    def with_weight_amax(self, weights: Mapping[str, tuple[np.ndarray, int | None]]) -> Ranges:
        """The same ranges with each weight's clipping thresholds decided (``weights``: name -> (array, axis)),
        once, so lowering never searches a weight's clip again; only ``weight_scales="mse"`` needs them."""
        if self.weight_scales != "mse":
            return self
        amax = {n: tuple(float(v) for v in np.atleast_1d(weight_amax(w, axis, "mse")))
                for n, (w, axis) in weights.items()}
        return replace(self, weight_amax={**self.weight_amax, **amax})

    def scale(self, tensor: str) -> float:
        return int8_scale(self.amax[tensor])

    def fp8_scale(self, tensor: str) -> float:
        """max|x| / 448: FP8 keeps the range (its floating spacing makes clipping rarely pay, and max is what
        ModelOpt's FP8 recipe calibrates with)."""
        amax = self.fp8_amax.get(tensor, self.absmax.get(tensor, self.amax.get(tensor, 0.0)))
        return float(amax) / FP8_MAX if amax > 0 and np.isfinite(amax) else 1.0

    def choose_for(self, p, tensor_methods: Mapping[str, str]) -> Ranges:
        """``choose`` for INT8; for FP8 the same candidates set its own thresholds (``fp8_amax``)."""
        if getattr(p, "value", p) != "fp8":
            return self.choose(tensor_methods)
        fp8, methods = dict(self.fp8_amax), dict(self.fp8_methods)
        for t, m in tensor_methods.items():
            fp8[t] = self.candidates[t][m]
            methods[t] = m
        return replace(self, fp8_amax=fp8, fp8_methods=methods)

    def methods_for(self, p) -> Mapping[str, str]:
        """tensor -> the method its threshold in precision ``p`` (INT8 or FP8) comes from."""
        return self.fp8_methods if getattr(p, "value", p) == "fp8" else self.methods

    def exceeds_fp16(self, tensors: Iterable[str]) -> list[str]:
        return [t for t in tensors if self.absmax.get(t, 0.0) > FP16_MAX]

    def options(self, tensors: Iterable[str]) -> dict[str, dict[str, float]]:
        """For each method, the thresholds of ``tensors`` under it; methods that give the same thresholds
        (within 1 %) are one option, named by the first of CHOICES."""
        tensors = list(tensors)
        out: dict[str, dict[str, float]] = {}
        for m in CHOICES:
            if not all(m in self.candidates.get(t, {}) for t in tensors):
                continue
            th = {t: self.candidates[t][m] for t in tensors}
            if not any(all(abs(th[t] - o[t]) <= 0.01 * max(o[t], 1e-30) for t in tensors) for o in out.values()):
                out[m] = th
        return out

    def with_shipped(self, thresholds: Mapping[str, float]) -> Ranges:
        """The same ranges with a file's own thresholds as one more candidate of the tensors they cover."""
        return self.with_candidate(SHIPPED, thresholds)

    def with_candidate(self, method: str, thresholds: Mapping[str, float]) -> Ranges:
        """The same ranges with ``thresholds`` as one more candidate, named ``method``, of the tensors they
        cover (a file's own, or auto's search between the methods')."""
        candidates = {t: {**c, method: float(thresholds[t])} if t in thresholds else c
                      for t, c in self.candidates.items()}
        return replace(self, candidates=candidates)

    def choose(self, tensor_methods: Mapping[str, str]) -> Ranges:
        """The same ranges with each named tensor set to its method's candidate."""
        amax, methods = dict(self.amax), dict(self.methods)
        for t, m in tensor_methods.items():
            amax[t] = self.candidates[t][m]
            methods[t] = m
        return replace(self, amax=amax, methods=methods)

    def using(self, method: str) -> Ranges:
        """Every quantized tensor at ``method``'s threshold (what a single calibrator gives)."""
        return self.choose({t: method for t in self.amax if method in self.candidates.get(t, {})})
