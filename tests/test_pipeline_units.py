"""Units from an OpDag: Keras-style layer scopes, backward and optimizer ops, cut and stash bytes."""
from __future__ import annotations

import pytest

from tfplace.analysis import DT_RESOURCE, OpDag
from tfplace.errors import GraphError
from tfplace.pipeline.units import Unit, unit_of_ops, units_from_dag

RES = dict(op="Placeholder", out_bytes=0, out_dtypes=(DT_RESOURCE,))


def keras_like_step() -> OpDag:
    """model scope m with layers d1, d2; loss scope `loss`; optimizer `opt` with an IdentityN."""
    return OpDag.from_records([
        dict(name="x", op="Placeholder", out_bytes=64),
        dict(name="y", op="Placeholder", out_bytes=16),
        dict(name="m/d1/k", param_bytes=40, **RES),
        dict(name="m/d1/ReadVariableOp", op="ReadVariableOp", inputs=["m/d1/k"], out_bytes=40),
        dict(name="m/d1/MatMul", op="MatMul", inputs=["x", "m/d1/ReadVariableOp"], flops=100,
             out_bytes=32),
        dict(name="m/d2/k", param_bytes=8, **RES),
        dict(name="m/d2/ReadVariableOp", op="ReadVariableOp", inputs=["m/d2/k"], out_bytes=8),
        dict(name="m/d2/MatMul", op="MatMul", inputs=["m/d1/MatMul", "m/d2/ReadVariableOp"],
             flops=50, out_bytes=16),
        dict(name="loss/sub", op="Sub", inputs=["m/d2/MatMul", "y"], flops=4, out_bytes=16),
        dict(name="loss/Sum", op="Sum", inputs=["loss/sub"], flops=4, out_bytes=4),
        dict(name="gradient_tape/loss/Tile", op="Tile", inputs=["loss/Sum"], out_bytes=16),
        dict(name="gradient_tape/m/d2/MatMul/MatMul", op="MatMul",
             inputs=["gradient_tape/loss/Tile", "m/d2/ReadVariableOp"], flops=50, out_bytes=32),
        dict(name="gradient_tape/m/d2/MatMul/MatMul_1", op="MatMul",
             inputs=["m/d1/MatMul", "gradient_tape/loss/Tile"], flops=50, out_bytes=8),
        dict(name="gradient_tape/m/d1/MatMul/MatMul_1", op="MatMul",
             inputs=["x", "gradient_tape/m/d2/MatMul/MatMul"], flops=100, out_bytes=40),
        dict(name="opt/IdentityN", op="IdentityN",
             inputs=["gradient_tape/m/d1/MatMul/MatMul_1", "gradient_tape/m/d2/MatMul/MatMul_1"],
             out_bytes=(40, 8)),
        dict(name="opt/lr", param_bytes=4, **RES),
        dict(name="opt/lr/Read", op="ReadVariableOp", inputs=["opt/lr"], out_bytes=4),
        dict(name="opt/mul", op="Mul", inputs=["opt/IdentityN:1", "opt/lr/Read"], flops=2,
             out_bytes=8),
        dict(name="opt/Assign_1", op="AssignSubVariableOp", inputs=["m/d2/k", "opt/mul"],
             out_bytes=()),
        dict(name="opt/mul_0", op="Mul", inputs=["opt/IdentityN:0", "opt/lr/Read"], flops=2,
             out_bytes=40),
        dict(name="opt/Assign_0", op="AssignSubVariableOp", inputs=["m/d1/k", "opt/mul_0"],
             out_bytes=()),
    ])


def test_units_exact() -> None:
    assert units_from_dag(keras_like_step()) == (
        Unit("d1", flops=202.0, param_bytes=44, out_bytes=36, grad_bytes=32, stash_bytes=64,
             ops=("x", "m/d1/k", "m/d1/ReadVariableOp", "m/d1/MatMul",
                  "gradient_tape/m/d1/MatMul/MatMul_1", "opt/IdentityN", "opt/lr", "opt/lr/Read",
                  "opt/mul_0", "opt/Assign_0")),
        Unit("d2", flops=152.0, param_bytes=8, out_bytes=16, grad_bytes=16, stash_bytes=32,
             ops=("m/d2/k", "m/d2/ReadVariableOp", "m/d2/MatMul",
                  "gradient_tape/m/d2/MatMul/MatMul", "gradient_tape/m/d2/MatMul/MatMul_1",
                  "opt/mul", "opt/Assign_1")),
        Unit("loss", flops=8.0, param_bytes=0, out_bytes=0, grad_bytes=0, stash_bytes=4,
             ops=("y", "loss/sub", "loss/Sum", "gradient_tape/loss/Tile")))


def test_identity_n_passes_each_gradient_to_its_own_unit() -> None:
    names, unit, per_output = unit_of_ops(keras_like_step())
    dag = keras_like_step()
    assert names == ["d1", "d2", "loss"]
    assert per_output == {dag.index["opt/IdentityN"]: [0, 1]}
    assert unit[dag.index["opt/mul"]] == 1 and unit[dag.index["opt/mul_0"]] == 0


def test_explicit_model_scope_and_no_units() -> None:
    assert [u.name for u in units_from_dag(keras_like_step(), model_scope="m")] == \
        ["d1", "d2", "loss"]
    with pytest.raises(GraphError, match=r"no layer units found under model scope 'nope'"):
        units_from_dag(OpDag.from_records([dict(name="a")]), model_scope="nope")


def test_layer_names_replace_trace_scopes() -> None:
    from tfplace.pipeline.units import layer_names_of
    layers = ["input_layer", "dense", "dense_1", "dense_2"]
    assert layer_names_of(["dense_1", "dense_1_2", "dense_2_1", "mean_squared_error"], layers) \
        == ["dense", "dense_1", "dense_2", "mean_squared_error"]
    assert layer_names_of(["dense_1", "dense_1_2"], ["dense_1"]) == ["dense_1", "dense_1_2"]


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_captured_keras_step(kind: str) -> None:
    import models

    from tfplace.analysis import analyse
    from tfplace.capture import capture
    from tfplace.cluster import Cluster
    from tfplace.pipeline.planner import plan_pipeline

    model = models.build(kind)
    x, y = models.data(kind)
    captured = capture(models.make_step(model), (x, y))
    dag = analyse(captured.graph_def, captured.variables, batch_size_hint=16)
    layers = [layer.name for layer in model.layers]
    scoped = units_from_dag(dag)
    units = units_from_dag(dag, layer_names=layers)
    assert [u.name for u in units] == layers[1:] + ["mean_squared_error"]     # minus the Input
    assert [u.ops for u in units] == [u.ops for u in scoped]
    owner = {op: i for i, u in enumerate(scoped) for op in u.ops}
    assert len(owner) == len(dag)
    for op, i in owner.items():         # backward ops belong to their forward layer's unit
        path = op.removeprefix("gradient_tape/").split("/")
        for j, u in enumerate(scoped[:-1]):
            if len(path) >= 3 and path[1] == u.name:
                assert i == j, op
    # the model's weights and the optimizer's slots and counters, each counted once
    assert sum(u.param_bytes for u in units) == sum(v.nbytes for v in captured.variables)
    assert units[-1].out_bytes == 0 and units[0].stash_bytes > 0
    plan = plan_pipeline(dag, Cluster.local(devices=2, configure=False), stages=2,
                         micro_batches=4, global_batch=16, layer_names=layers,
                         stage_boundaries=[layers[2]])
    assert [s.units[0] for s in plan.stages] == layers[1:3]
    assert {op for s in plan.stages for op in s.ops} == set(owner)
