"""The on-disk store of FP32 activations (measure/store.py): batches written whole, read back by name."""

import numpy as np

from trt_mpq.measure.store import ActivationStore


def test_batches_read_back_exactly_with_their_shapes_and_dtypes(tmp_path):
    store = ActivationStore(tmp_path / "a")
    store.reset()
    rng = np.random.default_rng(0)
    written = [{"x": rng.standard_normal((n, 3, 4)).astype(np.float32), "ids": np.arange(n, dtype=np.int64)}
               for n in (4, 4, 2)]
    for b, tensors in enumerate(written):
        store.write(b, tensors)
    assert not store.complete
    store.finish()
    again = ActivationStore(tmp_path / "a")  # a resumed run opens the finished store
    assert again.complete
    for b, tensors in enumerate(written):
        got = again.read(b, ["x", "ids"])
        for name, value in tensors.items():
            assert got[name].dtype == value.dtype and np.array_equal(got[name], value)
    dtype, dims = again.dtype_shape("x")
    assert dtype == np.float32 and dims == [None, 3, 4]  # the short last batch frees the batch axis
    again.remove()
    assert not (tmp_path / "a").exists()


def test_batches_written_in_any_order_from_several_threads_read_back_exactly(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = ActivationStore(tmp_path / "a")
    store.reset()
    rng = np.random.default_rng(2)
    written = {b: {"x": rng.standard_normal((4, 64)).astype(np.float32), "n": np.arange(b + 1, dtype=np.int64)}
               for b in range(12)}
    with ThreadPoolExecutor(4) as pool:  # the jobs of a threaded FP32 pass each write the batch they made
        list(pool.map(lambda b: store.write(b, written[b]), [5, 0, 11, 3, 1, 2, 4, 10, 9, 8, 7, 6]))
    store.finish()
    again = ActivationStore(tmp_path / "a")
    for b, tensors in written.items():
        got = again.read(b, ["x", "n"])
        assert all(np.array_equal(got[k], v) for k, v in tensors.items())
    assert again.dtype_shape("n") == (np.dtype(np.int64), [None])  # sizes differ from batch to batch


def test_a_store_of_another_format_is_not_taken_as_complete(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "complete.json").write_text('{"files": {"x": "0.bin"}, "dtypes": {}, "entries": {}}')
    assert not ActivationStore(tmp_path / "a").complete  # an older version's layout: the pass runs again


def test_reads_are_read_only_arrays_that_outlive_the_store(tmp_path):
    store = ActivationStore(tmp_path / "a")
    store.reset()
    value = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    store.write(0, {"x": value, "empty": np.zeros((0, 5), np.float32)})
    got = store.read(0, ["x", "empty"])
    assert type(got["x"]) is np.ndarray and not got["x"].flags.writeable  # mapped, never written through
    assert got["empty"].shape == (0, 5)
    store.remove()  # a job may still hold a batch when a run ends: the data stays readable
    assert np.array_equal(got["x"], value)


def test_large_batches_are_mapped_and_small_ones_read_both_exactly(tmp_path, monkeypatch):
    import trt_mpq.measure.store as store_module

    monkeypatch.setattr(store_module, "MAP_FROM", 64)  # 16 float32s and more are mapped
    store = ActivationStore(tmp_path / "a")
    store.reset()
    rng = np.random.default_rng(1)
    written = [{"big": rng.standard_normal((b + 3, 50)).astype(np.float32), "small": np.arange(4, dtype=np.int32)}
               for b in range(3)]
    for b, tensors in enumerate(written):
        store.write(b, tensors)
    for b, tensors in enumerate(written):  # offsets that are not page-aligned map from the page below
        got = store.read(b, ["big", "small"])
        assert all(np.array_equal(got[k], v) and not got[k].flags.writeable for k, v in tensors.items())
    store.remove()
    assert not store._fds
