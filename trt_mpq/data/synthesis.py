"""Calibration data optimised through the model itself (``--calib synthesized``; ``trt-mpq[datagen]``).

Each batch of ``GEN_BATCH`` samples starts as pink-noise images when ``--preprocess`` says how images reach the
model (MobileNetV2, five seeds, all-INT8 agreement from the thresholds: optimised from 1/f pink noise 0.858,
that pink noise alone 0.819, photos 0.899; docs/results.md), else as N(0, 1) noise (dead-leaves images ranked
units worse), and is then optimised by Adam, in the model's input space, on what the model offers:
- **BatchNorm statistics** (ZeroQ, Cai et al. 2020; Sony MCT): for every BatchNormalization kept in the graph,
  the batch's per-channel mean and standard deviation at its input against its running statistics;
- **inversion** (DeepInversion, Yin et al. 2020): for a classifier (an output [N, classes]), cross-entropy
  toward a random target class per sample, so the batch covers confident, diverse outputs;
- **priors**: total variation (images are smooth between edges) and a small L2 pull, and, with
  ``--preprocess``, every value kept inside the range real pixels map to.
Seeded per batch: the same data whatever the analysis's batch size. The log and the record say which terms
were used and how far the statistics moved.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import DataError
from ..files import atomic_write_bytes
from ..network.model import LoadedModel
from ..progress import Progress
from .autograd import as_list, check_same, torch_module
from .datasets import Dataset, generated_dataset
from .generate import IMAGE_KINDS, PINK_NOISE, SYNTHESIZED
from .images import Preprocess

Reference = Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # feeds -> the model's outputs, in graph order
GEN_BATCH = 8  # samples optimised together (BatchNorm statistics are batch statistics)
STEPS = 12
LR = 0.01  # Adam's step, in the input's own units (a normalised pixel spans about 4.4); 0.1 and 0.03 ranked worse
TV, L2 = 0.05, 1e-4  # weights of the priors


@dataclass(frozen=True)
class BnTarget:
    tensor: str  # the BatchNormalization's input
    mean: np.ndarray
    std: np.ndarray


@dataclass(frozen=True)
class Synthesis:
    """What the generator optimised, for the log and the record."""

    terms: tuple[str, ...]  # "batchnorm (N layers)", "inversion (C classes)", "total variation", ...
    bn_before: float | None  # mean BatchNorm-statistics distance of the starting batches, and after
    bn_after: float | None
    confidence: float | None  # mean probability of the target class after optimising
    start: str = "noise N(0, 1)"  # what each batch started as

    def describe(self) -> str:
        text = f"from {self.start}: " + ", ".join(self.terms)
        if self.bn_before is not None:
            text += f"; BatchNorm statistics distance {self.bn_before:.3g} -> {self.bn_after:.3g}"
        if self.confidence is not None:
            text += f"; target-class probability {self.confidence:.2f}"
        return text


def bn_targets(model: onnx.ModelProto) -> list[BnTarget]:
    """Every BatchNormalization whose running statistics are initializers (the loader makes Constant nodes
    initializers): its input and those statistics."""
    consts, out = {t.name: t for t in model.graph.initializer}, []  # only the statistics are read as arrays
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or len(node.input) < 5:
            continue
        if node.input[3] in consts and node.input[4] in consts and node.input[0] not in consts:
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            var = numpy_helper.to_array(consts[node.input[4]]).astype(np.float64)
            out.append(BnTarget(node.input[0], numpy_helper.to_array(consts[node.input[3]]).astype(np.float32),
                                np.sqrt(var + eps).astype(np.float32)))
    return out


def _box(pre: Preprocess | None, channels: int, layout: str):
    """Per-channel bounds of real pixels after preprocessing, shaped to broadcast; None without --preprocess."""
    if pre is None:
        return None
    mean = np.array(pre.mean if len(pre.mean) > 1 else pre.mean * channels, np.float32)
    std = np.array(pre.std if len(pre.std) > 1 else pre.std * channels, np.float32)
    lo, hi = (0.0 - mean) / std, (255.0 * pre.scale - mean) / std
    shape = (1, channels, 1, 1) if layout == "nchw" else (1, 1, 1, channels)
    return np.minimum(lo, hi).reshape(shape), np.maximum(lo, hi).reshape(shape)


def synthesize(model: LoadedModel, dims: Sequence[int], n: int, seed: int, pre: Preprocess | None,
               reference: Reference, steps: int = STEPS, advance: Callable[[int], None] = lambda k: None,
               parts: Path | None = None) -> tuple[np.ndarray, Synthesis]:
    """``n`` samples for the model's one float input (per-sample ``dims``, batch axis first, size 1), and what
    was optimised. ``reference(feeds)``: the model's outputs as a backend computes them, which the gradient
    copy must reproduce; ``advance(k)`` is called after each batch with the samples done. ``parts``: a folder
    each finished batch is written to as it ends and read back from on the next call (a run resumes there; the
    caller names it by everything the batches depend on)."""

    targets = bn_targets(model.proto)
    module = None  # the gradient copy, made (and checked) when a batch is not on disk yet
    outputs = len(model.proto.graph.output)
    logits, classes = classifier_output(model.proto) or (None, 0)
    if not targets and logits is None:
        raise DataError("this model keeps no BatchNormalization statistics and has no classifier output: "
                        "nothing to optimise generated data toward. Use --calib pink-noise with --preprocess, "
                        "or your own data.")
    image = len(dims) == 4
    channel_axis = 1 if pre is None or pre.layout == "nchw" else 3
    box = _box(pre, dims[channel_axis], pre.layout) if pre is not None and image else None
    hw = ((2, 3) if channel_axis == 1 else (1, 2)) if image else None
    images = start_images(model, dims, n, seed, pre)
    samples, before, after, confidence = [], [], [], []
    for first in range(0, n, GEN_BATCH):
        count = min(GEN_BATCH, n - first)
        rng = np.random.default_rng([seed, first // GEN_BATCH])
        x0 = rng.standard_normal([count, *dims[1:]]).astype(np.float32)  # inside the pixel range after a step
        part = parts / f"{first // GEN_BATCH:06d}.npz" if parts is not None else None
        done = _read_part(part, x0.shape)
        if done is not None:
            x, moved = done
        else:
            if images is not None:  # the noise drawn all the same: the target classes stay the seed's
                x0 = next(iter(images.take(first, first + count).values())).astype(np.float32)
            if module is None:  # gradients of another function would make data for another model
                module = torch_module(model.proto, [t.tensor for t in targets])
                feeds = {model.inputs[0].name: x0}
                check_same(module, feeds, reference(feeds))
            labels = rng.integers(0, classes, count) if logits is not None else None
            loss = _Loss(targets, outputs, logits, labels, hw)
            x, moved = _optimise(module, x0, loss, steps, box)
            if part is not None:
                _write_part(part, x, moved)
        samples.append(x)
        before.append(moved[0])
        after.append(moved[1])
        if moved[2] is not None:
            confidence.append(moved[2])
        advance(first + count)
    terms = ([f"batchnorm statistics ({len(targets)} layers)"] if targets else []) + \
        ([f"inversion ({classes} classes)"] if logits is not None else []) + \
        (["total variation", "L2"] if image else ["L2"]) + (["pixel range"] if box is not None else [])
    info = Synthesis(tuple(terms), float(np.mean(before)) if targets else None,
                     float(np.mean(after)) if targets else None,
                     float(np.mean(confidence)) if confidence else None,
                     IMAGE_KINDS[PINK_NOISE] if images is not None else Synthesis.start)
    return np.concatenate(samples, axis=0), info


PASS = ("Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Expand", "Clip", "Max", "Add")
NORMS = ("ReduceL2", "Sqrt", "LpNormalization")


def _through(name: str, producers: dict) -> onnx.NodeProto | None:
    """The node that makes ``name``, looking through reshapes, clamps and epsilons."""
    node = producers.get(name)
    while node is not None and node.op_type in PASS:
        node = producers.get(node.input[0])
    return node


def classifier_output(model: onnx.ModelProto) -> tuple[int, int] | None:
    """The index of the graph output that holds class scores ([N, classes], at least two, not scaled to unit
    length as an embedding is: LpNormalization, or a Div by an L2 norm), and the number of classes; None when
    there is none (inversion needs one)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    for k, o in enumerate(model.graph.output):
        dims = o.type.tensor_type.shape.dim
        node = _through(o.name, producers)
        unit = node is not None and (node.op_type == "LpNormalization" or node.op_type == "Div" and (
            (by := _through(node.input[1], producers)) is not None and by.op_type in NORMS))
        if len(dims) == 2 and dims[1].dim_value >= 2 and not unit:
            return k, dims[1].dim_value
    return None


def start_images(model: LoadedModel, dims: Sequence[int], n: int, seed: int, pre: Preprocess | None) -> Dataset | None:
    """Pink-noise images preprocessed as photos, to start from, when ``pre`` says how images reach this model
    and they come out the size of ``dims``; else None (start from noise)."""
    if pre is None or len(dims) != 4:
        return None
    try:
        images = generated_dataset(model, n, seed, pre, PINK_NOISE)
        first = next(iter(images.take(0, 1).values()))
    except DataError:
        return None
    return images if tuple(first.shape[1:]) == tuple(dims[1:]) else None


@dataclass(frozen=True)
class _Loss:
    """What one batch is optimised toward (see the module docstring)."""

    targets: list[BnTarget]
    outputs: int  # the graph's own outputs; the BatchNorm inputs follow them in the module's result
    logits: int | None  # the classifier output's index
    labels: np.ndarray | None  # each sample's target class
    hw: tuple[int, int] | None  # the image axes total variation runs along; None: not an image

    def bn(self, result: list):
        """Mean over BatchNorm layers of |batch mean - running mean| + |batch std - running std|, each a
        per-channel L2 norm relative to the running std's norm."""
        import torch

        total = torch.zeros(())
        for f, t in zip(result[self.outputs:], self.targets, strict=True):
            axes = [0, *range(2, f.dim())]
            mean, std = f.mean(dim=axes), f.std(dim=axes, unbiased=False)
            scale = float(np.linalg.norm(t.std)) or 1.0
            total = total + (torch.linalg.norm(mean - torch.from_numpy(t.mean)) +
                             torch.linalg.norm(std - torch.from_numpy(t.std))) / scale
        return total / max(1, len(self.targets))

    def __call__(self, x, result: list):
        import torch

        loss = self.bn(result)
        if self.labels is not None:
            loss = loss + torch.nn.functional.cross_entropy(result[self.logits], torch.from_numpy(self.labels))
        if self.hw is not None:
            loss = loss + TV * (x.diff(dim=self.hw[0]).abs().mean() + x.diff(dim=self.hw[1]).abs().mean())
        return loss + L2 * x.square().mean()

    def confidence(self, result: list) -> float | None:
        """The mean probability of each sample's target class."""
        import torch

        if self.labels is None:
            return None
        probs = torch.softmax(result[self.logits], dim=1)
        return float(probs[torch.arange(len(self.labels)), torch.from_numpy(self.labels)].mean().detach())


def _read_part(path: Path | None, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple] | None:
    """A batch finished by an earlier run, or None (absent, or not what this batch would be: made again)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as f:
            x, moved = f["x"], [None if np.isnan(v) else float(v) for v in f["moved"]]
    except (OSError, ValueError, KeyError):
        return None
    return (x, tuple(moved)) if x.shape == shape and x.dtype == np.float32 else None


def _write_part(path: Path, x: np.ndarray, moved: tuple) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, moved=np.array([np.nan if v is None else v for v in moved], np.float64))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def _optimise(module, x0: np.ndarray, loss: _Loss, steps: int, box) -> tuple[np.ndarray, tuple]:
    """``x0`` after ``steps`` Adam steps on ``loss`` (clipped into ``box`` after each), and (BatchNorm distance
    before, after, target-class confidence after)."""
    import torch

    x = torch.tensor(x0, requires_grad=True)
    opt = torch.optim.Adam([x], lr=LR)
    start = None
    for _ in range(steps):
        result = as_list(module(x))
        start = float(loss.bn(result).detach()) if start is None else start
        opt.zero_grad()
        loss(x, result).backward()
        opt.step()
        if box is not None:
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, torch.from_numpy(box[1])), torch.from_numpy(box[0])))
    with torch.no_grad():
        result = as_list(module(x))
    end = float(loss.bn(result))
    return x.detach().numpy().astype(np.float32), (end if start is None else start, end, loss.confidence(result))


def input_dims(model: LoadedModel, what: str) -> list[int]:
    """The one float input's dims for one sample (batch axis 1); DataError when the model has another input
    or a dynamic dim (with the --shape that fixes it)."""
    specs = model.inputs
    if len(specs) != 1 or not np.issubdtype(specs[0].dtype, np.floating):
        raise DataError(f"{what} optimises one float input; this model has "
                        f"{', '.join(s.describe() for s in specs)}. Use --calib noise or your own data.")
    spec = specs[0]
    dims = [1 if k == spec.batch_axis else d for k, d in enumerate(spec.shape)]
    if spec.batch_axis != 0 or not all(isinstance(d, int) for d in dims):
        example = "x".join(str(d) if isinstance(d, int) else "N" for d in dims)
        raise DataError(f"{what} needs fixed sizes for input '{spec.name}' ({spec.describe()}): pass --shape "
                        f"{spec.name}:{example} with sizes for N.")
    return dims


def synthesized_dataset(model: LoadedModel, samples: int, seed: int, pre: Preprocess | None, reference: Reference,
                        progress: Progress | None = None, steps: int = STEPS, work: Path | None = None) -> Dataset:
    """``samples`` synthesized samples (``synthesize``) as a dataset; its details say what was optimised.
    ``work``: where finished batches are kept (``synthesized-<key>/``), so an interrupted run resumes."""
    progress = progress or Progress()
    dims = input_dims(model, f"--calib {SYNTHESIZED}")
    images = start_images(model, dims, 1, seed, pre)
    start = images.fingerprint if images is not None else "noise"  # it carries the pink-noise recipe
    key = [SYNTHESIZED, seed, steps, LR, TV, L2, GEN_BATCH, dims, samples, pre.to_json() if pre else None, start]
    fp = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    made_by = json.dumps([fp, model.sha256, model.fixed, list(model.measured)], sort_keys=True, default=str)
    parts = work / f"synthesized-{hashlib.sha256(made_by.encode()).hexdigest()[:16]}" if work else None
    kept = len(list(parts.glob("*.npz"))) if parts is not None and parts.is_dir() else 0
    if kept:
        progress.log(f"resuming the synthesis: {kept} finished batch{'es' if kept > 1 else ''} in {parts}")
    progress.start(f"synthesizing {samples} calibration samples", samples)
    done = [0]

    def advance(k: int) -> None:
        progress.advance(k - done[0])
        done[0] = k

    data, info = synthesize(model, dims, samples, seed, pre, reference, steps, advance, parts)
    progress.log(f"calibration data synthesized through the model: {info.describe()}")
    spec = model.inputs[0]
    details = {"seed": seed, "generator": f"synthesized ({steps} Adam steps per batch of {GEN_BATCH})",
               "optimised": info.describe(), **({"preprocess": pre.to_json()} if pre is not None else {})}
    return Dataset(model.inputs, samples, lambda lo, hi: {spec.name: data[lo:hi]}, "generated", "generated",
                   details, fp)
