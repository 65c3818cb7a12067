"""Calibration and evaluation data from array files, limits and batching, and generated data (trt_mpq.data.datasets)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data_models import (
    BOOL,
    FLOAT,
    INT64,
    collect,
    gather_model,
    identity_model,
    random_x,
    save_npz,
)
from trt_mpq.data.datasets import DEFAULT_GENERATED_SAMPLES, generated_dataset, load_dataset
from trt_mpq.errors import DataError

# ----------------------------------------------------------------------------------------------- array files


def test_npz_samples_along_axis0(tmp_path, x_model):
    data = random_x(5)
    ds = load_dataset(x_model, save_npz(tmp_path / "d.npz", x=data))
    assert ds.num_samples == 5
    assert ds.record().samples == 5 and ds.kind == "npz"
    assert ds.labels is None
    np.testing.assert_array_equal(ds.take(1, 3)["x"], data[1:3])
    got, sizes = collect(ds, 2)
    assert sizes == [2, 2, 1]
    assert got["x"].dtype == np.float32
    np.testing.assert_array_equal(got["x"], data)


def test_npz_one_more_axis_each_sample_a_full_input(tmp_path):
    model = identity_model(tmp_path, ("x", FLOAT, [2, 1, 6]))  # static: every sample is one [2,1,6] input
    data = np.arange(3 * 2 * 1 * 6, dtype=np.float32).reshape(3, 2, 1, 6)
    ds = load_dataset(model, save_npz(tmp_path / "d.npz", x=data))
    assert ds.num_samples == 3
    assert not ds.batchable and ds.effective_batch(8) == 1
    feeds = list(ds.batches(8))
    assert len(feeds) == 3
    for i, f in enumerate(feeds):
        assert f["x"].shape == (2, 1, 6)
        np.testing.assert_array_equal(f["x"], data[i])


def test_npz_one_more_axis_stacks_along_dynamic_batch(tmp_path):
    model = identity_model(tmp_path, ("a", FLOAT, ["batch", 4]))
    data = np.arange(5 * 4, dtype=np.float32).reshape(5, 1, 4)
    ds = load_dataset(model, save_npz(tmp_path / "d.npz", a=data))
    assert ds.num_samples == 5
    got, sizes = collect(ds, 2)
    assert sizes == [2, 2, 1]
    np.testing.assert_array_equal(got["a"], data.reshape(5, 4))


def test_npy_file(tmp_path, x_model):
    data = random_x(4)
    np.save(tmp_path / "d.npy", data)
    ds = load_dataset(x_model, tmp_path / "d.npy")
    assert ds.num_samples == 4 and ds.kind == "npy"
    np.testing.assert_array_equal(collect(ds, 3)[0]["x"], data)


def test_folder_of_npy_files_concatenated_in_name_order(tmp_path, x_model):
    folder = tmp_path / "calib"
    folder.mkdir()
    first, second = random_x(3, seed=1), random_x(2, seed=2)
    np.save(folder / "b.npy", second)
    np.save(folder / "a.npy", first)
    ds = load_dataset(x_model, folder)
    assert ds.num_samples == 5 and ds.kind == "folder"
    assert "calib" in ds.source
    np.testing.assert_array_equal(collect(ds, 4)[0]["x"], np.concatenate([first, second]))


def test_folder_of_npz_files_with_labels(tmp_path, ab_model):
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.standard_normal((5, 2)).astype(np.float32)
    save_npz(folder / "0.npz", a=a[:2], b=b[:2], labels=np.array([3, 1]))
    save_npz(folder / "1.npz", a=a[2:], b=b[2:], labels=np.array([0, 2, 2]))
    ds = load_dataset(ab_model, folder)
    assert ds.num_samples == 5
    np.testing.assert_array_equal(ds.labels, [3, 1, 0, 2, 2])
    got, _ = collect(ds, 2)
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], b)


def test_npy_folder_with_shapes_that_cannot_stack(tmp_path, x_model):
    folder = tmp_path / "calib"
    folder.mkdir()
    np.save(folder / "a.npy", random_x(2))
    np.save(folder / "b.npy", np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(DataError, match="different shapes"):
        load_dataset(x_model, folder)


def test_npy_refused_for_a_model_with_several_inputs(tmp_path, ab_model):
    np.save(tmp_path / "d.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(DataError, match=r"\.npy.*one input.*\.npz.*a, b"):
        load_dataset(ab_model, tmp_path / "d.npy")


def test_float64_is_accepted_and_cast_to_float32(tmp_path, x_model):
    data = np.random.default_rng(0).standard_normal((3, 3, 4, 4))  # float64
    ds = load_dataset(x_model, save_npz(tmp_path / "d.npz", x=data))
    feed = ds.take(0, 3)["x"]
    assert feed.dtype == np.float32
    np.testing.assert_array_equal(feed, data.astype(np.float32))


def test_int32_is_accepted_for_an_int64_input(tmp_path):
    model = identity_model(tmp_path, ("ids", INT64, ["batch", 3]))
    data = np.arange(6, dtype=np.int32).reshape(2, 3)
    ds = load_dataset(model, save_npz(tmp_path / "d.npz", ids=data))
    feed = ds.take(0, 2)["ids"]
    assert feed.dtype == np.int64
    np.testing.assert_array_equal(feed, data)


def test_uint8_for_a_float_input_is_refused_with_a_hint(tmp_path, x_model):
    data = np.zeros((2, 3, 4, 4), np.uint8)
    with pytest.raises(DataError) as err:
        load_dataset(x_model, save_npz(tmp_path / "d.npz", x=data))
    msg = str(err.value)
    assert "'x'" in msg and "float32" in msg and "uint8" in msg
    assert "raw pixels" in msg and "--preprocess" in msg


def test_float_for_an_int_input_is_refused(tmp_path):
    model = identity_model(tmp_path, ("ids", INT64, ["batch", 3]))
    with pytest.raises(DataError, match=r"'ids' expects int64.*float32"):
        load_dataset(model, save_npz(tmp_path / "d.npz", ids=np.zeros((2, 3), np.float32)))


def test_missing_input_name(tmp_path, ab_model):
    path = save_npz(tmp_path / "d.npz", a=np.zeros((2, 4), np.float32), c=np.zeros((2, 2), np.float32))
    with pytest.raises(DataError) as err:
        load_dataset(ab_model, path)
    msg = str(err.value)
    assert "no array for input 'b'" in msg
    assert "it has: a, c" in msg


def test_extra_unknown_array(tmp_path, ab_model):
    path = save_npz(tmp_path / "d.npz", a=np.zeros((2, 4), np.float32), b=np.zeros((2, 2), np.float32),
                    mask=np.zeros((2, 2), np.float32))
    with pytest.raises(DataError) as err:
        load_dataset(ab_model, path)
    msg = str(err.value)
    assert "not model inputs: mask" in msg
    assert "inputs: a, b" in msg


def test_labels_kept_and_not_fed(tmp_path, x_model):
    labels = np.array([4, 0, 9, 1, 1])
    ds = load_dataset(x_model, save_npz(tmp_path / "d.npz", x=random_x(5), labels=labels))
    np.testing.assert_array_equal(ds.labels, labels)
    for feeds in ds.batches(2):
        assert set(feeds) == {"x"}


def test_npz_arrays_picked_by_name(tmp_path, x_model):
    f = save_npz(tmp_path / "split.npz", x_train=random_x(5), x_test=random_x(3, seed=1), y_test=np.array([1, 2, 3]))
    with pytest.raises(DataError, match="no array for input 'x'.*split.npz:x=ARRAY"):
        load_dataset(x_model, f)
    train = load_dataset(x_model, f"{f}:x=x_train")
    test = load_dataset(x_model, f"{f}:x=x_test,labels=y_test")
    assert train.num_samples == 5 and train.labels is None
    np.testing.assert_array_equal(test.take(0, 3)["x"], random_x(3, seed=1))
    np.testing.assert_array_equal(test.labels, [1, 2, 3])
    # the same inputs with and without labels are the same data (so eval == calib is caught)
    assert load_dataset(x_model, f"{f}:x=x_test").fingerprint == test.fingerprint != train.fingerprint


@pytest.mark.parametrize("spec, words", [
    ("x=x_tran", "no array 'x_tran' \\(it has: x_test, x_train\\)"),
    ("x", "NAME=ARRAY"),
    ("x=", "NAME=ARRAY"),
    ("y=x_train", "no array for input 'x'"),
])
def test_npz_pick_errors(tmp_path, x_model, spec, words):
    f = save_npz(tmp_path / "split.npz", x_train=random_x(5), x_test=random_x(3))
    with pytest.raises(DataError, match=words):
        load_dataset(x_model, f"{f}:{spec}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(x_model, f"{tmp_path / 'nope.npz'}:x=x_train")


def test_labels_are_cut_with_the_limit(tmp_path, x_model):
    labels = np.array([4, 0, 9, 1, 1])
    ds = load_dataset(x_model, save_npz(tmp_path / "d.npz", x=random_x(5), labels=labels), limit=2)
    np.testing.assert_array_equal(ds.labels, [4, 0])


def test_labels_count_must_match_samples(tmp_path, x_model):
    with pytest.raises(DataError, match="3 labels for 5 samples"):
        load_dataset(x_model, save_npz(tmp_path / "d.npz", x=random_x(5), labels=np.arange(3)))


def test_a_model_input_named_labels_is_fed(tmp_path):
    model = identity_model(tmp_path, ("x", FLOAT, ["batch", 4]), ("labels", INT64, ["batch"]))
    ds = load_dataset(model, save_npz(tmp_path / "d.npz", x=np.zeros((3, 4), np.float32),
                                      labels=np.arange(3, dtype=np.int64)))
    np.testing.assert_array_equal(ds.take(0, 3)["labels"], [0, 1, 2])


def test_mismatched_sample_counts(tmp_path, ab_model):
    path = save_npz(tmp_path / "d.npz", a=np.zeros((4, 4), np.float32), b=np.zeros((3, 2), np.float32))
    with pytest.raises(DataError) as err:
        load_dataset(ab_model, path)
    msg = str(err.value)
    assert "different sample counts" in msg
    assert "'a': 4" in msg and "'b': 3" in msg


def test_wrong_static_dim_with_nhwc_hint(tmp_path, x_model):
    nhwc = np.zeros((2, 4, 4, 3), np.float32)
    with pytest.raises(DataError) as err:
        load_dataset(x_model, save_npz(tmp_path / "d.npz", x=nhwc))
    msg = str(err.value)
    assert "'x'" in msg and "[N,3,4,4]" in msg and "[1, 4, 4, 3]" in msg
    assert "NHWC" in msg and "NCHW" in msg


def test_wrong_static_dim_without_nhwc_hint(tmp_path, x_model):
    with pytest.raises(DataError) as err:
        load_dataset(x_model, save_npz(tmp_path / "d.npz", x=np.zeros((2, 3, 5, 5), np.float32)))
    msg = str(err.value)
    assert "[N,3,4,4]" in msg and "[1, 3, 5, 5]" in msg
    assert "NHWC" not in msg


def test_wrong_rank_is_refused(tmp_path, x_model):
    with pytest.raises(DataError) as err:
        load_dataset(x_model, save_npz(tmp_path / "d.npz", x=np.zeros((2, 48), np.float32)))
    msg = str(err.value)
    assert "'x' has 4 dims" in msg and "[2, 48]" in msg and "5 dims" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_refused_naming_the_sample(tmp_path, x_model, bad):
    data = random_x(8)
    data[5, 1, 2, 3] = bad
    with pytest.raises(DataError) as err:  # refused when loading or, at the latest, when its batch is taken
        list(load_dataset(x_model, save_npz(tmp_path / "d.npz", x=data)).batches(4))
    msg = str(err.value)
    assert "NaN or Inf" in msg and "'x'" in msg and "sample 5" in msg


def test_non_finite_first_sample_refused_at_load(tmp_path, x_model):
    data = random_x(3)
    data[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"NaN or Inf \(sample 0\)"):
        load_dataset(x_model, save_npz(tmp_path / "d.npz", x=data))


def test_non_finite_sample_index_with_batch_one(tmp_path):
    model = identity_model(tmp_path, ("x", FLOAT, [1, 4]))  # static batch: one sample per run
    data = np.zeros((4, 4), np.float32)
    data[2, 1] = np.inf
    with pytest.raises(DataError, match=r"'x'.*NaN or Inf \(sample 2\)"):
        list(load_dataset(model, save_npz(tmp_path / "d.npz", x=data)).batches(4))


def test_empty_folder(tmp_path, x_model):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("nothing to see")
    with pytest.raises(DataError, match=r"'.*empty' holds no \.npz, \.npy or image files"):
        load_dataset(x_model, folder)


def test_folder_mixing_images_and_arrays(tmp_path, x_model):
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "a.npy", random_x(2))
    Image.new("RGB", (4, 4)).save(folder / "b.png")
    with pytest.raises(DataError, match="mixes array files and images"):
        load_dataset(x_model, folder)


def test_path_that_does_not_exist(tmp_path, x_model):
    with pytest.raises(DataError, match=r"'.*nowhere\.npz' does not exist"):
        load_dataset(x_model, tmp_path / "nowhere.npz")


def test_file_of_another_kind(tmp_path, x_model):
    (tmp_path / "data.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"'.*data\.csv' is not a \.npz or \.npy file"):
        load_dataset(x_model, tmp_path / "data.csv")


def test_unreadable_npz(tmp_path, x_model):
    (tmp_path / "bad.npz").write_bytes(b"definitely not a zip archive")
    with pytest.raises(DataError, match=r"cannot read '.*bad\.npz' as \.npz"):
        load_dataset(x_model, tmp_path / "bad.npz")


def test_npz_without_samples(tmp_path, x_model):
    with pytest.raises(DataError, match="holds no samples"):
        load_dataset(x_model, save_npz(tmp_path / "d.npz", x=np.zeros((0, 3, 4, 4), np.float32)))


# ----------------------------------------------------------------------------------------------- limit and batching


def test_limit_takes_the_first_samples(tmp_path, x_model):
    data = random_x(10)
    ds = load_dataset(x_model, save_npz(tmp_path / "d.npz", x=data), limit=3)
    assert ds.num_samples == 3 and ds.record().samples == 3
    assert ds.spans(8) == [(0, 3)]
    np.testing.assert_array_equal(collect(ds, 2)[0]["x"], data[:3])


def test_limit_larger_than_the_data(tmp_path, x_model):
    ds = load_dataset(x_model, save_npz(tmp_path / "d.npz", x=random_x(4)), limit=100)
    assert ds.num_samples == 4


def test_limit_below_one_refused(tmp_path, x_model):
    with pytest.raises(DataError, match="--samples must be at least 1"):
        load_dataset(x_model, save_npz(tmp_path / "d.npz", x=random_x(4)), limit=0)


def test_fingerprint_depends_on_data_and_limit(tmp_path, x_model):
    p1 = save_npz(tmp_path / "d1.npz", x=random_x(6, seed=1))
    p2 = save_npz(tmp_path / "d2.npz", x=random_x(6, seed=2))
    fp = load_dataset(x_model, p1).fingerprint
    assert fp == load_dataset(x_model, p1).fingerprint
    assert fp != load_dataset(x_model, p2).fingerprint
    assert fp != load_dataset(x_model, p1, limit=5).fingerprint


def test_spans_and_batches(tmp_path, x_model):
    data = random_x(10)
    ds = load_dataset(x_model, save_npz(tmp_path / "d.npz", x=data))
    assert ds.batchable
    assert ds.spans(4) == [(0, 4), (4, 8), (8, 10)]
    assert ds.spans(1) == [(i, i + 1) for i in range(10)]
    assert ds.spans(0) == ds.spans(1)  # batch sizes below 1 mean 1
    assert ds.spans(64) == [(0, 10)]
    assert ds.effective_batch(64) == 10
    got, sizes = collect(ds, 4)
    assert sizes == [4, 4, 2]  # the last batch is partial
    np.testing.assert_array_equal(got["x"], data)


def test_static_batch_one_model_runs_one_sample_at_a_time(tmp_path):
    model = identity_model(tmp_path, ("x", FLOAT, [1, 3, 4, 4]))
    data = random_x(5)
    ds = load_dataset(model, save_npz(tmp_path / "d.npz", x=data))
    assert not ds.batchable
    assert ds.effective_batch(4) == 1
    assert ds.spans(4) == [(i, i + 1) for i in range(5)]
    feeds = list(ds.batches(4))
    assert [f["x"].shape for f in feeds] == [(1, 3, 4, 4)] * 5
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]), data)


def test_one_static_input_makes_the_model_unbatchable(tmp_path):
    model = identity_model(tmp_path, ("a", FLOAT, ["batch", 4]), ("b", FLOAT, [1, 2]))
    ds = load_dataset(model, save_npz(tmp_path / "d.npz", a=np.zeros((3, 4), np.float32),
                                      b=np.zeros((3, 2), np.float32)))
    assert not ds.batchable and ds.effective_batch(8) == 1
    assert len(list(ds.batches(8))) == 3


# ----------------------------------------------------------------------------------------------- generated data


def _gen_all(ds, batch):
    return collect(ds, batch)[0]


def test_generated_is_reproducible_for_a_seed(tmp_path, ab_model):
    one = _gen_all(generated_dataset(ab_model, samples=6, seed=3), 4)
    two = _gen_all(generated_dataset(ab_model, samples=6, seed=3), 4)
    other = _gen_all(generated_dataset(ab_model, samples=6, seed=4), 4)
    for k in ("a", "b"):
        np.testing.assert_array_equal(one[k], two[k])
        assert not np.array_equal(one[k], other[k])
    assert generated_dataset(ab_model, seed=3).fingerprint == generated_dataset(ab_model, seed=3).fingerprint
    assert generated_dataset(ab_model, seed=3).fingerprint != generated_dataset(ab_model, seed=4).fingerprint


def test_generated_is_independent_of_batch_size(tmp_path, ab_model):
    ds = generated_dataset(ab_model, samples=7, seed=1)
    by_one, sizes_one = collect(ds, 1)
    by_four, sizes_four = collect(ds, 4)
    assert sizes_one == [1] * 7 and sizes_four == [4, 3]
    for k in ("a", "b"):
        assert by_one[k].shape[0] == 7
        np.testing.assert_array_equal(by_one[k], by_four[k])
    # samples are distinct from each other
    assert not np.array_equal(by_one["a"][0], by_one["a"][1])


def test_generated_defaults(tmp_path, ab_model):
    ds = generated_dataset(ab_model)
    assert ds.num_samples == DEFAULT_GENERATED_SAMPLES
    assert ds.kind == "generated" and ds.details["seed"] == 0 and ds.record().samples == DEFAULT_GENERATED_SAMPLES
    assert ds.labels is None


def test_generated_floats_are_standard_normal(tmp_path):
    model = identity_model(tmp_path, ("x", FLOAT, ["batch", 64, 64]))
    x = _gen_all(generated_dataset(model, samples=16, seed=0), 8)["x"]
    assert x.dtype == np.float32 and x.shape == (16, 64, 64)
    assert abs(float(x.mean())) < 0.05
    assert abs(float(x.std()) - 1.0) < 0.05
    assert float(np.abs(x).max()) > 3.0  # a gaussian, not a uniform in [-1, 1]


def test_generated_int_index_stays_inside_the_gather_table(tmp_path):
    model = gather_model(tmp_path, table_rows=7)
    ids = _gen_all(generated_dataset(model, samples=16, seed=0), 16)["ids"]
    assert ids.dtype == np.int64 and ids.shape == (16, 50)
    assert ids.min() >= 0 and ids.max() < 7
    assert set(np.unique(ids)) == set(range(7))  # the whole table is used, not only {0, 1}


def test_generated_int_index_followed_through_cast(tmp_path):
    model = gather_model(tmp_path, table_rows=5, through_cast=True)
    ids = _gen_all(generated_dataset(model, samples=16, seed=0), 16)["ids"]
    assert set(np.unique(ids)) == set(range(5))


def test_generated_other_ints_and_bools(tmp_path):
    model = identity_model(tmp_path, ("n", INT64, ["batch", 100]), ("m", BOOL, ["batch", 100]))
    got = _gen_all(generated_dataset(model, samples=4, seed=0), 4)
    assert got["n"].dtype == np.int64 and set(np.unique(got["n"])) == {0, 1}
    assert got["m"].dtype == np.bool_ and 0.3 < got["m"].mean() < 0.7


def test_generated_refuses_dynamic_non_batch_dims(tmp_path):
    model = identity_model(tmp_path, ("x", FLOAT, ["batch", 3, "h", "w"]))
    with pytest.raises(DataError) as err:
        generated_dataset(model)
    msg = str(err.value)
    assert "'x'" in msg and "dynamic" in msg
    assert "--shape x:1x3xNxN" in msg and "--calib" in msg


def test_generated_works_once_shape_fixes_the_dims(tmp_path):
    model = identity_model(tmp_path, ("x", FLOAT, ["batch", 3, "h", "w"]), shapes={"x": (1, 3, 5, 6)})
    ds = generated_dataset(model, samples=3)
    got, sizes = collect(ds, 2)
    assert sizes == [2, 1]
    assert got["x"].shape == (3, 3, 5, 6)


def test_generated_static_batch_model(tmp_path):
    model = identity_model(tmp_path, ("x", FLOAT, [1, 3]))
    ds = generated_dataset(model, samples=4)
    feeds = list(ds.batches(4))
    assert [f["x"].shape for f in feeds] == [(1, 3)] * 4
