"""Preprocessing files and image folders (trt_mpq.data.images); every image is drawn with PIL."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_models import (
    collect,
    image_model,
)
from trt_mpq.data.datasets import load_dataset
from trt_mpq.data.images import Preprocess, load_image, load_preprocess
from trt_mpq.errors import ConfigError, DataError

# ----------------------------------------------------------------------------------------------- preprocessing files


def test_load_preprocess_none_gives_the_defaults():
    pre = load_preprocess(None)
    assert pre == Preprocess()
    assert pre.layout == "nchw" and pre.color == "rgb" and pre.scale == pytest.approx(1 / 255)


def test_load_preprocess_json(tmp_path):
    path = tmp_path / "pre.json"
    path.write_text(json.dumps({"resize": 256, "crop": [224, 200], "scale": 0.5, "mean": [0.485, 0.456, 0.406],
                                "std": [0.229, 0.224, 0.225], "layout": "NHWC", "color": "BGR"}))
    pre = load_preprocess(path)
    assert pre.resize == 256 and pre.crop == (224, 200) and pre.scale == 0.5
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406)) and pre.std == pytest.approx((0.229, 0.224, 0.225))
    assert pre.layout == "nhwc" and pre.color == "bgr"
    assert pre.to_json()["crop"] == (224, 200)


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_load_preprocess_yaml(tmp_path, suffix):
    path = tmp_path / f"pre{suffix}"
    path.write_text("resize: [10, 12]\ncrop: 8\nmean: 0.5\nstd: 0.25\ncolor: gray\n")
    pre = load_preprocess(path)
    assert pre.resize == (10, 12) and pre.crop == 8
    assert pre.mean == (0.5,) and pre.std == (0.25,)
    assert pre.color == "gray" and pre.layout == "nchw" and pre.scale == pytest.approx(1 / 255)


def _pre_file(tmp_path, content: dict):
    path = tmp_path / "pre.json"
    path.write_text(json.dumps(content))
    return path


def test_load_preprocess_unknown_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_preprocess(_pre_file(tmp_path, {"means": [0.5], "resize": 4}))
    msg = str(err.value)
    assert "unknown keys means" in msg and "allowed:" in msg and "mean" in msg


@pytest.mark.parametrize("content, words", [
    ({"layout": "chw"}, ["layout", "nchw or nhwc", "chw"]),
    ({"color": "hsv"}, ["color", "rgb, bgr or gray", "hsv"]),
    ({"std": [0.5, 0, 0.5]}, ["std", "must not contain 0"]),
    ({"std": 0}, ["std", "must not contain 0"]),
    ({"resize": -3}, ["resize", "positive integer"]),
    ({"crop": [1, 2, 3]}, ["crop", "[height, width]"]),
    ({"mean": ["a"]}, ["mean", "number"]),
    ({"mean": []}, ["mean", "empty"]),
])
def test_load_preprocess_bad_values(tmp_path, content, words):
    with pytest.raises(ConfigError) as err:
        load_preprocess(_pre_file(tmp_path, content))
    for w in words:
        assert w in str(err.value)


def test_load_preprocess_missing_unparsable_or_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_preprocess(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{resize: ")
    with pytest.raises(ConfigError, match="could not be parsed"):
        load_preprocess(tmp_path / "broken.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_preprocess(tmp_path / "list.yaml")


# ----------------------------------------------------------------------------------------------- image folders


def _up2(n: int) -> np.ndarray:
    """The [2n, n] matrix of a 2x bilinear upscale with half-pixel centres and clamped edges (PIL BILINEAR)."""
    u = np.zeros((2 * n, n))
    for m in range(n):
        u[2 * m, m] += 0.75
        u[2 * m, max(m - 1, 0)] += 0.25
        u[2 * m + 1, m] += 0.75
        u[2 * m + 1, min(m + 1, n - 1)] += 0.25
    return u


def _pixels(h, w, seed=0):
    """An RGB image whose values are multiples of 16, so a 2x bilinear upscale stays exact in uint8."""
    return (np.random.default_rng(seed).integers(0, 16, size=(h, w, 3)) * 16).astype(np.uint8)


def _upscale2(px: np.ndarray) -> np.ndarray:
    h, w, _ = px.shape
    uh, uw = _up2(h), _up2(w)
    return np.stack([uh @ px[:, :, c].astype(np.float64) @ uw.T for c in range(3)], axis=-1)


def _image_folder(tmp_path, images: dict, name="images"):
    folder = tmp_path / name
    folder.mkdir()
    for fname, px in images.items():
        Image.fromarray(px).save(folder / fname)
    return folder


def _pre(tmp_path, content):
    return load_preprocess(_pre_file(tmp_path, content))


def test_image_folder_nchw_resize_crop_mean_std_bgr(tmp_path):
    model = image_model(tmp_path)
    px = _pixels(4, 6)  # h=4, w=6; resize 8 (short side) -> 8x12; centre crop 8 -> columns 2..9
    folder = _image_folder(tmp_path, {"a.png": px})
    mean, std, scale = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0], 1 / 255
    pre = _pre(tmp_path, {"resize": 8, "crop": 8, "mean": mean, "std": std, "color": "bgr"})
    ds = load_dataset(model, folder, pre)
    assert ds.num_samples == 1 and ds.kind == "images" and ds.details["preprocess"]["color"] == "bgr"
    got = ds.take(0, 1)["image"]
    assert got.shape == (1, 3, 8, 8) and got.dtype == np.float32

    resized = _upscale2(px)
    assert resized.shape == (8, 12, 3)
    crop = resized[:, 2:10, ::-1]  # bgr: channel order reversed before mean/std
    expected = ((crop * scale - np.array(mean)) / np.array(std)).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_image_folder_nhwc_crop(tmp_path):
    model = image_model(tmp_path, shape=("batch", 4, 5, 3))
    px = _pixels(7, 8, seed=1)  # crop [4, 5]: top (7-4)//2=1, left (8-5)//2=1
    folder = _image_folder(tmp_path, {"a.png": px, "b.png": _pixels(7, 8, seed=2)})
    pre = _pre(tmp_path, {"crop": [4, 5], "scale": 1.0, "mean": 100.0, "std": 50.0, "layout": "nhwc"})
    ds = load_dataset(model, folder, pre)
    got = ds.take(0, 2)["image"]
    assert got.shape == (2, 4, 5, 3)
    expected_a = (px[1:5, 1:6, :].astype(np.float64) - 100.0) / 50.0
    np.testing.assert_allclose(got[0], expected_a, atol=1e-6)


def test_image_is_resized_to_the_model_size_without_resize_or_crop(tmp_path):
    model = image_model(tmp_path)  # [batch,3,8,8]
    px = _pixels(4, 4, seed=3)
    folder = _image_folder(tmp_path, {"a.png": px})
    got = load_dataset(model, folder).take(0, 1)["image"]  # default preprocessing: v / 255, rgb, nchw
    expected = (_upscale2(px) / 255.0).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_gray_images(tmp_path):
    model = image_model(tmp_path, shape=("batch", 1, 3, 3))
    px = np.arange(9, dtype=np.uint8).reshape(3, 3) * 20
    folder = tmp_path / "gray"
    folder.mkdir()
    Image.fromarray(px, mode="L").save(folder / "g.png")
    got = load_dataset(model, folder, Preprocess(color="gray", scale=1.0)).take(0, 1)["image"]
    np.testing.assert_allclose(got, px[None, None].astype(np.float32))


def test_image_batches_follow_file_order(tmp_path):
    model = image_model(tmp_path, shape=("batch", 3, 2, 2))
    imgs = {f"{i}.png": np.full((2, 2, 3), 10 * i, np.uint8) for i in range(5)}
    ds = load_dataset(model, _image_folder(tmp_path, imgs), Preprocess(scale=1.0), limit=4)
    assert ds.num_samples == 4
    got, sizes = collect(ds, 3)
    assert sizes == [3, 1]
    np.testing.assert_allclose(got["image"][:, 0, 0, 0], [0, 10, 20, 30])


def test_mean_std_with_the_wrong_number_of_values(tmp_path):
    model = image_model(tmp_path)
    folder = _image_folder(tmp_path, {"a.png": _pixels(8, 8)})
    with pytest.raises(ConfigError, match="3 values"):
        load_dataset(model, folder, Preprocess(mean=(0.1, 0.2)))


def test_crop_larger_than_the_image(tmp_path):
    model = image_model(tmp_path)
    folder = _image_folder(tmp_path, {"small.png": _pixels(6, 6)})
    with pytest.raises(DataError, match=r"'.*small\.png' is 6x6 .* smaller than the crop 8x8"):
        load_dataset(model, folder, Preprocess(crop=8))


@pytest.mark.parametrize("content", [b"not an image", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00"])
def test_corrupt_image_names_the_file(tmp_path, content):
    model = image_model(tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(content)
    with pytest.raises(DataError) as err:
        load_dataset(model, folder)
    assert "cannot read image" in str(err.value) and "broken.png" in str(err.value)


def test_corrupt_image_later_in_the_folder(tmp_path):
    model = image_model(tmp_path)
    folder = _image_folder(tmp_path, {"a.png": _pixels(8, 8)})
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    ds = load_dataset(model, folder)
    with pytest.raises(DataError, match=r"cannot read image '.*b\.jpg'"):
        list(ds.batches(2))


def test_images_of_different_sizes_into_a_dynamic_size_model(tmp_path):
    model = image_model(tmp_path, shape=("batch", 3, "h", "w"))
    folder = _image_folder(tmp_path, {"a.png": _pixels(8, 8), "b.png": _pixels(6, 10)})
    ds = load_dataset(model, folder)
    assert [f["image"].shape for f in ds.batches(1)] == [(1, 3, 8, 8), (1, 3, 6, 10)]
    with pytest.raises(DataError) as err:
        list(ds.batches(2))
    msg = str(err.value)
    assert "different sizes" in msg and "'resize'" in msg and "'crop'" in msg


def test_image_folder_needs_one_4d_float_input(tmp_path, ab_model):
    folder = _image_folder(tmp_path, {"a.png": _pixels(4, 4)})
    with pytest.raises(DataError, match="one 4-D float input.*a float32.*b float32.*npz"):
        load_dataset(ab_model, folder)


def test_load_image_returns_float32_nchw(tmp_path):
    px = _pixels(3, 5)
    Image.fromarray(px).save(tmp_path / "a.bmp")
    a = load_image(tmp_path / "a.bmp", Preprocess(scale=2.0, mean=(1.0,), std=(4.0,)), None)
    assert a.dtype == np.float32 and a.shape == (1, 3, 3, 5) and a.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(a[0], ((px * 2.0 - 1.0) / 4.0).transpose(2, 0, 1))
