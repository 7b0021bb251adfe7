"""tfplace.splits.splitplan and summary: proto round trip (byte-identical) and the summary table."""
from __future__ import annotations

import pytest

from tfplace.analysis import OpDag
from tfplace.errors import PlanError
from tfplace.splits import B, P, S, BoxingStep, SplitOp, SplitPlan, VariableShard, propagate
from test_splits_propagation import DEVICES, SPLITS, VARS, mlp_block

PLAN = SplitPlan(
    devices=("/device:CPU:0", "/device:CPU:1"),
    ops=(SplitOp("mm", "MatMul", (B, S(1)), (S(1),)),
         SplitOp("mm2", "MatMul", (S(1), S(0)), (P,)),
         SplitOp("idn", "IdentityN", (S(1), P), (S(1), P)),
         SplitOp("gather", "GatherV2", (S(0), B, B), (P,), "masked_lookup"),
         SplitOp("upd", "AssignSubVariableOp", (S(0), S(0)), ())),
    boxing=(BoxingStep("b:0", B, P, "zeros", 0, 64, ("ba",)),
            BoxingStep("ba:0", P, B, "all_reduce", 512, 512, ("relu", "")),),
    variables=(VariableShard("dense/kernel", "w", S(1), ("/device:CPU:0", "/device:CPU:1"),
                             ((16, 32), (16, 32))),
               VariableShard("scalar_split", "s", S(0), ("/device:CPU:0", "/device:CPU:1"),
                             ((2,), (2,)))))


def test_round_trip_is_byte_identical() -> None:
    data = PLAN.to_bytes()
    back = SplitPlan.from_bytes(data)
    assert back == PLAN
    assert back.to_bytes() == data
    assert SplitPlan.from_proto(PLAN.to_proto()) == PLAN
    empty = SplitPlan(devices=("d0",))
    assert SplitPlan.from_bytes(empty.to_bytes()) == empty


def test_a_propagated_plan_round_trips() -> None:
    plan = propagate(OpDag.from_records(mlp_block()), SPLITS, devices=DEVICES, variables=VARS,
                     outputs=["ba2"])
    assert SplitPlan.from_bytes(plan.to_bytes()) == plan
    assert SplitPlan.from_bytes(plan.to_bytes()).to_bytes() == plan.to_bytes()


def test_a_malformed_layout_in_a_proto_is_a_plan_error() -> None:
    p = PLAN.to_proto()
    p.ops[0].inputs[1] = "S(x)"
    with pytest.raises(PlanError, match=r"cannot read layout 'S\(x\)'"):
        SplitPlan.from_proto(p)


def test_queries() -> None:
    assert PLAN.boxing_bytes == 512
    assert PLAN.collectives() == {"all_reduce": 1, "zeros": 1}
    assert PLAN.tensor_layouts() == {"mm:0": S(1), "mm2:0": P, "idn:0": S(1), "idn:1": P,
                                     "gather:0": P}
    with pytest.raises(KeyError):
        PLAN.op("nope")


def test_summary_table() -> None:
    assert PLAN.summary() == "\n".join([
        "splits on 2 devices: /device:CPU:0, /device:CPU:1",
        "split ops: 5",
        "  mm      MatMul               (B, S(1)) -> (S(1))",
        "  mm2     MatMul               (S(1), S(0)) -> (P)",
        "  idn     IdentityN            (S(1), P) -> (S(1), P)",
        "  gather  GatherV2             (S(0), B, B) -> (P)  [masked_lookup]",
        "  upd     AssignSubVariableOp  (S(0), S(0)) -> ()",
        "boxing: 2 steps, 512 bytes per device",
        "  b:0      B -> P     zeros                0 B  for ba",
        "  ba:0     P -> B     all_reduce         512 B  for relu, <output>",
        "split variables: 2",
        "  dense/kernel  S(1)  shard 16x32 on 2 devices",
        "  scalar_split  S(0)  shard 2 on 2 devices"])
    assert SplitPlan(devices=("d0", "d1")).summary() == "\n".join([
        "splits on 2 devices: d0, d1", "split ops: 0", "boxing: 0 steps, 0 bytes per device",
        "split variables: 0"])
