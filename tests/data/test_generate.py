"""Images generated in pixel space (data/generate.py) and fed through the preprocessing as photos are."""

import numpy as np
import pytest

import builders
from trt_mpq.data import generate
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.data.generate import (
    CONTRAST,
    DISKS,
    dead_leaves,
    draw_image,
    image_statistics,
    pink_noise,
    textured_leaves,
)
from trt_mpq.data.images import Preprocess
from trt_mpq.errors import ConfigError
from trt_mpq.network.model import load_model


def _slope(img: np.ndarray) -> float:
    """The log-log slope of the radially averaged power spectrum of a grey image."""
    g = img.mean(axis=2) - img.mean()
    power = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    h, w = g.shape
    y, x = np.indices(g.shape)
    r = np.hypot(y - h // 2, x - w // 2).astype(int)
    radial = np.bincount(r.ravel(), power.ravel()) / np.bincount(r.ravel())
    k = np.arange(4, min(h, w) // 2)
    return float(np.polyfit(np.log(k), np.log(radial[k]), 1)[0])


def test_dead_leaves_images_have_a_natural_spectrum_and_depend_on_the_seed_alone():
    a = dead_leaves(np.random.default_rng([0, 3]), 96, 128)
    assert a.shape == (96, 128, 3) and a.dtype == np.uint8 and a.std() > 20
    assert np.array_equal(a, dead_leaves(np.random.default_rng([0, 3]), 96, 128))
    assert not np.array_equal(a, dead_leaves(np.random.default_rng([0, 4]), 96, 128))
    # photographs fall as 1/f^2 in power (slope about -2); white noise is flat (0)
    assert -3.2 < _slope(a.astype(np.float64)) < -1.4
    noise = np.random.default_rng(0).integers(0, 255, (96, 128, 3)).astype(np.float64)
    assert abs(_slope(noise)) < 0.3


def test_pink_noise_images_have_photos_spectrum_correlated_colour_and_varied_contrast():
    imgs = [pink_noise(np.random.default_rng([0, i]), 128, 128) for i in range(24)]
    a = imgs[0]
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(a, pink_noise(np.random.default_rng([0, 0]), 128, 128))
    assert not np.array_equal(a, imgs[1])
    # 1/f^a in amplitude, a drawn per image over photos' own range (1.0-1.8): -2 to -3.6 in power
    slopes = np.array([_slope(i.astype(np.float64)) for i in imgs])
    assert -3.9 < slopes.min() and slopes.max() < -1.7 and slopes.max() - slopes.min() > 0.6
    # the channels move together (photos' colour is mostly luminance), not as independent noises
    r = np.corrcoef(a[..., 0].ravel().astype(float), a[..., 2].ravel().astype(float))[0, 1]
    assert r > 0.8
    contrast = np.array([i.mean(axis=2).std() for i in imgs])  # RMS contrast, grey levels
    assert CONTRAST[0] * 0.8 < contrast.min() and contrast.max() < CONTRAST[1] * 1.1
    assert contrast.max() > 2.5 * contrast.min()  # drawn per image, not one contrast for all
    # flat regions beside textured ones, as in photos: an image's gradients are heavy-tailed (photos' kurtosis
    # 6-11 in the median), where a Gaussian field's are not (0)
    assert image_statistics(np.stack([i.mean(axis=2) for i in imgs]))[1] > 3.0
    assert abs(image_statistics(np.random.default_rng(0).standard_normal((1, 128, 128)))[1]) < 0.5
    grey = pink_noise(np.random.default_rng([0, 0]), 64, 64, channels=1)
    assert grey.shape == (64, 64, 1)


def test_textured_leaves_are_regions_with_their_own_brightness_and_texture_contrast():
    rng = np.random.default_rng([0, 5])
    top = generate._disks(rng, 96, 96)
    assert top.shape == (96, 96) and top.max() < DISKS and len(np.unique(top)) > 50  # many leaves visible
    a = textured_leaves(np.random.default_rng([0, 5]), 96, 96)
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, textured_leaves(np.random.default_rng([0, 5]), 96, 96))
    # the same leaves as _disks drew: inside the largest ones, brightness and contrast differ from leaf to leaf
    grey = a.mean(axis=2)
    big = [i for i, n in zip(*np.unique(top, return_counts=True), strict=True) if n > 200][:6]
    assert len(big) >= 2
    means, spreads = [grey[top == i].mean() for i in big], [grey[top == i].std() for i in big]
    assert max(means) - min(means) > 10 and max(spreads) > 1.5 * min(spreads)
    assert image_statistics(grey[None])[1] > 3.0  # flat and textured leaves side by side: heavy-tailed gradients
    assert textured_leaves(np.random.default_rng([0, 5]), 32, 32, channels=1).shape == (32, 32, 1)


def test_a_mixed_kind_draws_its_models_in_near_equal_shares_in_every_batch():
    def which(i):
        img = draw_image("pink-and-leaves", 3, i, 40, 40)
        assert np.array_equal(img, draw_image("pink-and-leaves", 3, i, 40, 40))  # (seed, i) alone decide it
        kinds = [f for f in (pink_noise, textured_leaves)
                 if np.array_equal(img, f(np.random.default_rng([3, i]), 40, 40))]
        assert len(kinds) == 1
        return kinds[0]

    drawn = [which(i) for i in range(16)]
    assert 7 <= drawn.count(pink_noise) <= 9  # 16 samples: near 8 of each, where a coin per image may give 4, 12
    for n in (2, 4):  # the analysis's batches take every n-th sample (data.views.spread_batches)
        for k in range(n):
            part = drawn[k::n]
            assert abs(part.count(pink_noise) - part.count(textured_leaves)) <= 2
    assert np.array_equal(draw_image("pink-noise", 3, 5, 40, 40), pink_noise(np.random.default_rng([3, 5]), 40, 40))


@pytest.mark.parametrize("kind", ["pink-noise", "pink-and-leaves", "dead-leaves"])
def test_generated_images_are_preprocessed_like_photos_and_independent_of_the_batch(tmp_path, kind):
    model = load_model(builders.save(builders.conv_bn_relu_residual(), tmp_path))  # x [N, 3, 8, 8]
    pre = Preprocess(resize=12, crop=8, mean=(0.5,), std=(0.25,))
    data = generated_dataset(model, 6, seed=1, preprocess=pre, images=kind)
    x = data.take(0, 6)["x"]
    assert x.shape == (6, 3, 8, 8) and x.dtype == np.float32
    assert -2.0 - 1e-6 <= x.min() and x.max() <= 2.0 + 1e-6  # (v/255 - 0.5) / 0.25
    assert np.array_equal(np.concatenate([data.take(0, 2)["x"], data.take(2, 6)["x"]]), x)
    assert kind in data.details["generator"] and data.kind == "generated"
    assert data.fingerprint != generated_dataset(model, 6, seed=2, preprocess=pre, images=kind).fingerprint
    other = "dead-leaves" if kind == "pink-noise" else "pink-noise"
    assert data.fingerprint != generated_dataset(model, 6, seed=1, preprocess=pre, images=other).fingerprint
    assert data.details["statistics"] == "too small to compare with photos' statistics"  # 12x12 pixels


def test_image_statistics_tell_photos_spectrum_and_flat_regions_from_noise(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    white = rng.standard_normal((4, 96, 96))
    slope, kurtosis = image_statistics(white)
    assert abs(slope) < 0.2 and abs(kurtosis) < 0.3
    smooth = np.stack([generate._texture(rng, 96, 96, 1.5) for _ in range(4)])
    slope, kurtosis = image_statistics(smooth)
    assert 1.3 < slope < 1.7 and abs(kurtosis) < 1.0
    patchy = smooth * np.where(np.arange(96) < 48, 0.05, 1.0)[None, None, :]  # a flat half beside a textured one
    assert image_statistics(patchy)[1] > 3.0
    # the record says how near the drawn images came to photos', and a changed recipe is other data
    model = load_model(builders.save(builders.conv_bn_relu_residual(), tmp_path))
    pre = Preprocess(resize=64, crop=8, mean=(0.5,), std=(0.25,))
    data = generated_dataset(model, 6, seed=1, preprocess=pre)
    assert "in the median of 6 (photos' medians: 1.30-1.47 and 6.4-10.9)" in data.details["statistics"]
    kurtosis = float(data.details["statistics"].split("gradient kurtosis ")[1].split()[0])
    assert kurtosis > 3.0
    monkeypatch.setitem(generate.RECIPES, "pink-noise", [*generate.RECIPES["pink-noise"], "changed"])
    assert generated_dataset(model, 6, seed=1, preprocess=pre).fingerprint != data.fingerprint


def test_image_generators_need_a_preprocessing_and_generated_is_chosen_later():
    from trt_mpq import AnalyzeOptions

    for kind in ("dead-leaves", "pink-noise", "pink-and-leaves"):
        with pytest.raises(ConfigError, match="give --preprocess"):
            AnalyzeOptions(calib=kind)
    with pytest.raises(ConfigError, match="takes no --preprocess"):
        AnalyzeOptions(calib="noise", preprocess="pre.json")
    # no data, or 'generated': the generator is chosen with the model (commands.analyze.generator_for)
    assert AnalyzeOptions(preprocess="pre.json").calib is None
    assert AnalyzeOptions(calib="generated", preprocess="pre.json").calib is None and AnalyzeOptions().calib is None


def test_attention_masks_are_padded_batches_not_coin_flips(tmp_path):
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 32])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", 32])
    other = helper.make_tensor_value_info("token_type", TensorProto.INT64, ["batch", 32])
    out = helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", 32])
    nodes = [helper.make_node("Add", ["input_ids", "attention_mask"], ["s"]),
             helper.make_node("Add", ["s", "token_type"], ["y"])]
    m = builders.model(nodes, [ids, mask, other], [out])
    data = generated_dataset(load_model(builders.save(m, tmp_path)), samples=40, seed=2)
    got = data.take(0, 40)
    lengths = got["attention_mask"].sum(axis=1)
    for row, n in zip(got["attention_mask"], lengths, strict=True):
        assert n >= 1 and (row[:n] == 1).all() and (row[n:] == 0).all()  # ones, then padding
    assert len(set(lengths.tolist())) > 10  # lengths vary from sample to sample
    assert not all(((r == 1).cumprod().sum() == r.sum()) for r in got["token_type"])  # not a mask: {0, 1} noise
    assert "masks: ones then padding" in data.details["distribution"]
