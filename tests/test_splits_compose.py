"""Splits x data parallel: a 2-D mesh (2 replicas x a 2-way split group) on 4 local devices
trains like the single-device full-batch step (5 steps, 1e-5 relative); split gradients are
synced over the replica axis only; a cluster that is no mesh is a PlanError naming the numbers."""
from __future__ import annotations

import keras
import pytest

import models
import tfplace
from tfplace.errors import PlanError
from tfplace.splits.mesh import check_mesh, mesh_shape

CPU = "/job:localhost/replica:0/task:0/device:CPU:"


def _spec(model) -> str:
    d0, d1 = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][:2]
    return f"{d0.name}:S(1);{d1.name}:S(0)"          # column split, then row split


def _train(cluster, **kw):
    ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=cluster, splits=_spec(model), data_parallel=2,
                                **kw)
    models.assert_same_training(ref, (model, pstep), kind="mlp")     # losses and weights
    return pstep


@pytest.fixture(scope="module")
def mesh_step(local4):
    return _train(local4)


def _groups(graph_def, scope: str) -> list[set[str]]:
    """The device set of each CollectiveReduceV2 group whose nodes are under ``scope``."""
    nodes = {n.name: n for n in graph_def.node}
    by_key: dict[int, set[str]] = {}
    for n in graph_def.node:
        if n.op == "CollectiveReduceV2" and scope in n.name:
            key = nodes[n.input[2]].attr["value"].tensor.int_val[0]
            by_key.setdefault(key, set()).add(n.device)
    return list(by_key.values())


def test_mesh_trains_like_one_device_with_shards_per_replica(mesh_step) -> None:
    ex = mesh_step.executor
    assert mesh_step.plan.num_replicas == 2 and len(mesh_step.plan.splits.devices) == 2
    shards: dict[str, list[str]] = {}
    for _node, orig, placed in ex.pairs:
        if "_shard" in placed.name:
            shards.setdefault(orig.name, []).append(placed.device)
    assert shards, "no variable was split"
    for name, devices in shards.items():            # 2 shards in each of the 2 replicas
        assert sorted(devices) == [CPU + str(i) for i in range(4)], (name, devices)


def test_split_gradients_sync_over_the_replica_axis_only(mesh_step) -> None:
    gd = mesh_step.executor.graph_def
    sync = _groups(gd, "tfplace_sync/")
    assert {CPU + "0", CPU + "2"} in sync and {CPU + "1", CPU + "3"} in sync  # shard columns
    replicas = [set(g) for g in mesh_step.plan.replicas]
    for devices in sync:                            # one device of each replica, no more
        assert all(len(devices & r) == 1 for r in replicas), devices
    boxing = _groups(gd, "tfplace_split/")          # the split all-reduce: within a replica
    assert sorted(map(sorted, boxing)) == [[CPU + "0", CPU + "1"], [CPU + "2", CPU + "3"]]


def test_summary_shows_the_mesh(mesh_step) -> None:
    text = mesh_step.plan.summary()
    assert "mesh: 2 replicas x 2-way split group" in text
    assert f"replica 1  {CPU}2  {CPU}3" in text


def test_dataflow_boxing_and_hierarchical_sync(local4, monkeypatch) -> None:
    """Without TF collectives: AddN boxing inside each replica, dataflow gradient sync."""
    import tfplace.runtime.devices as devices
    monkeypatch.setattr(devices, "collectives_ready", lambda cluster: False)
    pstep = _train(local4, sync="hierarchical")
    gd = pstep.executor.graph_def
    assert not [n for n in gd.node if n.op == "CollectiveReduceV2"]
    assert [n for n in gd.node if n.op == "AddN" and "tfplace_split/all_reduce" in n.name]



def test_split_embedding_table_on_the_mesh(local4) -> None:
    """A row-split table (S(0)) with data_parallel=2: its IndexedSlices gradient stays whole in
    each replica (each shard's masked segment sum picks its rows), all-gathered once per
    replica; the table's shards on both devices of each replica."""
    ref, (model, step) = models.twin("embedding")
    table = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)][0]
    pstep = tfplace.parallelize(step, cluster=local4, splits=f"{table.name}:S(0)",
                                data_parallel=2)
    models.assert_same_training(ref, (model, pstep), kind="embedding")
    shards = [placed.device for _n, orig, placed in pstep.executor.pairs
              if "_shard" in placed.name and orig.name.split(":")[0] == table.embeddings.path]
    assert sorted(shards) == [CPU + str(i) for i in range(4)], shards
    gathers = [n for n in pstep.executor.graph_def.node if n.op == "ConcatV2"
               and n.name.startswith("tfplace_sync/") and "embedding" in n.input[0]]
    assert gathers, "the sparse gradient was not all-gathered"
    replicas = [set(g) for g in pstep.plan.replicas]
    devices = {n.device for n in gathers}
    assert len(devices) == 2 and all(len(devices & r) == 1 for r in replicas), devices
    for n in gathers:                               # one part from each replica
        assert sorted(i.partition("/")[0] for i in n.input[:-1]) == ["tfplace_r0",
                                                                      "tfplace_r1"], n.input

@pytest.mark.parametrize("devices,replicas,dims,words", [
    (3, 2, (), ["3 devices", "2 replicas", "3 % 2 = 1", "data_parallel=1", "4 devices"]),
    (4, 4, (), ["1 device per replica", "data_parallel=2", "8 devices"]),
    (6, 2, (32,), ["3 devices", "sizes 32", "data_parallel=3"]),
])
def test_no_mesh_is_a_plan_error(devices, replicas, dims, words) -> None:
    with pytest.raises(PlanError) as err:
        check_mesh(devices, replicas, dims)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_mesh_shape_by_value() -> None:
    assert mesh_shape(4, 2, (32, 16)) == (2, 2)
    assert mesh_shape(8, 2, (32,)) == (2, 4)
    assert mesh_shape(8, 2, (6,)) == (2, 2)
    check_mesh(4, 2, (32, 16))                      # a mesh: no error


def test_parallelize_refuses_a_cluster_that_is_no_mesh() -> None:
    with pytest.raises(PlanError, match=r"3 devices do not divide into 2 replicas"):
        tfplace.parallelize(lambda x: x, cluster=tfplace.Cluster.local(devices=3),
                            splits="dense:S(1)", data_parallel=2)


# -- splits within a pipeline stage -----------------------------------------------------------

def _late_spec(model) -> tuple[str, list[str]]:
    """The 2nd and 3rd Dense split, and stage 1 starting at the 2nd (a boundary by unit)."""
    d = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    return f"{d[1].name}:S(1);{d[2].name}:S(0)", [f"{d[1].name}_1"]   # units of the twin


def test_splits_within_the_second_pipeline_stage(local4) -> None:
    """2 stages x 2 devices, 2 micro-batches: the split layers' shards on stage 1's two
    devices, each micro-batch's split all-reduce a collective instance of its own."""
    ref, (model, step) = models.twin("mlp")
    spec, bounds = _late_spec(model)
    pstep = tfplace.parallelize(step, cluster=local4, splits=spec, pipeline_stages=2,
                                micro_batches=2, stage_boundaries=bounds)
    models.assert_same_training(ref, (model, pstep), kind="mlp")
    plan = pstep.plan
    stage1 = plan.pipeline.stages[1].devices
    assert stage1 == (CPU + "2", CPU + "3") and plan.splits.devices == stage1
    devices = {placed.device for _n, _o, placed in pstep.executor.pairs
               if "_shard" in placed.name}
    assert devices == set(stage1)
    gd = pstep.executor.graph_def
    assert _groups(gd, "tfplace_split/") == [set(stage1)]    # one group: the stage's devices
    nodes = {n.name: n for n in gd.node}
    instances = {}
    for n in gd.node:
        if n.op == "CollectiveReduceV2":
            key = nodes[n.input[3]].attr["value"].tensor.int_val[0]
            instances.setdefault(n.name.partition("/")[0], set()).add(key)
    assert set(instances) == {"tfplace_r0", "tfplace_r1"}          # both micro-batches
    assert not instances["tfplace_r0"] & instances["tfplace_r1"]
    assert "splits inside pipeline stage 1 of 2" in plan.summary()


def test_split_variables_in_two_stages(local4) -> None:
    """A column-split Dense in stage 0 and a row-split Dense in stage 1 (gpipe, 2
    micro-batches): one split plan per stage, each on its stage's two devices; the gradient
    IdentityN is one Identity per gradient, so no op is split by both stages."""
    from tfplace.splits.splitplan import SplitPlan
    ref, (model, step) = models.twin("mlp")
    d = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    pstep = tfplace.parallelize(step, cluster=local4, splits=f"{d[0].name}:S(1);"
                                f"{d[2].name}:S(0)", pipeline_stages=2, micro_batches=2,
                                schedule="gpipe", stage_boundaries=[f"{d[1].name}_1"])
    models.assert_same_training(ref, (model, pstep), kind="mlp")
    plan = pstep.plan
    groups = [st.devices for st in plan.pipeline.stages]
    assert [p.devices for p in plan.splits.parts] == groups
    assert not ({o.name for o in plan.splits.parts[0].ops} &
                {o.name for o in plan.splits.parts[1].ops})
    shards: dict[str, set[str]] = {}
    for _n, orig, placed in pstep.executor.pairs:
        if "_shard" in placed.name:
            shards.setdefault(orig.name.split(":")[0], set()).add(placed.device)
    assert shards[d[0].kernel.path] == set(groups[0]), shards
    assert shards[d[2].kernel.path] == set(groups[1]), shards
    gd = pstep.executor.graph_def
    boxing = _groups(gd, "tfplace_split/")          # all-reduces: within one stage's group
    assert boxing and all(g in [set(x) for x in groups] for g in boxing), boxing
    assert SplitPlan.from_bytes(plan.splits.to_bytes()) == plan.splits
    assert "splits inside pipeline stages 0, 1 of 2" in plan.summary()


def test_an_op_split_by_two_stages_is_a_plan_error() -> None:
    from tfplace.split_parallel import _check_disjoint
    from tfplace.splits.layout import B, parse_layout
    from tfplace.splits.splitplan import SplitOp, SplitPlan
    op = SplitOp("adam/Identity_3", "Identity", (parse_layout("S(0)"),), (parse_layout("S(0)"),))
    parts = [SplitPlan(devices=("a", "b"), ops=(op,)), SplitPlan(devices=("c", "d"), ops=(op,))]
    with pytest.raises(PlanError, match=r"'adam/Identity_3' is split by the split variables of "
                                        r"two pipeline stages \(on a, b and on c, d\)"):
        _check_disjoint(parts)
    _check_disjoint([parts[0], SplitPlan(devices=("c", "d"),
                                         ops=(SplitOp("x", "Identity", (B,), (B,)),))])


@pytest.mark.parametrize("devices,stages,words", [
    (3, 2, ["2 pipeline stages on 3 devices", "3 / 2 = 1.5", "[1]", "4 devices"]),
    (4, 4, ["4 / 4 = 1", "[1, 2]", "8 devices"]),
    (4, "auto", ["pipeline_stages=K", "'auto'"]),
])
def test_stage_groups_errors(devices, stages, words) -> None:
    from tfplace.split_compose import stage_groups
    with pytest.raises(PlanError) as err:
        stage_groups([f"d{i}" for i in range(devices)], stages)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert stage_groups(["a", "b", "c", "d"], 2) == [("a", "b"), ("c", "d")]


def test_ps_sync_with_splits_is_a_plan_error(local4) -> None:
    _ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, splits=_spec(model), data_parallel=2,
                                sync="ps")
    with pytest.raises(PlanError, match=r"sync='ps' are not supported.*use sync='ring'"):
        pstep.plan_for(*models.data("mlp"))
