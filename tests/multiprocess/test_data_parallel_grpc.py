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
