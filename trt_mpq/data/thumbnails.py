"""A strip of the first calibration samples as images, when they were generated: what the analysis saw."""

from __future__ import annotations

import io

import numpy as np

from .datasets import Dataset

SHOWN = 8  # samples in the strip
SIDE = 96  # pixels per thumbnail (the longer side)


def _image(x: np.ndarray) -> np.ndarray | None:
    """One sample [C, H, W] or [H, W, C] (C 1 or 3) as uint8 [H, W, C], each channel stretched to 0-255."""
    if x.ndim != 3:
        return None
    if x.shape[0] in (1, 3) and x.shape[2] not in (1, 3):
        x = x.transpose(1, 2, 0)
    if x.shape[2] not in (1, 3) or min(x.shape[:2]) < 4:
        return None
    lo, hi = x.min(axis=(0, 1), keepdims=True), x.max(axis=(0, 1), keepdims=True)
    scaled = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
    return (np.nan_to_num(scaled) * 255).round().astype(np.uint8)


def thumbnails(data: Dataset) -> bytes | None:
    """A PNG strip of the first ``SHOWN`` samples of an image-like input (4-D, 1 or 3 channels), or None."""
    from PIL import Image

    if len(data.model_inputs) != 1:
        return None
    first = next(iter(data.take(0, min(SHOWN, data.num_samples)).values()))
    if first.ndim != 4 or not np.issubdtype(first.dtype, np.floating):
        return None
    tiles = []
    for sample in first:
        image = _image(np.asarray(sample, np.float32))
        if image is None:
            return None
        tile = Image.fromarray(image.squeeze(-1) if image.shape[2] == 1 else image)
        tile.thumbnail((SIDE, SIDE), Image.NEAREST if max(image.shape[:2]) < SIDE else Image.BILINEAR)
        if max(tile.size) < SIDE:  # tiny inputs (8x8 digits) blown up, pixels kept square
            k = SIDE // max(tile.size)
            tile = tile.resize((tile.size[0] * k, tile.size[1] * k), Image.NEAREST)
        tiles.append(tile.convert("RGB"))
    strip = Image.new("RGB", (sum(t.size[0] + 4 for t in tiles), max(t.size[1] for t in tiles)), "white")
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.size[0] + 4
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return buf.getvalue()
