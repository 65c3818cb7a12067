"""Generated data, when no calibration data is given: images drawn in pixel space, and integer inputs shaped
as real ones are (indices inside their table, attention masks padded).

Noise shaped like the input (N(0, 1) per value) ranks a CNN's layers differently from photos: its every pixel
is independent, photos are smooth regions bounded by edges, with a power spectrum falling as 1/f. The
dead-leaves model (Matheron; Lee, Mumford and Huang 2001) draws exactly that without a photo: opaque disks of
random colour dropped on top of each other, radii from a power law (density r^-3, which makes the image
scale-invariant), rendered at twice the size and averaged down so edges are anti-aliased, plus a faint 1/f
texture inside the flat regions. The images then go through ``--preprocess`` as photos would
(``images.preprocess_image``), so the model sees its own normalisation. Seeded per sample: the same data
whatever the batch size.

An option (``--calib dead-leaves``), not the default: on MobileNetV2 against its 72 calibration photos
(scripts/benchmark_generated.py) it ranks units' INT8 sensitivity worse than input-shaped noise (Spearman 0.70
against 0.83; 7 against 6 of the 10 most sensitive shared) while its thresholds serve all-INT8 better (top-1
agreement 0.844 against 0.815; photos 0.889).
"""

from __future__ import annotations

import numpy as np
import onnx

DEAD_LEAVES = "dead-leaves"  # its name on the command line: --calib dead-leaves
GENERATED = "generated"  # --calib generated: the default, noise shaped like the inputs (datasets.generated_dataset)
SYNTHESIZED = "synthesized"  # --calib synthesized: optimised through the model (data.synthesis)
DISKS = 2500  # per image: enough that the last ones dropped cover it several times over
R_MIN, R_MAX = 0.008, 0.6  # radii as fractions of the image's longer side
TEXTURE = 6.0  # grey levels of the 1/f texture's standard deviation
INDEX_PASSTHROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}


def _radii(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """Radii with density proportional to r^-3 on [lo, hi] (inverse CDF)."""
    u = rng.random(n)
    return (lo ** -2 - u * (lo ** -2 - hi ** -2)) ** -0.5


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gaussian noise with a 1/f amplitude spectrum, unit standard deviation."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f
    spectrum[0, 0] = 0.0
    t = np.fft.irfft2(spectrum, s=(h, w))
    return t / max(float(t.std()), 1e-12)


def dead_leaves(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    """One uint8 image [h, w, channels] of the dead-leaves model (see the module docstring)."""
    H, W = 2 * h, 2 * w
    side = max(H, W)
    img = np.empty((H, W, channels), np.float32)
    img[:] = rng.uniform(0, 255, channels)
    radii = _radii(rng, DISKS, R_MIN * side, R_MAX * side)  # in the order dropped: later ones occlude
    centres = rng.uniform(0, 1, (DISKS, 2)) * (H, W)
    grey = rng.uniform(0, 255, DISKS)
    colours = np.clip(grey[:, None] + rng.normal(0, 40, (DISKS, channels)), 0, 255)
    for (cy, cx), r, c in zip(centres, radii, colours, strict=True):
        y0, y1 = max(0, int(cy - r)), min(H, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(W, int(cx + r) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[y0:y1, x0:x1][inside] = c
    img = img.reshape(h, 2, w, 2, channels).mean(axis=(1, 3))
    img += TEXTURE * _texture(rng, h, w)[:, :, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def index_bound(model: onnx.ModelProto, name: str) -> int | None:
    """Size of the smallest table an integer input indexes through Gather (following Cast/Reshape/...)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    bounds, frontier, seen = [], [name], set()
    while frontier:
        t = frontier.pop()
        seen.add(t)
        for node in g.node:
            if t not in node.input:
                continue
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == t and node.input[0] in inits:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                bounds.append(int(inits[node.input[0]].dims[axis]))
            elif node.op_type in INDEX_PASSTHROUGH and node.input[0] == t:
                frontier.extend(o for o in node.output if o not in seen)
    return min(bounds) if bounds else None


def is_mask(spec) -> bool:
    """An attention-style mask: an integer or boolean [batch, seq] input named like one (attention_mask)."""
    integral = np.issubdtype(spec.dtype, np.integer) or spec.dtype == np.bool_
    return integral and len(spec.shape) == 2 and spec.batch_axis == 0 and "mask" in spec.name.lower()


def padding_mask(rng: np.random.Generator, dims, dtype) -> np.ndarray:
    """A mask as a padded batch has it: ones for a random length (at least one position), then zeros."""
    length = int(rng.integers(1, dims[-1] + 1))
    mask = np.zeros(dims, dtype=dtype)
    mask[..., :length] = 1
    return mask
