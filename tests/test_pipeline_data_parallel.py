"""R=2 replicas of a K=2-stage pipeline on 4 devices equal the single-device full-batch step.

Each replica runs the pipeline on its half of the batch in M micro-batches; each stage's
accumulated gradients are all-reduced across the two replicas of that stage. Losses, weights
and optimizer slots must match one device on the whole batch within 1e-5 relative.
"""
from __future__ import annotations

import numpy as np
import pytest

import models
import tfplace
from tfplace.errors import PlanError
from tfplace.plan import Plan
from tfplace.rewrite.pipeline import done_name
from tfplace.runtime.executor import _replica_path

R, K = 2, 2


def _check_graph(pstep) -> None:
    """Every copy of an op runs on its stage's device in its replica; each replica chains its
    stages' segments in schedule order; each stage's gradients are reduced between the
    replicas of that stage only."""
    plan = pstep.plan
    pipe = plan.pipeline
    assert plan.num_replicas == R and pipe.num_stages == K
    assert plan.replicas[0] == tuple(s.devices[0] for s in pipe.stages)
    assert len({d for g in plan.replicas for d in g}) == R * K
    placement = plan.placement()
    gd = pstep.executor.graph_def
    nodes = {n.name: n for n in gd.node}
    wrong = []
    for n in gd.node:
        path, base = _replica_path(n.name)
        if len(path) == 2 and base in placement and not base.startswith("tfplace_"):
            want = dict(zip(plan.replicas[0], plan.replicas[path[0]]))[placement[base]]
            if n.device != want:
                wrong.append((n.name, n.device, want))
    assert not wrong, wrong[:5]
    for r in range(R):
        for s, order in enumerate(pipe.orders()):
            dones = [f"tfplace_r{r}/{done_name(s, op)}" for op in order]
            assert all(nodes[d].device == plan.replicas[r][s] for d in dones)
    reduces = [n for n in gd.node if n.op == "CollectiveReduceV2"]
    assert len(reduces) == R * len(plan.buckets)
    groups = {}
    for n in reduces:
        key = next(nodes[i].attr["value"].tensor.int_val[0] for i in n.input[1:4]
                   if i.split("/")[-1].startswith("group_key"))
        groups.setdefault(key, set()).add(n.device)
    stage_groups = {frozenset(g[s] for g in plan.replicas) for s in range(K)}
    assert {frozenset(d) for d in groups.values()} == stage_groups


@pytest.mark.parametrize("kind,schedule,micro", [("mlp", "gpipe", 4), ("mlp8", "1f1b", 2)])
def test_replicated_pipeline_matches_single_device(kind, schedule, micro, local4):
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=local4, pipeline_stages=K, micro_batches=micro,
                                schedule=schedule, data_parallel=R)
    models.assert_same_training(ref, (model, pstep), kind=kind)
    for a, b in zip(ref[0].step_optimizer.variables, model.step_optimizer.variables):
        models.assert_close(np.asarray(b), np.asarray(a))
    pipe = pstep.plan.pipeline
    assert (pipe.schedule, pipe.micro_batches, pipe.global_batch) == (schedule, micro, 16)
    assert pstep.plan.sync.method == "ring"
    _check_graph(pstep)
    assert Plan.from_bytes(pstep.plan.to_bytes()) == pstep.plan
    summary = pstep.plan.summary()
    assert f"{R} replicas x {K} stages" in summary and "schedule" in summary


def test_fit_callback_replicated_pipeline(local4):
    ref, got = models.compiled_twin("mlp")
    x, y = models.data("mlp", batch=32)
    h_ref = ref.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    cb = tfplace.keras.Parallelize(cluster=local4, pipeline_stages=K, micro_batches=2,
                                   schedule="gpipe", data_parallel=R, sync="ps")
    h_got = got.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    assert cb.plan.num_replicas == R and cb.plan.pipeline.num_stages == K
    assert cb.plan.sync.method == "ps"
    np.testing.assert_allclose(h_got.history["loss"], h_ref.history["loss"], rtol=1e-5)
    for w_ref, w_got in zip(ref.get_weights(), got.get_weights()):
        models.assert_close(w_got, w_ref)


def test_plan_errors(local4):
    _ref, (_model, step) = models.twin("mlp8")
    x, y = models.data("mlp8")              # a batch of 16
    with pytest.raises(PlanError, match=r"data_parallel=2 x pipeline_stages=3 needs 6 devices "
                                        r"but the cluster has 4"):
        tfplace.parallelize(step, cluster=local4, pipeline_stages=3, data_parallel=2)
    with pytest.raises(PlanError, match=r"data_parallel=4 x pipeline_stages=2 needs 8 devices"):
        tfplace.keras.Parallelize(cluster=local4, pipeline_stages=2, data_parallel=4)
    with pytest.raises(PlanError, match=r"global batch of 16 does not split into data_parallel="
                                        r"2 x micro_batches=3 = 6 .*multiple of 6"):
        tfplace.parallelize(step, cluster=local4, pipeline_stages=2, micro_batches=3,
                            data_parallel=2)(x, y)
    with pytest.raises(PlanError, match="sync_backend='horovod' is not supported"):
        tfplace.parallelize(step, cluster=local4, pipeline_stages=2, data_parallel=2,
                            sync_backend="horovod")


def test_replica_counts_and_cli_batch(local4):
    """'auto' fills the devices with whole pipelines; the CLI captures one replica's
    micro-batch of --batch-size."""
    import argparse
    from tfplace.cli_options import _planned_replicas, _replica_micro_batch
    from tfplace.pipeline_replicas import replica_count
    assert replica_count(local4, "auto", 2) == 2 and replica_count(local4, "auto", 4) == 1
    assert replica_count(local4, 2, "auto") == 2
    with pytest.raises(PlanError, match="leaves both counts open"):
        replica_count(local4, "auto", "auto")
    assert _planned_replicas(local4, "auto", "tf", {"stages": 2}) == 2
    args = argparse.Namespace(batch_size=24)
    assert _replica_micro_batch(args, 2, 3) == 4
    with pytest.raises(PlanError, match=r"global batch of 24 .* = 10 equal .*\(24 % 10 = 4\)"):
        _replica_micro_batch(args, 2, 5)
