"""5 steps on launch_local(workers=2, devices_per_worker=2) equal the plain step (1e-5 rel)."""
from __future__ import annotations

import pytest

import models
import tfplace


@pytest.mark.parametrize("placer", ["m_etf", "round_robin"])
@pytest.mark.parametrize("kind", ["mlp", "cnn", "transformer"])
def test_grpc_workers_match_single_device(kind, placer, workers2):
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=workers2, placer=placer)
    models.assert_same_training(ref, (model, pstep), kind=kind)
    ex = pstep.executor
    # every variable really lives on a worker, on the device the plan gave it
    assert ex.moved_variables == len(ex.plan.variables)
    for vp, (_node, _orig, placed) in zip(ex.plan.variables, ex.pairs):
        assert placed.device == vp.device
        assert placed.device.startswith("/job:worker/")
    if placer == "round_robin":
        assert {d.split("/device:")[0] for d in ex.plan.devices_used} == {
            "/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"}


def test_dead_worker_is_reported(workers2):
    """Checked last in this module: it needs its own cluster so the shared one stays alive."""
    import tensorflow as tf
    from tfplace.errors import WorkerLost
    launcher = workers2._launcher
    assert launcher.dead() == []
