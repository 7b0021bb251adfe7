"""N synchronous replicas on the global batch equal the single-device step (1e-5 relative)."""
from __future__ import annotations

import sys

import pytest

import models
import tfplace
from tfplace.errors import BackendError, PlanError


@pytest.mark.parametrize("sync", ["ring", "ps", "hierarchical"])
@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("kind", ["mlp", "cnn", "embedding"])
def test_replicas_match_single_device(kind, replicas, sync, local4):
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=local4, placer="single",
                                data_parallel=replicas, sync=sync)
    models.assert_same_training(ref, (model, pstep), kind=kind)
    plan = pstep.plan
    assert plan.num_replicas == replicas and plan.sync.method == sync
    assert sync in plan.summary() and "why:" in plan.summary()
    ex = pstep.executor
    per_replica = len(ex.plan.variables)
    copies = {}
    for _n, orig, _p in ex.pairs:
        copies[orig.name] = copies.get(orig.name, 0) + 1
    if sync == "ps":
        # weights and optimizer slots live once, on a PS shard; the rest once per replica
        trained = {v.path + ":0" for v in model.trainable_variables}
        assert all(copies[name] == 1 for name in trained)
        assert sum(1 for n in copies if n.endswith(("momentum:0", "velocity:0"))) == \
            2 * len(trained)
        assert all(copies[n] == 1 for n in copies if n.endswith(("momentum:0", "velocity:0")))
        assert all(copies[n] == replicas for n in copies if "iteration" in n)
    else:
        # every replica holds its own copy of every variable, on its own devices
        assert len(ex.pairs) == replicas * per_replica
        assert set(copies.values()) == {replicas}
        assert len({placed.device for _n, _o, placed in ex.pairs}) == replicas
    if kind == "embedding":
        assert "IndexedSlices" in plan.sync.reason


def test_ps_shards_variables_and_updates_once(local4):
    """sync="ps": each weight and its slots live on one PS shard (balanced over the replica
    leaders), only there are they updated, and the other replicas hold no copy of them."""
    ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=4,
                                sync="ps", fusion_bytes=1)
    models.assert_same_training(ref, (model, pstep), kind="mlp")
    ex = pstep.executor
    homes = {orig.name: placed.device for _n, orig, placed in ex.pairs
             if orig.name in {v.path + ":0" for v in model.trainable_variables}}
    assert len(homes) == len(model.trainable_variables)
    assert len(set(homes.values())) == 4                    # 6 weights over 4 shards
    placeholders = {n.name for n in ex.graph_def.node if n.op == "Placeholder"}
    writes = [n for n in ex.graph_def.node
              if n.op.startswith(("Assign", "ResourceApply")) and n.input[0] in placeholders]
    written = {}
    for n in writes:
        written.setdefault(n.input[0], []).append(n)
    for ph, ops in written.items():
        assert len({o.device for o in ops} | {ex.graph_def.node[[m.name for m in
                   ex.graph_def.node].index(ph)].device}) == 1     # updated where it lives
    for _n, orig, placed in ex.pairs:
        if orig.name in homes:
            assert placed.device == homes[orig.name]


def test_replicas_combine_with_placement(local4):
    """2 replicas, each spread over 2 devices by the placer."""
    ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="round_robin", data_parallel=2)
    models.assert_same_training(ref, (model, pstep), kind="mlp")
    devices = {placed.device for _n, _o, placed in pstep.executor.pairs}
    assert len(devices) == 4


def test_transformer_replicas(local4):
    ref, (model, step) = models.twin("transformer")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=4)
    models.assert_same_training(ref, (model, pstep), kind="transformer")


def test_bad_data_parallel_input(local4, monkeypatch):
    (_, step) = models.twin("mlp")[1]
    x, y = models.data("mlp", batch=10)
    with pytest.raises(PlanError, match="batch 10"):
        tfplace.parallelize(step, cluster=local4, data_parallel=4)(x, y)
    with pytest.raises(PlanError, match="has 4 devices"):
        tfplace.parallelize(step, cluster=local4, data_parallel=8)
    with monkeypatch.context() as m:             # as if Horovod were not built
        m.setitem(sys.modules, "horovod", None)
        m.setitem(sys.modules, "horovod.tensorflow", None)
        with pytest.raises(BackendError, match="make horovod"):
            tfplace.parallelize(step, cluster=local4, data_parallel=2,
                                sync_backend="horovod")(*models.data("mlp"))
    with pytest.raises(PlanError, match="unknown sync"):
        tfplace.parallelize(step, cluster=local4, data_parallel=2, sync="tree")(*models.data("mlp"))


@pytest.mark.parametrize("backend,collectives", [("tf", True), ("dataflow", False)])
def test_ring_backend_choice(backend, collectives, local4):
    """In one process, the "tf" backend's ring is TF's CollectiveReduceV2; "dataflow" builds
    the chunked ring from placed AddV2/Identity nodes. Both equal the single-device step."""
    ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=4,
                                sync="ring", sync_backend=backend)
    models.assert_same_training(ref, (model, pstep), kind="mlp")
    ops = {n.op for n in pstep.executor.graph_def.node}
    assert ("CollectiveReduceV2" in ops) == collectives
    assert ("AddV2" in {n.op for n in pstep.executor.graph_def.node
                        if "tfplace_sync/ring_add" in n.name}) == (not collectives)


def test_same_names_other_shapes_get_their_own_collective_keys(local4):
    """Two models with the same layer names but other widths, data parallel in one process:
    TF keeps one shape per collective instance key in a process, so a key from names alone
    would make the second step fail ("Shape mismatch in the collective instance") and poison
    every collective after it."""
    import keras
    import numpy as np
    import tensorflow as tf

    def model_and_step(width: int):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(width, name="hidden"),
                                  keras.layers.Dense(2, name="out")], name="same")
        return model, models.make_step(model)

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((8, 6)).astype("float32"))
    y = tf.constant(rng.standard_normal((8, 2)).astype("float32"))
    for width in (5, 9):
        ref_model, ref_step = model_and_step(width)
        model, step = model_and_step(width)
        pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=2,
                                    sync="ring")
        for _ in range(2):
            np.testing.assert_allclose(float(pstep(x, y)), float(ref_step(x, y)), rtol=1e-5)
        assert any(n.op == "CollectiveReduceV2" for n in pstep.executor.graph_def.node)
        for w_ref, w_got in zip(ref_model.get_weights(), model.get_weights()):
            models.assert_close(w_got, w_ref)
