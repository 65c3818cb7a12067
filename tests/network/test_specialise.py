"""Specialising a model on input values the deployment always feeds (--fix): Ifs on them are inlined."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import builders
from trt_mpq.errors import ConfigError
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units


@pytest.mark.parametrize("sr, branch", [(16000, "conv_then"), (8000, "conv_else")])
def test_fixing_the_if_condition_input_inlines_the_branch_it_takes(tmp_path, sr, branch):
    path = builders.save(builders.if_subgraph(), tmp_path)
    plain = load_model(path)
    assert not find_units(plain.proto).units  # the Conv layers hide inside the If
    fixed = load_model(path, fixed={"sr": sr})
    assert [i.name for i in fixed.inputs] == ["x"] and fixed.fixed == {"sr": sr}
    assert any("If node(s) replaced" in n for n in fixed.notes)
    assert [u.name for u in find_units(fixed.proto).units] == [branch]
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"x": x, "sr": np.array(sr, np.int64)})[0]
    got = ort.InferenceSession(fixed.proto.SerializeToString()).run(None, {"x": x})[0]
    assert np.array_equal(got, want)


def test_fix_errors_are_one_sentence(tmp_path):
    path = builders.save(builders.if_subgraph(), tmp_path)
    with pytest.raises(ConfigError, match="'rate', which is not an input of the model"):
        load_model(path, fixed={"rate": 16000})
    with pytest.raises(ConfigError, match="the model wants shape \\[\\], the value has \\[2\\]"):
        load_model(path, fixed={"sr": [1, 2]})
    from trt_mpq.network.specialise import parse_fixed

    with pytest.raises(ConfigError, match="is not NAME=VALUE"):
        parse_fixed(["sr16000"])
    with pytest.raises(ConfigError, match="'fast' is not a number"):
        parse_fixed(["sr=fast"])


def test_an_if_on_the_batch_size_is_inlined_once_shape_fixes_it(tmp_path):
    path = builders.save(builders.batch_checked_head(), tmp_path)
    dynamic = load_model(path)
    assert find_units(dynamic.proto).units == [] and len(find_units(dynamic.proto).skipped) == 3
    fixed = load_model(path, {"x": (2, 8)})
    assert [u.name for u in find_units(fixed.proto).units] == ["fc0", "fc1", "fc2"]
    assert "If" not in {n.op_type for n in fixed.proto.graph.node}
    assert any("--shape" in note for note in fixed.notes)
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    want = ort.InferenceSession(dynamic.proto.SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(fixed.proto.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)
