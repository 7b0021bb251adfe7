"""Replicas on 2 loopback gRPC workers (2 devices each) equal the single-device step."""
from __future__ import annotations

import pytest

import models
import tfplace


@pytest.mark.parametrize("replicas,sync", [(2, "ring"), (2, "ps"), (4, "hierarchical"),
                                           (4, "ring")])
@pytest.mark.parametrize("kind", ["mlp", "cnn", "embedding"])
def test_grpc_replicas_match_single_device(kind, replicas, sync, workers2):
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=workers2, placer="single",
                                data_parallel=replicas, sync=sync)
    models.assert_same_training(ref, (model, pstep), kind=kind)
    tasks = {placed.device.split("/device:")[0] for _n, _o, placed in pstep.executor.pairs}
    assert tasks == {"/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"}


def test_grpc_several_steps_per_call_match_single_device(workers2):
    """``run(steps_per_execution=3)``: 6 steps in 2 calls, the collectives of each copy of the
    step keyed apart, across the two workers."""
    import numpy as np
    import tensorflow as tf
    batches = [tuple(tf.constant(v) for v in models.data("mlp", seed=i)) for i in range(6)]
    (ref_model, ref_step), (model, step) = models.twin("mlp")
    ref_losses = [float(ref_step(*b)) for b in batches]
    pstep = tfplace.parallelize(step, cluster=workers2, placer="single",
                                data_parallel=4, sync="ring")
    losses = [float(o) for o in pstep.run(batches, steps_per_execution=3)]
    models.assert_close(losses, ref_losses)
    for w_ref, w_got in zip(ref_model.get_weights(), model.get_weights()):
        models.assert_close(w_got, w_ref)
    assert list(pstep.executor._multi) == [(3, "whole")]  # noqa: SLF001


def test_grpc_prefetch_reads_each_share_on_its_worker(workers2):
    """``step.prefetch(dataset)``: each worker reads its replicas' shares itself, inside the
    step (2 replicas, one per worker; 3 steps, then 2 in one call)."""
    import numpy as np
    import tensorflow as tf
    parts = [models.data("mlp", seed=i) for i in range(5)]
    ds = tf.data.Dataset.from_tensor_slices(
        tuple(np.concatenate([p[k] for p in parts]) for k in (0, 1))).batch(16)
    (ref_model, ref_step), (model, step) = models.twin("mlp")
    ref_losses = [float(ref_step(x, y)) for x, y in ds]
    pstep = tfplace.parallelize(step, cluster=workers2, placer="single",
                                data_parallel=2, sync="ring")
    it = pstep.prefetch(ds)
    losses = [float(pstep(*next(it))) for _ in range(3)]
    losses += [float(v) for v in pstep.run(it, steps_per_execution=2)]
    models.assert_close(losses, ref_losses)
    for w_ref, w_got in zip(ref_model.get_weights(), model.get_weights()):
        models.assert_close(w_got, w_ref)
    fn = pstep.executor._multi[2, "lazy"]                    # noqa: SLF001
    reads = sorted(op.device.split("/device:")[0] for op in fn.graph.get_operations()
                   if op.type == "IteratorGetNext")
    assert reads == ["/job:worker/replica:0/task:0"] * 2 + ["/job:worker/replica:0/task:1"] * 2
