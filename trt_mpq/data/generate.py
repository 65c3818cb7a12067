"""Generated data, when no calibration data is given: images drawn in pixel space, and integer inputs shaped
as real ones are (indices inside their table, attention masks padded).

With ``--preprocess`` and no data, **pink noise and textured dead leaves**, one or the other per image
(``--calib pink-and-leaves``, below). **Pink noise** (``--calib pink-noise``): Gaussian noise whose
amplitude spectrum falls as 1/f^a, as photos' does (a drawn per image over 1.0-1.8, the 10th to 90th
percentile of the MobileNetV2 photos' own: 0.95-1.86; a = 1 for all gave the first layers thresholds that
cost photos' all-INT8 agreement 0.04, docs/results.md), mostly luminance (photos' colour channels move
together: each channel is the image's luminance plus a 0.3 share of its own noise), at a mean brightness, a
colour cast and an RMS contrast drawn per image, the contrast log-uniform over 15-90 grey levels (the 10th to
90th percentile of the MobileNetV2 photos' own is 15-74). Its local contrast varies over the image as photos'
does (flat regions beside textured ones: a Gaussian scale mixture, the field times exp(s m), m a smooth
1/f^2.5 field, s uniform over 0.3-1.5 per image): the kurtosis of an image's horizontal gradient is then 7-11
in the median, as the photos' (6-11; a plain Gaussian field's is 0), and units' INT8 sensitivity ranks as new
photos rank it (docs/results.md, issue 22). What made the difference, measured one at a time: the 1/f
spectrum (white noise is 8x rougher than photos, and the early layers then look 5-50x less sensitive than
photos make them), a contrast that varies from image to image (fixed low it ranks well but its thresholds clip
photos: all-INT8 agreement 0.2-0.3; fixed at photos' own it ranks at 0.6), correlated colour (0.92 with
independent channels, 0.95 with one luminance), photos' steeper slopes (1/f alone: Spearman 0.952) and the
varying local contrast (0.963 without it, 0.970 with it over ten seeds). On PP-OCRv4 (its 5 images) it ranks
as noise does (0.90-0.92 against 0.91).

**Textured dead leaves** draw what pink noise lacks, occlusion: ``DISKS`` opaque disks as in the dead-leaves
model below, each leaf with its own brightness and colour and its own contrast (5-60 grey levels) of one
shared 1/f texture. Alone their mid layers' activations reach photos' and their last layers' stay half as
large; pink noise has the opposite, so the default draws the two in turns (``draw_image``). On MobileNetV2
over 20 seeds: all-INT8 agreement 0.869 against pink noise's 0.864 and the photos' 0.885 (12 orders), Spearman
0.970 as pink noise's, KL 0.146 against 0.142 and the photos' 0.150; at 16 samples agreement 0.877 against
pink noise's 0.858 (docs/results.md, eleventh session).

The dead-leaves model (``--calib dead-leaves``; Matheron; Lee, Mumford and Huang 2001) draws photos' other
side, smooth regions bounded by edges: opaque disks of random colour dropped on top of each other, radii from
a power law (density r^-3, which makes the image scale-invariant), rendered at twice the size and averaged
down so edges are anti-aliased, plus a faint 1/f texture inside the flat regions. An option: on MobileNetV2
it ranks units' INT8 sensitivity worse than input-shaped noise (Spearman 0.70 against 0.83) while its
thresholds serve all-INT8 better (top-1 agreement 0.844 against 0.815; photos 0.889).

Both go through ``--preprocess`` as photos would (``images.preprocess_image``), so the model sees its own
normalisation. Seeded per sample: the same data whatever the batch size.
"""

from __future__ import annotations

import numpy as np
import onnx

DEAD_LEAVES = "dead-leaves"  # its name on the command line: --calib dead-leaves
PINK_NOISE = "pink-noise"  # --calib pink-noise
PINK_AND_LEAVES = "pink-and-leaves"  # --calib pink-and-leaves: the default with --preprocess
GENERATED = "generated"  # --calib generated, the default: one of the others, chosen by what the model offers
NOISE = "noise"  # --calib noise: noise shaped like the inputs (datasets.generated_dataset)
SYNTHESIZED = "synthesized"  # --calib synthesized: optimised through the model (data.synthesis)
DISKS = 2500  # per image: enough that the last ones dropped cover it several times over
R_MIN, R_MAX = 0.008, 0.6  # radii as fractions of the image's longer side
TEXTURE = 6.0  # grey levels of the 1/f texture's standard deviation
CONTRAST = (15.0, 90.0)  # RMS contrast in grey levels, log-uniform per image
SLOPE = (1.0, 1.8)  # the amplitude spectrum falls as 1/f^slope, slope uniform per image (photos': 0.95-1.86)
BRIGHTNESS = (60.0, 190.0)  # mean grey level, uniform per image
CHROMA = 0.3  # each channel's own noise, relative to the luminance's
ENVELOPE = (0.3, 1.5)  # log-standard deviation of the local contrast, uniform per image
ENVELOPE_SLOPE = 2.5  # the local contrast's own spectrum: smooth, regions rather than pixels
CAST = 15.0  # grey levels of a per-image colour cast (standard deviation per channel)
LEAF_SPREAD, LEAF_CHROMA = 40.0, 25.0  # textured leaves: grey levels between leaves' brightness, colour
LEAF_CONTRAST = (5.0, 60.0)  # ... and each leaf's texture contrast in grey levels, log-uniform
GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0  # image i of a mixed kind takes the model frac(i * GOLDEN) points at
# The medians ``image_statistics`` gives on the MobileNetV2 photos: its 72 calibration and 135 eval photos
# (preprocessed, grey; docs/results.md, issue 22).
PHOTOS_SLOPE, PHOTOS_KURTOSIS = (1.30, 1.47), (6.4, 10.9)
INDEX_PASSTHROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}


def _radii(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """Radii with density proportional to r^-3 on [lo, hi] (inverse CDF)."""
    u = rng.random(n)
    return (lo ** -2 - u * (lo ** -2 - hi ** -2)) ** -0.5


def _texture(rng: np.random.Generator, h: int, w: int, slope: float = 1.0) -> np.ndarray:
    """Gaussian noise with a 1/f^slope amplitude spectrum, unit standard deviation."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f ** slope
    spectrum[0, 0] = 0.0
    t = np.fft.irfft2(spectrum, s=(h, w))
    return t / max(float(t.std()), 1e-12)


def _disks(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """The index of the disk on top at each pixel of an h x w image (-1 where none): ``DISKS`` opaque disks
    dropped one on another, radii from ``_radii`` (later ones occlude)."""
    side = max(h, w)
    radii = _radii(rng, DISKS, R_MIN * side, R_MAX * side)
    centres = rng.uniform(0, 1, (DISKS, 2)) * (h, w)
    top = np.full((h, w), -1, np.int32)
    for i, ((cy, cx), r) in enumerate(zip(centres, radii, strict=True)):
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        top[y0:y1, x0:x1][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return top


def _colour_texture(rng: np.random.Generator, h: int, w: int, slope: float, channels: int) -> np.ndarray:
    """A 1/f^slope field [h, w, channels], mostly luminance: each channel is the shared field plus a
    ``CHROMA`` share of its own (unit standard deviation)."""
    img = _texture(rng, h, w, slope)[:, :, None]
    if channels > 1:
        own = np.stack([_texture(rng, h, w, slope) for _ in range(channels)], axis=-1)
        img = (img + CHROMA * own) / np.sqrt(1.0 + CHROMA ** 2)
    return img


def dead_leaves(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    """One uint8 image [h, w, channels] of the dead-leaves model (see the module docstring)."""
    H, W = 2 * h, 2 * w
    background = rng.uniform(0, 255, channels)
    top = _disks(rng, H, W)
    grey = rng.uniform(0, 255, DISKS)
    colours = np.clip(grey[:, None] + rng.normal(0, 40, (DISKS, channels)), 0, 255)
    img = np.where(top[:, :, None] >= 0, colours[top], background).astype(np.float32)
    img = img.reshape(h, 2, w, 2, channels).mean(axis=(1, 3))
    img += TEXTURE * _texture(rng, h, w)[:, :, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def textured_leaves(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    """One uint8 image [h, w, channels] of dead leaves that each carry their own brightness, colour and
    contrast of one shared 1/f texture (see the module docstring)."""
    top = _disks(rng, h, w)
    top = np.where(top < 0, DISKS, top)  # uncovered pixels: one more leaf
    slope = float(rng.uniform(*SLOPE))
    grey = rng.uniform(*BRIGHTNESS) + rng.normal(0, LEAF_SPREAD, DISKS + 1)
    colour = grey[:, None] + rng.normal(0, LEAF_CHROMA, (DISKS + 1, channels))
    gain = np.exp(rng.uniform(*np.log(LEAF_CONTRAST), DISKS + 1))
    img = colour[top] + gain[top][:, :, None] * _colour_texture(rng, h, w, slope, channels)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def pink_noise(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    """One uint8 image [h, w, channels] of 1/f noise (see the module docstring)."""
    contrast = float(np.exp(rng.uniform(*np.log(CONTRAST))))
    slope = float(rng.uniform(*SLOPE))
    img = _colour_texture(rng, h, w, slope, channels)
    envelope = np.exp(rng.uniform(*ENVELOPE) * _texture(rng, h, w, ENVELOPE_SLOPE))[:, :, None]
    img = img * envelope / np.sqrt(np.mean(envelope ** 2))  # the RMS contrast stays the one drawn
    img = img * contrast + rng.uniform(*BRIGHTNESS)
    if channels > 1:
        img = img + rng.normal(0.0, CAST, channels)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def image_statistics(grey: np.ndarray) -> tuple[float, float]:
    """Medians over images [N, H, W] of the amplitude spectrum's log-log slope (radially averaged, Hann window,
    4 cycles up to 0.4 of the shorter side) and of the excess kurtosis of the horizontal gradient (0 for a
    Gaussian field; large where flat regions sit beside textured ones)."""
    _, h, w = grey.shape
    window = np.hanning(h)[:, None] * np.hanning(w)[None, :]
    y, x = np.indices((h, w))
    r = np.hypot(y - h // 2, x - w // 2).astype(int)
    k = np.arange(4, max(int(0.4 * min(h, w)), 6))
    slopes, kurtoses = [], []
    for g in grey.astype(np.float64):
        amplitude = np.abs(np.fft.fftshift(np.fft.fft2((g - g.mean()) * window)))
        radial = np.bincount(r.ravel(), amplitude.ravel(), minlength=k[-1] + 1) / np.maximum(
            np.bincount(r.ravel(), minlength=k[-1] + 1), 1)
        slopes.append(-np.polyfit(np.log(k), np.log(np.maximum(radial[k], 1e-12)), 1)[0])
        d = np.diff(g, axis=1).ravel()
        d = d - d.mean()
        kurtoses.append(np.mean(d ** 4) / max(np.mean(d ** 2) ** 2, 1e-24) - 3.0)
    return float(np.median(slopes)), float(np.median(kurtoses))


def describe_statistics(images: list[np.ndarray]) -> str:
    """``image_statistics`` of uint8 images [H, W, C] in words, next to photos' own."""
    if min(images[0].shape[:2]) < 16:
        return "too small to compare with photos' statistics"
    slope, kurtosis = image_statistics(np.stack([i.mean(axis=2) for i in images]))
    return (f"spectral slope {slope:.2f} and gradient kurtosis {kurtosis:.1f} in the median of {len(images)} "
            f"(photos' medians: {PHOTOS_SLOPE[0]:.2f}-{PHOTOS_SLOPE[1]:.2f} and "
            f"{PHOTOS_KURTOSIS[0]}-{PHOTOS_KURTOSIS[1]})")


# --calib name -> the models its images are drawn from, in turn (``draw_image``)
IMAGES = {PINK_NOISE: (pink_noise,), PINK_AND_LEAVES: (pink_noise, textured_leaves), DEAD_LEAVES: (dead_leaves,)}
IMAGE_KINDS = {PINK_NOISE: "pink-noise images (1/f^a spectrum, a in 1.0-1.8; local contrast varied)",
               PINK_AND_LEAVES: "pink-and-leaves images (pink noise or textured dead leaves, one or the other "
                                "per image)",
               DEAD_LEAVES: "dead-leaves images"}
# What the images depend on besides the seed: part of a dataset's fingerprint, so that results kept from an
# earlier version of a generator are not taken for this one's.
RECIPES = {PINK_NOISE: [SLOPE, CONTRAST, BRIGHTNESS, CHROMA, CAST, ENVELOPE, ENVELOPE_SLOPE],
           DEAD_LEAVES: [DISKS, R_MIN, R_MAX, TEXTURE]}
RECIPES[PINK_AND_LEAVES] = [*RECIPES[PINK_NOISE], DISKS, R_MIN, R_MAX, LEAF_SPREAD, LEAF_CHROMA, LEAF_CONTRAST,
                            "golden"]


def draw_image(kind: str, seed: int, i: int, h: int, w: int, channels: int = 3) -> np.ndarray:
    """Image ``i`` of ``kind`` under ``seed`` (uint8 [h, w, channels]), the same whatever the batch: its own
    generator from (seed, i). A kind of several models takes model floor(k * frac(i * golden ratio)) for image
    i: near equal shares in the first n images and in every n-th one (the analysis's batches; 9 and 7 of the
    first 16), where drawing the model at random left 16 images unbalanced enough to rank MobileNetV2's units
    at Spearman 0.92 instead of 0.97 (docs/results.md)."""
    models = IMAGES[kind]
    draw = models[int(len(models) * ((i * GOLDEN) % 1.0))]
    return draw(np.random.default_rng([seed, i]), h, w, channels)


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
