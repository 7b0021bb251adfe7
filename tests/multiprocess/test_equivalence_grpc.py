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
    placed_on = {node: placed.device for node, _orig, placed in ex.pairs}
    assert set(placed_on) == {vp.node for vp in ex.plan.variables}
    for vp in ex.plan.variables:
        assert placed_on[vp.node] == vp.device and vp.device.startswith("/job:worker/")
    if placer == "round_robin":
        assert {d.split("/device:")[0] for d in ex.plan.devices_used} == {
            "/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"}
