"""Precisions and the plan (precision.py): what each precision needs and how it runs, parsing --precisions and
PRECISION=FILE items with their error messages, and the plan as a frozen, order-free, hashable mapping whose
JSON and digest are stable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path

import pytest

from trt_mpq.errors import ConfigError
from trt_mpq.precision import Plan, Precision, needs_opset, precision_files

P = Precision


def test_each_precision_says_its_opset_whether_it_is_quantized_and_its_activation_format():
    assert {p: p.opset for p in P} == {P.FP32: 13, P.FP16: 13, P.INT8: 13, P.BF16: 13, P.FP8: 19, P.INT4: 21,
                                       P.TF32: 13}
    assert [p for p in P if p.quantized] == [P.INT8, P.FP8]
    assert {p: p.activations for p in P} == {P.FP32: P.FP32, P.FP16: P.FP16, P.INT8: P.INT8, P.BF16: P.BF16,
                                             P.FP8: P.FP8, P.INT4: P.FP16, P.TF32: P.FP32}
    assert P("int8") is P.INT8 and P.INT8 == "int8"  # a str enum: JSON values compare as they are


def test_needs_opset_is_the_highest_any_precision_needs_and_13_at_least():
    assert needs_opset([]) == 13
    assert needs_opset(["fp16", "int8"]) == 13  # JSON strings are accepted as they come
    assert needs_opset(["int8", "fp8"]) == 19 and needs_opset(("fp8", P.INT4, "fp16")) == 21


def test_parse_list_keeps_the_order_given_without_duplicates_whatever_the_case_and_spacing():
    assert P.parse_list("fp16,int8") == (P.FP16, P.INT8)
    assert P.parse_list(" INT8 , fp16,int8,, Fp8 ") == (P.INT8, P.FP16, P.FP8)
    assert P.parse_list("tf32") == (P.TF32,)


@pytest.mark.parametrize("text", ["int3,fp16", "", " , ", "int8;fp16"])
def test_parse_list_refuses_unknown_names_and_names_the_choices(text):
    with pytest.raises(ConfigError) as err:
        P.parse_list(text)
    assert str(err.value) == f"--precisions '{text}' is not a list of fp16, int8, bf16, fp8, int4, tf32."


def test_parse_list_refuses_fp32_which_is_always_the_reference():
    with pytest.raises(ConfigError, match="fp32 is always the reference"):
        P.parse_list("int8,FP32")


def test_plan_of_keeps_lowered_units_sorted_by_name_and_drops_fp32():
    plan = Plan.of({"fc": "fp16", "conv2": P.FP32, "conv1": P.INT8, "b": "int4"})
    assert plan.precisions == (("b", P.INT4), ("conv1", P.INT8), ("fc", P.FP16))
    assert list(plan) == ["b", "conv1", "fc"] and len(plan) == 3
    assert plan["conv1"] is P.INT8 and dict(plan) == {"b": P.INT4, "conv1": P.INT8, "fc": P.FP16}
    assert plan.precision("conv2") is P.FP32 and plan.precision("absent") is P.FP32
    assert "conv2" not in plan and "fc" in plan
    with pytest.raises(KeyError, match="conv2"):
        plan["conv2"]
    with pytest.raises(ValueError):
        Plan.of({"a": "int3"})  # not a precision: refused, never stored


def test_plans_compare_as_mappings_of_their_lowered_units_and_hash_alike_when_equal():
    a = Plan.of({"x": "int8", "y": "fp16"})
    b = Plan.of({"y": P.FP16, "x": P.INT8, "z": P.FP32})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a == {"x": "int8", "y": "fp16", "w": "fp32"} and {"y": P.FP16, "x": P.INT8} == a  # either side
    assert a != Plan.of({"x": "int8", "y": "bf16"}) and a != Plan.of({"x": "int8"})
    assert Plan() == {} == Plan.of({"u": "fp32"}) and Plan() != a
    assert a != [("x", "int8"), ("y", "fp16")] and (a == 3) is False  # not a mapping: not equal


def test_a_plan_is_frozen_and_survives_pickling():
    plan = Plan.of({"u": "int8"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.precisions = ()
    moved = pickle.loads(pickle.dumps(plan))
    assert moved == plan and hash(moved) == hash(plan) and moved.digest() == plan.digest()


def test_counts_always_name_int8_and_fp16_and_other_precisions_where_used_in_enum_order():
    plan = Plan.of({"a": "fp16", "b": "int8", "c": "fp8", "d": "fp16", "e": "fp32"})
    assert plan.counts() == {P.FP16: 2, P.INT8: 1, P.FP8: 1}
    assert list(plan.counts()) == [P.FP16, P.INT8, P.FP8]
    assert plan.count(P.FP16) == 2 and plan.count(P.FP32) == 0 and plan.count(P.BF16) == 0
    assert plan.describe() == "2 FP16 + 1 INT8 + 1 FP8 units"
    assert Plan().counts() == {P.FP16: 0, P.INT8: 0} and Plan().describe() == "0 FP16 + 0 INT8 units"
    assert Plan.of({"w": "int4", "t": "tf32", "h": "bf16"}).describe() == "0 FP16 + 0 INT8 + 1 BF16 + 1 INT4 + " \
        "1 TF32 units"


def test_json_round_trips_and_holds_only_lowered_units():
    plan = Plan.of({"conv1": P.INT8, "fc": P.FP16, "gap": P.FP32})
    doc = plan.to_json()
    assert doc == {"conv1": "int8", "fc": "fp16"} and list(doc) == ["conv1", "fc"]
    assert Plan.of(json.loads(json.dumps(doc))) == plan


def test_the_digest_is_a_stable_sha256_of_the_sorted_json_and_tells_plans_apart():
    plan = Plan.of({"fc": "fp16", "conv1": "int8"})
    by_hand = hashlib.sha256(json.dumps({"conv1": "int8", "fc": "fp16"}, sort_keys=True).encode()).hexdigest()
    assert plan.digest() == by_hand[:16] == "603376b56649bb2d"  # a cache key: must not change between versions
    assert Plan().digest() == hashlib.sha256(b"{}").hexdigest()[:16] == "44136fa355b3678a"
    assert Plan.of({"conv1": "int8", "fc": "fp16", "gap": "fp32"}).digest() == plan.digest()  # FP32: not lowered
    others = [Plan.of({"conv1": "int8"}), Plan.of({"conv1": "int8", "fc": "bf16"}),
              Plan.of({"conv1": "fp16", "fc": "int8"})]
    assert len({plan.digest(), *(o.digest() for o in others)}) == 4


def test_precision_files_from_items_and_from_a_mapping():
    items = ["int8=profile_int8.json", " FP16 =runs/fp16.json", "fp8=a=b.json", "int8=again.json"]
    assert precision_files(items, "--latency-from") == {
        P.INT8: Path("again.json"), P.FP16: Path("runs/fp16.json"), P.FP8: Path("a=b.json")}  # last one wins
    assert precision_files({"int8": "p.json", P.FP16: Path("q.json")}, "--layer-info") == {
        P.INT8: Path("p.json"), P.FP16: Path("q.json")}
    assert precision_files(None, "--layer-info") == {} and precision_files([], "--layer-info") == {}


def test_a_mapping_naming_no_precision_is_one_sentence_and_no_plan_equals_it():
    with pytest.raises(ConfigError, match="'int3=x.json' is not PRECISION=FILE"):
        precision_files({"int3": "x.json"}, "--latency-from")
    assert Plan.of({"a": P.INT8}) != {"a": "bogus"} and Plan() != {"a": "bogus"}


@pytest.mark.parametrize("item", ["int8", "int8=", "=p.json", "int3=p.json", "int8:p.json"])
def test_precision_files_refuse_anything_but_precision_equals_file(item):
    with pytest.raises(ConfigError) as err:
        precision_files([item], "--layer-info")
    assert str(err.value) == f"--layer-info '{item}' is not PRECISION=FILE, e.g. int8=profile_int8.json."
