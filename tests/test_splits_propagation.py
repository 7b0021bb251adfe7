"""tfplace.splits.propagation on small synthetic DAGs: Megatron MLP forward and backward, tied
slots, shared partial sums, errors; every layout and boxing step by exact value."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from tfplace.analysis import OpDag
from tfplace.errors import PlanError
from tfplace.splits import B, P, S, BoxingStep, SplitOp, VariableShard, propagate
from tfplace.splits.slots import tied_variables

DEVICES = ("/device:CPU:0", "/device:CPU:1")


@dataclass(frozen=True)
class Var:
    node: str
    name: str
    shape: tuple[int, ...]


VARS = [Var("w1", "dense/kernel", (16, 64)), Var("b1", "dense/bias", (64,)),
        Var("w2", "dense_1/kernel", (64, 16)), Var("b2", "dense_1/bias", (16,))]
SPLITS = {"dense/kernel": "S(1)", "dense/bias": "S(0)", "dense_1/kernel": "S(0)"}


def _t(name: str, op: str, inputs: list[str], shape: tuple[int, ...], flops: float = 0.0):
    size = 4
    for d in shape:
        size *= d
    return {"name": name, "op": op, "inputs": inputs, "out_shapes": [shape],
            "out_bytes": size, "flops": flops}


def _var(name: str):
    return {"name": name, "op": "Placeholder", "out_shapes": [()], "out_dtypes": [20],
            "out_bytes": 0}


def mlp_block(backward: bool = False, tail: str = "") -> list[dict]:
    """x[8,16] -> Dense(64) -> Relu -> Dense(16), optionally with its backward and SGD updates."""
    recs = [_t("x", "Placeholder", [], (8, 16)),
            _var("w1"), _t("r1", "ReadVariableOp", ["w1"], (16, 64)),
            _t("mm1", "MatMul", ["x", "r1"], (8, 64), 16384.0),
            _var("b1"), _t("rb1", "ReadVariableOp", ["b1"], (64,)),
            _t("ba1", "BiasAdd", ["mm1", "rb1"], (8, 64), 512.0),
            _t("act", "Relu", ["ba1"], (8, 64), 512.0),
            _var("w2"), _t("r2", "ReadVariableOp", ["w2"], (64, 16)),
            _t("mm2", "MatMul", ["act", "r2"], (8, 16), 16384.0),
            _var("b2"), _t("rb2", "ReadVariableOp", ["b2"], (16,)),
            _t("ba2", "BiasAdd", ["mm2", "rb2"], (8, 16), 128.0)]
    if tail:
        recs.append(_t("tail", tail, ["ba2"], (8, 16), 128.0))
    if backward:
        recs += [_t("dy", "Placeholder", [], (8, 16)),
                 _t("db2", "BiasAddGrad", ["dy"], (16,), 128.0),
                 _t("dw2", "MatMul", ["act", "dy"], (64, 16), 16384.0),
                 _t("dact", "MatMul", ["dy", "r2"], (8, 64), 16384.0),
                 _t("dba1", "ReluGrad", ["dact", "act"], (8, 64), 512.0),
                 _t("db1", "BiasAddGrad", ["dba1"], (64,), 512.0),
                 _t("dw1", "MatMul", ["x", "dba1"], (16, 64), 16384.0),
                 _t("dx", "MatMul", ["dba1", "r1"], (8, 16), 16384.0)]
        recs += [{"name": f"upd_{v}", "op": "AssignSubVariableOp", "inputs": [v, g],
                  "out_bytes": ()}
                 for v, g in (("w1", "dw1"), ("b1", "db1"), ("w2", "dw2"), ("b2", "db2"))]
    return recs


BACKWARD_ATTRS = {"dw2": {"transpose_a": True}, "dw1": {"transpose_a": True},
                  "dact": {"transpose_b": True}, "dx": {"transpose_b": True}}


def test_megatron_mlp_forward_needs_exactly_one_all_reduce() -> None:
    plan = propagate(OpDag.from_records(mlp_block()), SPLITS, devices=DEVICES, variables=VARS,
                     outputs=["ba2"])
    assert plan.ops == (
        SplitOp("r1", "ReadVariableOp", (S(1),), (S(1),)),
        SplitOp("mm1", "MatMul", (B, S(1)), (S(1),)),
        SplitOp("rb1", "ReadVariableOp", (S(0),), (S(0),)),
        SplitOp("ba1", "BiasAdd", (S(1), S(0)), (S(1),)),
        SplitOp("act", "Relu", (S(1),), (S(1),)),
        SplitOp("r2", "ReadVariableOp", (S(0),), (S(0),)),
        SplitOp("mm2", "MatMul", (S(1), S(0)), (P,)),
        SplitOp("ba2", "BiasAdd", (P, P), (P,)))
    assert plan.boxing == (
        BoxingStep("rb2:0", B, P, "zeros", 0, 64, ("ba2",)),
        BoxingStep("ba2:0", P, B, "all_reduce", 512, 512, ("",)))
    assert plan.collectives() == {"all_reduce": 1, "zeros": 1}
    assert plan.variables == (
        VariableShard("dense/bias", "b1", S(0), DEVICES, ((32,), (32,))),
        VariableShard("dense/kernel", "w1", S(1), DEVICES, ((16, 32), (16, 32))),
        VariableShard("dense_1/kernel", "w2", S(0), DEVICES, ((32, 16), (32, 16))))
    assert plan.tensor_layouts()["mm2:0"] == P


def test_four_devices_scale_the_all_reduce() -> None:
    devices = tuple(f"/device:CPU:{i}" for i in range(4))
    plan = propagate(OpDag.from_records(mlp_block()), SPLITS, devices=devices, variables=VARS,
                     outputs=["ba2"])
    assert [(b.tensor, b.collective, b.bytes) for b in plan.boxing] == [
        ("rb2:0", "zeros", 0), ("ba2:0", "all_reduce", 768)]
    assert plan.variables[1].shapes == ((16, 16),) * 4


def test_backward_gradients_come_out_in_their_variables_layouts() -> None:
    plan = propagate(OpDag.from_records(mlp_block(backward=True)), SPLITS, devices=DEVICES,
                     variables=VARS, attrs=BACKWARD_ATTRS, outputs=["ba2", "dx"])
    by = {o.name: (o.inputs, o.outputs) for o in plan.ops}
    assert by["dw2"] == ((S(1), B), (S(0),))        # x^T dy with x column-split: rows of dW2
    assert by["dact"] == ((B, S(0)), (S(1),))
    assert by["dba1"] == ((S(1), S(1)), (S(1),))
    assert by["db1"] == ((S(1),), (S(0),))
    assert by["dw1"] == ((B, S(1)), (S(1),))
    assert by["dx"] == ((S(1), S(1)), (P,))
    # every update of a split variable is local
    assert by["upd_w1"] == ((S(1), S(1)), ())
    assert by["upd_b1"] == ((S(0), S(0)), ())
    assert by["upd_w2"] == ((S(0), S(0)), ())
    assert "upd_b2" not in by and "db2" not in by
    assert [(b.tensor, b.src, b.dst, b.collective, b.bytes) for b in plan.boxing] == [
        ("rb2:0", B, P, "zeros", 0), ("ba2:0", P, B, "all_reduce", 512),
        ("dx:0", P, B, "all_reduce", 512)]


def test_resharding_is_weighed_only_when_asked() -> None:
    dag = OpDag.from_records(mlp_block(tail="Tanh"))
    plain = propagate(dag, SPLITS, devices=DEVICES, variables=VARS)
    assert [(b.tensor, b.collective, b.bytes) for b in plain.boxing] == [
        ("rb2:0", "zeros", 0), ("ba2:0", "all_reduce", 512)]
    resharded = propagate(dag, SPLITS, devices=DEVICES, variables=VARS, reshard=True)
    assert [(b.tensor, b.collective, b.bytes) for b in resharded.boxing] == [
        ("rb2:0", "zeros", 0), ("ba2:0", "reduce_scatter", 256)]
    assert resharded.op("tail") == SplitOp("tail", "Tanh", (S(0),), (S(0),))


def test_a_partial_read_twice_is_all_reduced_once() -> None:
    recs = mlp_block() + [_t("t1", "Tanh", ["mm2"], (8, 16))]
    plan = propagate(OpDag.from_records(recs), SPLITS, devices=DEVICES, variables=VARS)
    assert [(b.tensor, b.collective, b.consumers) for b in plan.boxing] == [
        ("mm2:0", "all_reduce", ("ba2", "t1"))]
    assert plan.op("mm2").outputs == (P,)
    assert "ba2" not in {o.name for o in plan.ops} and "t1" not in {o.name for o in plan.ops}


def test_on_a_tie_the_whole_output_wins() -> None:
    # BiasAdd(P, zeros) -> P then an all-reduce for two readers costs what all-reducing its
    # input costs; the whole (B) output is preferred
    recs = mlp_block() + [_t("t1", "Tanh", ["ba2"], (8, 16)), _t("t2", "Relu", ["ba2"], (8, 16))]
    plan = propagate(OpDag.from_records(recs), SPLITS, devices=DEVICES, variables=VARS)
    assert [(b.tensor, b.collective, b.consumers) for b in plan.boxing] == [
        ("mm2:0", "all_reduce", ("ba2",))]


def test_slots_updated_with_a_variable_share_its_layout() -> None:
    recs = [_var("w1"), _var("m1"), _var("lr_var"),
            _t("g", "Placeholder", [], (16, 64)),
            _t("mr", "ReadVariableOp", ["m1"], (16, 64)),
            _t("lr", "ReadVariableOp", ["lr_var"], ()),
            _t("m_new", "AddV2", ["mr", "g"], (16, 64)),
            {"name": "upd_m", "op": "AssignVariableOp", "inputs": ["m1", "m_new"],
             "out_bytes": ()},
            _t("mr2", "ReadVariableOp", ["m1", "^upd_m"], (16, 64)),
            _t("step", "Mul", ["mr2", "lr"], (16, 64)),
            {"name": "upd_w", "op": "AssignSubVariableOp", "inputs": ["w1", "step"],
             "out_bytes": ()}]
    dag = OpDag.from_records(recs)
    assert tied_variables(dag, ["w1", "m1", "lr_var"]) == [("m1", "w1")]
    variables = [Var("w1", "dense/kernel", (16, 64)), Var("m1", "sgd/dense_kernel_momentum",
                                                           (16, 64)), Var("lr_var", "lr", ())]
    plan = propagate(dag, {"dense/kernel": S(1)}, devices=DEVICES, variables=variables)
    assert [(v.variable, str(v.layout)) for v in plan.variables] == [
        ("dense/kernel", "S(1)"), ("sgd/dense_kernel_momentum", "S(1)")]
    assert [(b.tensor, b.collective) for b in plan.boxing] == [("g:0", "slice")]
    assert plan.op("upd_m").inputs == (S(1), S(1))
    with pytest.raises(PlanError) as e:
        propagate(dag, {"dense/kernel": S(1), "sgd/dense_kernel_momentum": S(0)},
                  devices=DEVICES, variables=variables)
    assert str(e.value) == (
        "cannot split these variables:\n  - variables 'sgd/dense_kernel_momentum', "
        "'dense/kernel' are updated together but asked for different layouts (S(0), S(1)); "
        "give them one layout")


def test_bad_requests_are_reported_together() -> None:
    dag = OpDag.from_records(mlp_block())
    with pytest.raises(PlanError) as e:
        propagate(dag, {"dense/kernal": "S(1)", "dense_1/bias": "S(0)", "dense/kernel": "S(0)"},
                  devices=tuple(f"d{i}" for i in range(3)), variables=VARS)
    assert str(e.value) == (
        "cannot split these variables:\n"
        "  - 'dense/kernal' is not a variable of this step (variables: dense/bias, "
        "dense/kernel, dense_1/bias, dense_1/kernel)\n"
        "  - 'dense_1/bias': axis 0 of shape [16] (16) does not divide into 3 equal shards; "
        "split another axis or use a device count that divides 16\n"
        "  - 'dense/kernel': axis 0 of shape [16, 64] (16) does not divide into 3 equal shards; "
        "split another axis or use a device count that divides 16")
    with pytest.raises(PlanError, match=r"a split needs a group of distinct devices"):
        propagate(dag, SPLITS, devices=("a", "a"), variables=VARS)
    with pytest.raises(PlanError, match=r"fetched output 'nope:0' is not in the graph"):
        propagate(dag, SPLITS, devices=DEVICES, variables=VARS, outputs=["nope:0"])


def test_an_op_that_cannot_take_a_split_variable_is_named() -> None:
    recs = mlp_block() + [_t("idx", "Placeholder", [], (4,)),
                          {"name": "scatter", "op": "ResourceScatterNdUpdate",
                           "inputs": ["w1", "idx", "x"], "out_bytes": ()}]
    with pytest.raises(PlanError) as e:
        propagate(OpDag.from_records(recs), SPLITS, devices=DEVICES, variables=VARS)
    assert str(e.value) == (
        "op 'scatter' (ResourceScatterNdUpdate) has no signature for inputs (S(1), B, B) on 2 "
        "devices; it supports: ResourceScatterNdUpdate(B, B, B) -> (). Split the variables it "
        "reads another way, or leave them unsplit")


def test_ops_with_whole_inputs_stay_whole() -> None:
    plan = propagate(OpDag.from_records(mlp_block()), {}, devices=DEVICES, variables=VARS,
                     outputs=["ba2"])
    assert plan.ops == () and plan.boxing == () and plan.variables == ()


def test_an_op_reading_a_tensor_twice_boxes_it_once() -> None:
    recs = mlp_block() + [_t("sq", "Mul", ["ba2", "ba2"], (8, 16))]
    plan = propagate(OpDag.from_records(recs), SPLITS, devices=DEVICES, variables=VARS)
    assert [(b.tensor, b.collective, b.consumers) for b in plan.boxing] == [
        ("rb2:0", "zeros", ("ba2",)), ("ba2:0", "all_reduce", ("sq",))]
    assert plan.op("sq") == SplitOp("sq", "Mul", (B, B), (B,))


def test_slices_move_upstream_into_the_embedding_gradient() -> None:
    recs = [_var("table"), _t("ids", "Placeholder", [], (12,)),
            _t("rows", "ReadVariableOp", ["table"], (8, 4)),
            _t("looked", "GatherV2", ["rows", "ids", "axis"], (12, 4)),
            _t("dy", "Placeholder", [], (12, 4)), _t("num", "Const", [], ()),
            _t("grad", "UnsortedSegmentSum", ["dy", "ids", "num"], (8, 4), 48.0),
            _t("lr", "Const", [], ()),
            _t("step", "Mul", ["grad", "lr"], (8, 4), 32.0),
            {"name": "upd", "op": "AssignSubVariableOp", "inputs": ["table", "step"],
             "out_bytes": ()}]
    recs.insert(3, _t("axis", "Const", [], ()))
    plan = propagate(OpDag.from_records(recs), {"emb": "S(0)"}, devices=DEVICES,
                     variables=[Var("table", "emb", (8, 4))], attrs={"axis": {"value": (0,)}},
                     outputs=["looked"])
    assert plan.ops == (
        SplitOp("rows", "ReadVariableOp", (S(0),), (S(0),)),
        SplitOp("looked", "GatherV2", (S(0), B, B), (P,), "masked_lookup"),
        SplitOp("grad", "UnsortedSegmentSum", (B, B, B), (S(0),), "masked_segments"),
        SplitOp("step", "Mul", (S(0), B), (S(0),)),
        SplitOp("upd", "AssignSubVariableOp", (S(0), S(0)), ()))
    assert plan.boxing == (BoxingStep("looked:0", P, B, "all_reduce", 192, 192, ("",)),)
