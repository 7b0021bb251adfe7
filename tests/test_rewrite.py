"""The placement pass sets every device, never mutates its input, and rejects a stale plan."""
from __future__ import annotations

import dataclasses

import pytest

import models
import tfplace
from tfplace.api import plan_captured, rewrite_captured
from tfplace.capture import capture
from tfplace.errors import PlanError
from tfplace.rewrite import placement


def _captured():
    (_, step) = models.twin("mlp")[0]
    return capture(step, models.data("mlp"))


def test_sets_devices_and_leaves_input_alone(local4):
    c = _captured()
    before = c.graph_def.SerializeToString(deterministic=True)
    plan = plan_captured(c, local4, placer="round_robin")
    out = rewrite_captured(c, plan)
    assert c.graph_def.SerializeToString(deterministic=True) == before
    where = plan.placement()
    assert all(n.device == where[n.name] for n in out.node)
    assert len({n.device for n in out.node}) == 4
    assert [n.name for n in out.node] == [n.name for n in c.graph_def.node]


def test_plan_for_another_graph_is_rejected(local4):
    c = _captured()
    plan = plan_captured(c, local4, placer="single")
    other = dataclasses.replace(plan, graph_fingerprint="0" * 16)
    with pytest.raises(PlanError, match="re-plan"):
        rewrite_captured(c, other)
    partial = dataclasses.replace(plan, ops=plan.ops[1:], graph_fingerprint="")
    with pytest.raises(PlanError, match="no device in the plan"):
        placement.apply(c.graph_def, partial)
