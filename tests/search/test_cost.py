"""The per-GPU cost model (search/cost.py)."""


import numpy as np
import pytest

import builders
from trt_mpq.errors import ConfigError
from trt_mpq.network.units import find_units
from trt_mpq.precision import Precision as P
from trt_mpq.search.cost import GPUS, cost_model


def test_cost_model_targets_and_boundaries():
    m = builders.conv_bn_relu_residual()
    units = find_units(m).units
    t4, h100 = cost_model(m, units, "t4", 64), cost_model(m, units, "h100", 64)
    plan = {u.name: P.INT8 for u in units}
    assert t4.plan_seconds(plan) != h100.plan_seconds(plan)
    assert t4.plan_seconds(plan) > h100.plan_seconds(plan)
    # a precision change between two units costs a reformat that an all-INT8 plan does not pay
    mixed = {"conv1": P.INT8, "conv2": P.FP16, "fc": P.INT8}
    uniform_units = sum(t4.unit_seconds(u, p) for u, p in mixed.items())
    assert t4.plan_seconds(mixed) > uniform_units
    assert set(GPUS) == {"h200", "h100", "b200", "a100", "l40s", "l4", "t4", "orin"}
    # what each runs (datasheets): no FP8 before Ada/Hopper, no BF16/TF32 on Turing
    assert GPUS["t4"].fp8_tflops is None and GPUS["t4"].bf16_tflops is None and GPUS["t4"].tf32_tflops is None
    assert GPUS["a100"].fp8_tflops is None and GPUS["a100"].tf32_tflops == 156.0
    assert all(GPUS[g].fp8_tflops for g in ("l4", "l40s", "h100", "h200", "b200"))
    with pytest.raises(ConfigError, match="--target"):
        cost_model(m, units, "v100")


def test_an_embedding_lookup_costs_the_rows_it_reads_not_its_table():
    m = builders.embedding_residual()
    units = find_units(m).units
    cost = cost_model(m, units, "t4", 1)
    lookup = cost.costs["embed"]
    assert lookup.weights_read == 2 * 4 * 8 and lookup.weight_elems == 50 * 8  # rows read; the table's size
    big = builders.embedding_residual()
    table = next(t for t in big.graph.initializer if t.name == "table")
    table.CopyFrom(builders.init("table", np.zeros((50_000, 8), np.float32)))
    big_cost = cost_model(big, find_units(big).units, "t4", 1)
    assert big_cost.unit_seconds("embed", P.FP16) == cost.unit_seconds("embed", P.FP16)  # time: the rows read
    assert big_cost.costs["embed"].weight_elems == 50_000 * 8  # size (--max-size-mb): the whole table
