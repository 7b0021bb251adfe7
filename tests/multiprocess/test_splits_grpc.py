"""Model-parallel splits across gRPC workers: 5 steps on launch_local(workers=2,
devices_per_worker=2) equal the plain step (1e-5 rel), each shard on its own worker device."""
from __future__ import annotations

import keras
import pytest

import models
import tfplace


def _layers(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def _mlp(model):
    dense = _layers(model, keras.layers.Dense)
    return f"{dense[0].name}:S(1);{dense[1].name}:S(0)"


def _transformer(model):
    mha = _layers(model, keras.layers.MultiHeadAttention)[0]
    dense = _layers(model, keras.layers.Dense)
    return ";".join([f"{mha.name}/{p}:S(1)" for p in ("query", "key", "value")]
                    + [f"{mha.name}/attention_output:S(0)", f"{dense[0].name}:S(1)",
                       f"{dense[1].name}:S(0)"])


SPECS = {
    "mlp": (_mlp, 4),
    "embedding": (lambda m: f"{_layers(m, keras.layers.Embedding)[0].name}:S(0)", 2),
    "cnn": (lambda m: f"{_layers(m, keras.layers.Conv2D)[0].name}:S(3)", 4),
    "transformer": (_transformer, 2),
}


@pytest.mark.parametrize("kind", list(SPECS))
def test_split_over_grpc_workers(kind, workers2):
    spec, group = SPECS[kind]
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=workers2, splits=spec(model))
    models.assert_same_training(ref, (model, pstep), kind=kind)
    ex = pstep.executor
    placed = {node: p for node, _o, p in ex.pairs}
    assert ex.shards
    for orig, axis, nodes in ex.shards.values():
        devices = [placed[n].device for n in nodes]
        assert len(set(devices)) == group and all(d.startswith("/job:worker/") for d in devices)
        assert sum(placed[n].shape[axis] for n in nodes) == orig.shape[axis]
        # the group spans both workers
        assert {d.split("/device:")[0] for d in devices} == {
            "/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"}


def test_mlp_split_with_dataflow_boxing_over_grpc(workers2, monkeypatch):
    """Without collectives the reductions are AddN nodes, across the workers just the same."""
    import tfplace.runtime.devices as devices
    monkeypatch.setattr(devices, "collectives_ready", lambda cluster: False)
    ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=workers2, splits=_mlp(model))
    models.assert_same_training(ref, (model, pstep), kind="mlp")
    ops = [n.op for n in pstep.executor.graph_def.node]
    assert "CollectiveReduceV2" not in ops and "AddN" in ops


@pytest.mark.parametrize("pair", ["B>P", "B>S(1)", "P>B", "P>S(0)", "S(0)>B", "S(0)>P",
                                  "S(0)>S(1)", "S(1)>S(0)"])
def test_boxing_conversion_across_workers(pair, workers2):
    """Each conversion, built on the 4 worker devices, keeps the logical value."""
    import test_rewrite_splits as local
    from tfplace.splits.layout import parse_layout
    src, dst = (parse_layout(x) for x in pair.split(">"))
    local.test_conversion_keeps_the_value(src, dst, workers2)


def test_mlp_mesh_over_grpc_workers(workers2):
    """Splits x data parallel on 2 workers x 2 devices: a replica per worker, split over its
    two devices; each shard's gradient synced with the same shard on the other worker."""
    ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=workers2, splits=_mlp(model), data_parallel=2)
    models.assert_same_training(ref, (model, pstep), kind="mlp")
    plan = pstep.plan
    tasks = [{d.split("/device:")[0] for d in group} for group in plan.replicas]
    assert all(len(t) == 1 for t in tasks) and tasks[0] != tasks[1]   # a replica per worker
    shards: dict[str, set[str]] = {}
    for _n, orig, placed in pstep.executor.pairs:
        if "_shard" in placed.name:
            shards.setdefault(orig.name, set()).add(placed.device)
    assert shards and all(len(devices) == 4 for devices in shards.values())
