"""Model-parallel splits across gRPC workers: 5 steps on launch_local(workers=2,
devices_per_worker=2) equal the plain step (1e-5 rel), each shard on its own worker device."""
from __future__ import annotations

import keras

import models
import tfplace


def test_mlp_split_over_grpc_workers(workers2):
    ref, (model, step) = models.twin("mlp")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    pstep = tfplace.parallelize(step, cluster=workers2,
                                splits=f"{dense[0].name}:S(1);{dense[1].name}:S(0)")
    models.assert_same_training(ref, (model, pstep), kind="mlp")
    ex = pstep.executor
    placed = {node: p for node, _o, p in ex.pairs}
    for orig, axis, nodes in ex.shards.values():
        devices = [placed[n].device for n in nodes]
        assert len(set(devices)) == 4 and all(d.startswith("/job:worker/") for d in devices)
        assert sum(placed[n].shape[axis] for n in nodes) == orig.shape[axis]
    assert {d.split("/device:")[0] for _o, _a, nodes in ex.shards.values()
            for d in (placed[n].device for n in nodes)} == {
        "/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"}
