"""2 pipeline stages on 2 loopback gRPC workers equal the single-device full-batch step."""
from __future__ import annotations

import pytest

import models
import tfplace


@pytest.mark.parametrize("kind,schedule,micro", [
    ("mlp8", "gpipe", 4), ("mlp8", "1f1b", 8), ("mlp8", "1f1b", 1), ("encoder4", "1f1b", 4)])
def test_grpc_pipeline_matches_single_device(kind, schedule, micro, workers2):
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=workers2, pipeline_stages=2, micro_batches=micro,
                                schedule=schedule)
    models.assert_same_training(ref, (model, pstep), kind=kind)
    pipe = pstep.plan.pipeline
    # one stage per worker: activations and gradients cross between the processes
    assert [s.devices[0].split("/device:")[0] for s in pipe.stages] == \
        ["/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"]
    homes = {p.device.split("/device:")[0] for _n, _o, p in pstep.executor.pairs}
    assert homes == {"/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"}
