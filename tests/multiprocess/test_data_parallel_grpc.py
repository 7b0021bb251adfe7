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
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-7)
    for w_ref, w_got in zip(ref_model.get_weights(), model.get_weights()):
        np.testing.assert_allclose(w_got, w_ref, rtol=1e-5, atol=1e-7)
    assert list(pstep.executor._multi) == [3]                  # noqa: SLF001
