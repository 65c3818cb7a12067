"""The plan stage's choice beside an already-quantized file (search/planning.compare_shipped)."""

import onnx
import pytest

import builders
from spaces import NOISE, toy_space
from trt_mpq.network.units import find_units
from trt_mpq.precision import Plan
from trt_mpq.precision import Precision as P
from trt_mpq.search.planning import compare_shipped
from trt_mpq.search.proof import ConfirmScore


class Answers:
    """A Proof that scores the file 0.5 and a uniform mix by its FP16 unit count (what compare_shipped asks)."""

    def __init__(self) -> None:
        self.asked: list = []

    def score_model(self, model: onnx.ModelProto) -> float:
        self.asked.append("file")
        return 0.5

    def answer(self, request: ConfirmScore) -> float:
        self.asked.append(request)
        return 0.9 + 0.01 * len(request.plan)


def test_the_file_the_plan_and_all_fp16_side_by_side():
    space = toy_space(NOISE)
    units = [u for u in find_units(builders.conv_bn_relu_residual()).units if u.name in space.units]
    conv1 = next(u for u in units if u.name == "conv1")
    shipped = dict.fromkeys(conv1.activations, 4.0)  # the file quantized conv1's input only
    chosen = Plan.of({"conv2": P.FP16, "fc": P.INT8})
    proof = Answers()
    rows = compare_shipped(onnx.ModelProto(), shipped, units, space, proof, chosen, 0.97)
    assert [r.name for r in rows] == ["as shipped", "this plan", "all-FP16"]
    as_shipped, plan, fp16 = rows
    assert as_shipped.what.startswith("1 INT8 units") and as_shipped.score == 0.5
    assert as_shipped.ms == pytest.approx(space.seconds({"conv1": P.INT8}) * 1e3)
    assert plan.score == 0.97 and plan.ms == pytest.approx(space.seconds(chosen) * 1e3)
    assert fp16.score == pytest.approx(0.93) and fp16.ms == pytest.approx(space.seconds(space.uniform(P.FP16)) * 1e3)
    assert proof.asked == ["file", ConfirmScore(Plan.of(space.uniform(P.FP16)))]
    nothing = compare_shipped(onnx.ModelProto(), {}, units, space, Answers(), Plan(), 1.0)
    assert nothing[0].what.startswith("0 INT8 units") and nothing[1].what == "all-FP32"
