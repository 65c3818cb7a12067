"""The confirm check: the figure that decides comes from samples the search did not select on, and a mix that
holds on the data as given but not on jittered replicas is rejected."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from spaces import NOISE
from spaces import toy_space as _options
from trt_mpq.artifacts import Budget, Look
from trt_mpq.backends import open_backend
from trt_mpq.data.datasets import load_dataset
from trt_mpq.network.model import load_model
from trt_mpq.network.weights import split_weights
from trt_mpq.precision import Plan
from trt_mpq.precision import Precision as P
from trt_mpq.quant.ranges import Ranges
from trt_mpq.search.confirm import confirm
from trt_mpq.search.driver import Search, search
from trt_mpq.search.proof import Mixes, Proof

TRUE, NOISE_SD = 0.985, 0.004  # every lowered mix is equally good; only the metric's noise differs


def test_the_reported_figure_is_free_of_the_search_selection():
    rng = np.random.default_rng(0)
    space = _options(NOISE)
    picked, reported = [], []
    for _ in range(200):
        def measure(plan):  # the search part: the true score plus sampling noise
            return 0.99 if not plan else TRUE + rng.normal(0, NOISE_SD)

        result = search(space, Budget(max_drop=0.005), 0.99, measure)  # a tight budget: it selects on noise
        if not result.plan:
            continue

        def check(plan, ms):  # the confirm part: fresh samples, a loose bar so acceptance selects nothing
            score = TRUE + rng.normal(0, NOISE_SD)
            return Look(plan, ms, score, score, score, (), None, True)

        look, _ = confirm(result.steps, check)
        picked.append(result.score)
        reported.append(look.score)
    assert len(picked) > 50
    assert np.mean(picked) - TRUE > NOISE_SD / 2  # the winner's curse on the part the search selected on
    assert abs(np.mean(reported) - TRUE) < 3 * NOISE_SD / np.sqrt(len(reported))  # unbiased on the other part


def test_looks_step_back_and_bisect_towards_the_rejected_mix():
    space = _options(NOISE)
    searcher = Search(space, Budget(max_drop=0.5), 0.99, lambda plan: 0.99)  # everything passes the search
    result = searcher.run()
    looks = []

    def check(plan, ms):  # the confirm part tolerates at most 2 units in INT8
        ok = plan.count(P.INT8) <= 2
        looks.append(plan)
        return Look(plan, ms, 0.99, 0.99, 0.99, (), None, ok)

    look, seen = confirm(result.steps, check, searcher.refine)
    assert not seen[0].passed and seen[0].plan.count(P.INT8) == 3  # the search's choice, all-INT8, rejected
    assert look is not None and look.passed and look.plan.count(P.INT8) <= 2
    assert len(seen) <= 4 and look.plan in looks


def _threshold_models(tmp_path):
    """FP32: class 0, always. The 'mix': class 0 only while x > 0.5 (ties go to class 0), class 1 below."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    half = helper.make_tensor("half", TensorProto.FLOAT, [1, 1], [0.5])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1, 1], [0.0])
    mix = helper.make_graph([helper.make_node("Sub", ["x", "half"], ["d"]),
                             helper.make_node("Mul", ["x", "zero"], ["z"]),
                             helper.make_node("Concat", ["d", "z"], ["y"], axis=1)], "mix", [x], [y], [half, zero])
    fp32 = helper.make_graph([helper.make_node("Add", ["x", "half"], ["d"]),
                              helper.make_node("Mul", ["x", "zero"], ["z"]),
                              helper.make_node("Concat", ["d", "z"], ["y"], axis=1)], "fp32", [x], [y], [half, zero])
    models = [helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8) for g in (fp32, mix)]
    onnx.save(models[0], str(tmp_path / "fp32.onnx"))
    return load_model(tmp_path / "fp32.onnx"), models[1]


def _mixes(fp32):
    skeleton, weights = split_weights(fp32.proto)
    return Mixes(skeleton, (), Ranges("max"), weights)


def test_a_mix_that_holds_only_on_the_exact_bytes_is_rejected(tmp_path):
    fp32, mix = _threshold_models(tmp_path)
    np.savez(tmp_path / "eval.npz", x=np.full((40, 1), 0.5, np.float32))  # every sample exactly on the edge
    data = load_dataset(fp32, tmp_path / "eval.npz")
    backend = open_backend("onnxruntime").backend
    for replicas, passes in ((0, True), (3, False)):
        proof = Proof(data, backend, "agreement", 8, None, replicas, None, _mixes(fp32))
        on_confirm = proof.fp32_confirm
        look = proof.look(Plan.of({"u": P.INT8}), 1.0, mix, threshold=on_confirm - 0.02)
        assert look.score == 1.0 and look.passed is passes, replicas  # as given, the mix agrees everywhere
        if replicas:
            assert min(look.replicas) < 0.9  # moved by a few rounding steps, about half the samples flip


def test_the_data_says_what_it_cannot_resolve(tmp_path):
    fp32, _ = _threshold_models(tmp_path)
    np.savez(tmp_path / "eval.npz", x=np.linspace(1, 2, 10, dtype=np.float32)[:, None])
    data = load_dataset(fp32, tmp_path / "eval.npz")
    backend = open_backend("onnxruntime").backend
    notes = Proof(data, backend, "agreement", 8, None, 2, None, _mixes(fp32)).limits(0.02)
    assert "5 confirm samples is worth 0.2000" in notes[1] and "at least 50 confirm samples" in notes[1]
    strict = Proof(data, backend, "agreement", 8, None, 2, 0.9, _mixes(fp32)).limits(0.02)
    assert any("nothing will be lowered" in n for n in strict)
    smooth = Proof(data, backend, "cosine", 8, None, 2, None, _mixes(fp32))
    assert len(smooth.limits(0.02)) == 1  # smooth: one flip is no unit
