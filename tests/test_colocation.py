"""Colocation groups: a variable with its ops, TF `_class` hints, deterministic order."""
from tfplace.analysis import OpDag
from tfplace.colocation import colocation_groups, group_of


def test_resource_consumers_and_class_hints_join_groups():
    dag = OpDag.from_records([
        dict(name="x", out_bytes=4),
        dict(name="v", op="Placeholder", out_bytes=0, out_dtypes=[20], param_bytes=64),
        dict(name="read", op="ReadVariableOp", inputs=["v"]),
        dict(name="mm", op="MatMul", inputs=["x", "read"]),
        dict(name="lr", op="VarHandleOp", out_bytes=0, out_dtypes=[20], param_bytes=4),
        dict(name="upd", op="ResourceApplyGradientDescent", inputs=["v", "lr", "mm"],
             out_bytes=[]),
        dict(name="hint", inputs=["mm"], colocate_with=["x"]),
    ])
    groups = colocation_groups(dag)
    names = [[dag.nodes[i].name for i in g] for g in groups]
    assert names == [["x", "hint"], ["v", "read", "lr", "upd"], ["mm"]]
    assert group_of(groups, len(dag)) == [0, 1, 1, 2, 1, 1, 0]


def test_unknown_class_target_is_ignored():
    dag = OpDag.from_records([dict(name="a", colocate_with=["gone"]), dict(name="b")])
    assert colocation_groups(dag) == [[0], [1]]
