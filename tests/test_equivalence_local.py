"""5 steps through tfplace on 4 logical devices equal the plain single-device step (1e-5 rel)."""
from __future__ import annotations

import pytest

import models
import tfplace

KINDS = ("mlp", "cnn", "transformer")


def _check_placement_is_real(step) -> None:
    ex = step.executor
    placed_on = {node: placed.device for node, _orig, placed in ex.pairs}
    assert set(placed_on) == {vp.node for vp in ex.plan.variables}
    for vp in ex.plan.variables:
        assert placed_on[vp.node].endswith(vp.device.split("/job:localhost/replica:0/task:0")[-1])


@pytest.mark.parametrize("placer", ["m_etf", "round_robin"])
@pytest.mark.parametrize("kind", KINDS)
def test_local_cluster_matches_single_device(kind, placer, local4):
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=local4, placer=placer)
    models.assert_same_training(ref, (model, pstep), kind=kind)
    plan = pstep.plan
    assert {o.name for o in plan.ops} == {n.name for n in pstep.executor.graph_def.node}
    if placer == "round_robin":
        assert len(plan.devices_used) == 4
        assert pstep.executor.moved_variables > 0
    _check_placement_is_real(pstep)


def test_decorator_form_and_plan_roundtrip(local4, tmp_path):
    import tensorflow as tf
    ref, (model, step) = models.twin("mlp")

    @tfplace.parallelize(cluster=local4, placer="round_robin")
    @tf.function
    def wrapped(x, y):
        return step(x, y)

    models.assert_same_training(ref, (model, wrapped), kind="mlp")
    plan = wrapped.plan
    path = tmp_path / "plan.pbtxt"
    plan.save(str(path))
    again = tfplace.Plan.load(str(path))
    assert again.to_bytes() == plan.to_bytes()
    assert "CPU:3" in plan.summary()
