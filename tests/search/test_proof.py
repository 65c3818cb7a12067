"""The plan's measurements as data: requests are frozen, picklable records, and a Proof answers each from the
request and its data alone, whatever was asked before and wherever the request was made."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import builders
from trt_mpq.artifacts import Look
from trt_mpq.backends import open_backend
from trt_mpq.data.datasets import load_dataset
from trt_mpq.measure.calibration import calibrate
from trt_mpq.measure.per_sample import Measured
from trt_mpq.network.model import load_model
from trt_mpq.network.units import find_units
from trt_mpq.network.weights import split_weights
from trt_mpq.precision import Plan
from trt_mpq.precision import Precision as P
from trt_mpq.search.proof import ConfirmLook, ConfirmScore, Mixes, Proof, SearchScore


@pytest.fixture
def setup(tmp_path):
    path = builders.save(builders.conv_bn_relu_residual(), tmp_path)
    model = load_model(path)
    x = np.random.default_rng(1).standard_normal((24, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x)
    data = load_dataset(model, tmp_path / "eval.npz")
    units = find_units(model.proto).units
    backend = open_backend("onnxruntime").backend
    ranges = calibrate(model, units, data, backend, calibrator="max")
    skeleton, weights = split_weights(model.proto, min_bytes=64)
    mixes = Mixes(skeleton, tuple(units), ranges, weights)
    return data, backend, mixes, units


def _proof(setup, metric="cosine"):
    data, backend, mixes, _ = setup
    return Proof(data, backend, metric, 8, None, 2, None, mixes)


def test_requests_and_the_lowering_travel_as_data(setup):
    _, _, mixes, units = setup
    plan = Plan.of({units[0].name: P.INT8, units[1].name: P.FP16})
    requests = [SearchScore(plan), ConfirmLook(plan, 0.25, 0.9), ConfirmScore(plan)]
    assert [pickle.loads(pickle.dumps(r)) for r in requests] == requests
    moved = pickle.loads(pickle.dumps(mixes))
    assert moved.model(plan).SerializeToString() == mixes.model(plan).SerializeToString()
    assert moved.weights.arrays.keys() == mixes.weights.arrays.keys()


def test_answers_do_not_depend_on_what_was_asked_before(setup):
    units = setup[3]
    plans = [Plan.of({u.name: P.INT8 for u in units[:k]}) for k in (1, len(units))]
    requests = [r for p in plans for r in (SearchScore(p), ConfirmLook(p, 1.0, 0.99), ConfirmScore(p))]
    forward = [_proof(setup).answer(r) for r in requests]
    one = _proof(setup)
    backward = [one.answer(r) for r in reversed(requests)][::-1]
    assert forward == backward
    assert isinstance(forward[0], Measured) and isinstance(forward[1], Look) and isinstance(forward[2], float)
    assert forward[3].value < forward[0].value  # more units in INT8 move the outputs more: a real measurement
    with pytest.raises(TypeError, match="not a plan request"):
        one.answer(plans[0])


def test_fp32_references_are_taken_once_when_the_proof_is_made(setup):
    proof = _proof(setup)
    assert proof.fp32_search == proof.fp32_confirm == proof.fp32_score == 1.0  # cosine of FP32 with itself
    assert proof.answer(ConfirmScore(Plan())) == 1.0
    with pytest.raises(RuntimeError, match="computed once"):
        proof.searcher.fp32_score(setup[2].skeleton)
