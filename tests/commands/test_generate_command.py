"""The generate command (commands/generate.py): data written for models as they come, a chunk at a time, and read
back by --calib as the same samples an analysis would have generated."""

import numpy as np

import builders
from trt_mpq.cli import main
from trt_mpq.commands import generate as generate_command
from trt_mpq.data.datasets import Dataset, generated_dataset, load_dataset
from trt_mpq.network.model import load_model


def test_a_model_with_a_scalar_input_gets_one_full_input_per_sample_or_none_once_fixed(tmp_path, capsys):
    path = builders.save(builders.if_subgraph(), tmp_path)  # x [N, 1, 4, 4] and a scalar sr, as Silero VAD
    out = tmp_path / "noise.npz"
    assert main(["generate", str(path), "--out", str(out), "--samples", "5", "--quiet"]) == 0
    with np.load(out) as d:
        assert d["x"].shape == (5, 1, 1, 4, 4) and d["sr"].shape == (5,)  # samples along a new first axis
    model = load_model(path)
    back, fresh = load_dataset(model, out), generated_dataset(model, 5)
    for i in range(5):
        for name, a in fresh.take(i, i + 1).items():
            np.testing.assert_array_equal(back.take(i, i + 1)[name], a)

    fixed = tmp_path / "fixed.npz"
    assert main(["generate", str(path), "--out", str(fixed), "--samples", "5", "--fix", "sr=16000", "--quiet"]) == 0
    with np.load(fixed) as d:
        assert sorted(d.files) == ["trt_mpq_generator", "x"] and d["x"].shape == (5, 1, 4, 4)
    assert main(["analyze", str(path), "--out", str(tmp_path / "run"), "--calib", str(fixed), "--fix", "sr=16000",
                 "--precisions", "int8", "--quiet"]) == 0
    assert main(["generate", str(path), "--out", str(tmp_path / "b.npz"), "--fix", "rate=1"]) == 2
    assert "not an input of the model" in capsys.readouterr().err
    assert not (tmp_path / "b.npz").exists()


def test_samples_are_drawn_and_written_a_chunk_at_a_time(tmp_path, monkeypatch):
    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    monkeypatch.setattr(generate_command, "CHUNK", 3)
    taken = []
    real_take = Dataset.take

    def take(self, lo, hi):
        taken.append(hi - lo)
        return real_take(self, lo, hi)

    monkeypatch.setattr(Dataset, "take", take)
    out = tmp_path / "noise.npz"
    assert main(["generate", str(path), "--out", str(out), "--method", "noise", "--samples", "10", "--quiet"]) == 0
    assert max(taken) <= 3  # never the whole set in memory
    monkeypatch.undo()
    model = load_model(path)
    np.testing.assert_array_equal(load_dataset(model, out).take(0, 10)["x"],
                                  generated_dataset(model, 10).take(0, 10)["x"])
