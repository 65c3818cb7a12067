"""Image folders as model inputs: a small, declarative preprocessing (JSON or YAML)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass(frozen=True)
class Preprocess:
    """resize: short side in pixels (or [h, w]); crop: centre crop (int or [h, w]); the pixel value v becomes
    (v * scale - mean[c]) / std[c], with mean/std in the channel order the model receives (after ``color``)."""

    resize: int | tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "nchw"
    color: str = "rgb"

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _pair(value, key: str) -> int | tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (value[0], value[1])
    raise ConfigError(f"preprocessing key '{key}' must be a positive integer or [height, width], not {value!r}.")


def _floats(value, key: str) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"preprocessing key '{key}' must be a number or a list of numbers, not {value!r}.") from None
    if not out:
        raise ConfigError(f"preprocessing key '{key}' is empty.")
    return out


def load_preprocess(path: str | Path | None) -> Preprocess:
    """Read a preprocessing file (.json, .yaml or .yml); None gives the defaults."""
    if path is None:
        return Preprocess()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"preprocessing file '{path}' does not exist.")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as exc:
        raise ConfigError(f"preprocessing file '{path}' could not be parsed: {str(exc).splitlines()[0]}") from None
    return parse_preprocess(raw, f"preprocessing file '{path}'")


def parse_preprocess(raw, where: str) -> Preprocess:
    """Preprocessing from a mapping (a file's content, or what an analysis recorded); ``where`` names it."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must hold a mapping of keys to values.")
    allowed = {f.name for f in fields(Preprocess)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.")
    layout = str(raw.get("layout", "nchw")).lower()
    color = str(raw.get("color", "rgb")).lower()
    if layout not in ("nchw", "nhwc"):
        raise ConfigError(f"preprocessing 'layout' must be nchw or nhwc, not {layout!r}.")
    if color not in ("rgb", "bgr", "gray"):
        raise ConfigError(f"preprocessing 'color' must be rgb, bgr or gray, not {color!r}.")
    std = _floats(raw.get("std", 1.0), "std")
    if any(s == 0 for s in std):
        raise ConfigError("preprocessing 'std' must not contain 0.")
    return Preprocess(
        resize=_pair(raw.get("resize"), "resize"),
        crop=_pair(raw.get("crop"), "crop"),
        scale=_floats(raw.get("scale", 1.0 / 255.0), "scale")[0],
        mean=_floats(raw.get("mean", 0.0), "mean"),
        std=std,
        layout=layout,
        color=color,
    )


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: Path, pre: Preprocess, size: tuple[int, int] | None) -> np.ndarray:
    """One image as a float32 array [1, C, H, W] (or [1, H, W, C]); ``size`` forces (h, w) when no
    resize/crop is configured (the model's fixed input size)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if pre.color == "gray" else "RGB")
            im.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image '{path}': {exc}") from None
    return preprocess_image(im, pre, size, str(path))


def preprocess_image(im, pre: Preprocess, size: tuple[int, int] | None, name: str = "image") -> np.ndarray:
    """A PIL image (RGB or L) through ``pre``, as ``load_image`` does for a file: [1, C, H, W] float32 (or
    NHWC). Generated images (data.generate) take the same path as photos."""
    from PIL import Image

    im = im.convert("L" if pre.color == "gray" else "RGB")
    if pre.resize is not None:
        if isinstance(pre.resize, int):
            w, h = im.size
            k = pre.resize / min(w, h)
            im = im.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR)
        else:
            im = im.resize((pre.resize[1], pre.resize[0]), Image.BILINEAR)
    if pre.crop is not None:
        ch, cw = (pre.crop, pre.crop) if isinstance(pre.crop, int) else pre.crop
        w, h = im.size
        if ch > h or cw > w:
            raise DataError(f"image '{name}' is {w}x{h} after resizing, smaller than the crop {cw}x{ch}.")
        left, top = (w - cw) // 2, (h - ch) // 2
        im = im.crop((left, top, left + cw, top + ch))
    if pre.resize is None and pre.crop is None and size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    a = np.asarray(im, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    if pre.color == "bgr":
        a = a[:, :, ::-1]
    channels = a.shape[2]
    mean = np.array(pre.mean if len(pre.mean) > 1 else pre.mean * channels, np.float32)
    std = np.array(pre.std if len(pre.std) > 1 else pre.std * channels, np.float32)
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"preprocessing 'mean'/'std' need {channels} values (one per channel) or a single one.")
    a = (a * np.float32(pre.scale) - mean) / std
    if pre.layout == "nchw":
        a = a.transpose(2, 0, 1)
    return np.ascontiguousarray(a[None], dtype=np.float32)
