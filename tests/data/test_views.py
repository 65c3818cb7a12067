"""Views of a dataset (data/views.py): subsets, the seeded split, spread batches, cached and jittered replicas."""

import numpy as np

from data_models import FLOAT, identity_model
from trt_mpq.data.datasets import generated_dataset
from trt_mpq.data.views import JITTER, cached, jittered, split, spread_batches, subset


def _data(tmp_path, n=10):
    model = identity_model(tmp_path, ("x", FLOAT, ["batch", 3]))
    return generated_dataset(model, samples=n, seed=4)


def test_the_split_is_seeded_disjoint_and_covers_everything(tmp_path):
    ds = _data(tmp_path)
    first, second, a, b = split(ds, 0.5, seed=0)
    assert sorted(a + b) == list(range(10)) and not set(a) & set(b) and len(a) == 5
    assert split(ds, 0.5, seed=0)[2] == a and split(ds, 0.5, seed=1)[2] != a
    assert np.array_equal(first.take(0, 5)["x"], np.concatenate([ds.take(i, i + 1)["x"] for i in a]))
    assert first.fingerprint != second.fingerprint != ds.fingerprint
    assert split(_data(tmp_path, 2), 0.99)[1].num_samples == 1  # both parts keep a sample


def test_a_subset_keeps_the_order_it_is_given(tmp_path):
    ds = _data(tmp_path)
    part = subset(ds, [7, 2], "two")
    assert np.array_equal(part.take(0, 2)["x"], np.concatenate([ds.take(7, 8)["x"], ds.take(2, 3)["x"]]))
    assert "two" in part.source


def test_spread_batches_take_samples_from_all_over_the_data(tmp_path):
    ds = _data(tmp_path, 20)
    ds.labels, ds.names = np.arange(20), [f"s{i}" for i in range(20)]
    view = spread_batches(ds, 8)  # 3 batches: samples 0, 3, 6, ... then 1, 4, 7, ... then 2, 5, 8, ...
    order = [0, 3, 6, 9, 12, 15, 18, 1, 4, 7, 10, 13, 16, 19, 2, 5, 8, 11, 14, 17]
    assert np.array_equal(view.take(0, 20)["x"], np.concatenate([ds.take(i, i + 1)["x"] for i in order]))
    assert view.labels.tolist() == order and view.name(1) == "s3" and view.num_samples == 20
    assert view.spans(8) == ds.spans(8) and view.fingerprint not in (ds.fingerprint, spread_batches(ds, 4).fingerprint)
    assert np.ptp(view.labels[:8]) >= 14  # the first batch alone reaches from one end of the data to the other
    assert spread_batches(ds, 20) is ds and spread_batches(ds, 1) is ds  # one batch, or one sample a batch


def test_jitter_is_small_reproducible_and_independent_of_the_batch(tmp_path):
    ds = _data(tmp_path)
    one, other = jittered(ds, 1), jittered(ds, 2)
    x, j = ds.take(0, 10)["x"], one.take(0, 10)["x"]
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=1, keepdims=True))
    assert not np.array_equal(x, j) and np.all(np.abs(j - x) <= JITTER * rms * 1.001 + 1e-12)
    by_batches = np.concatenate([one.take(lo, min(lo + 3, 10))["x"] for lo in range(0, 10, 3)])
    assert np.array_equal(by_batches, j)  # the same sample jitters the same way in any batch
    assert not np.array_equal(other.take(0, 10)["x"], j) and one.fingerprint != other.fingerprint


def test_cached_reads_the_source_once(tmp_path):
    ds = _data(tmp_path)
    calls = []
    counted = type(ds)(**{**ds.__dict__, "take_fn": lambda lo, hi: calls.append(lo) or ds.take_fn(lo, hi)})
    kept = cached(counted)
    assert len(calls) == 1  # the rest is read when first asked for
    assert np.array_equal(kept.take(3, 5)["x"], ds.take(3, 5)["x"]) and calls == [0, 3, 4]
    for _ in range(3):
        assert np.array_equal(kept.take(0, 10)["x"], ds.take(0, 10)["x"])
    assert sorted(calls) == list(range(10))
    assert cached(counted, max_bytes=1) is counted  # too big to keep: read again each time
