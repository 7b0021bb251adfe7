"""2 replicas x 2 pipeline stages on 2 loopback gRPC workers x 2 devices equal the
single-device full-batch step: each worker runs one whole pipeline on its half of the batch,
and each stage's gradients are all-reduced between the workers."""
from __future__ import annotations

import models
import tfplace


def test_grpc_replicated_pipeline_matches_single_device(workers2):
    ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=workers2, pipeline_stages=2, micro_batches=2,
                                schedule="1f1b", data_parallel=2)
    models.assert_same_training(ref, (model, pstep), kind="mlp")
    plan = pstep.plan
    tasks = [{d.split("/device:")[0] for d in g} for g in plan.replicas]
    assert tasks == [{"/job:worker/replica:0/task:0"}, {"/job:worker/replica:0/task:1"}]
    assert plan.pipeline.num_stages == 2 and len(set(plan.replicas[0])) == 2
    # the stage gradients cross between the workers, every variable has a copy on both
    reduces = [n for n in pstep.executor.graph_def.node
               if n.op in ("CollectiveReduceV2", "AddV2") and n.name.startswith("tfplace_sync/")]
    assert {n.device.split("/device:")[0] for n in reduces} == \
        {"/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"}
    homes = {p.device.split("/device:")[0] for _n, _o, p in pstep.executor.pairs}
    assert homes == {"/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"}
