"""PipelinePlan: proto round trip, byte-identical bytes, inside Plan, and the summary text."""
from __future__ import annotations

import dataclasses
import hashlib

import pytest
from test_plan import small_plan
from test_pipeline_planner import cluster, dev, units

from tfplace.errors import PlanError
from tfplace.pipeline.planner import plan_pipeline
from tfplace.pipeline.value import PipelinePlan
from tfplace.plan import Plan
from tfplace.planio import load_plan, pipeline_lines, save_plan, summary_table

MIB = 2**20


def pipe() -> PipelinePlan:
    return plan_pipeline(units([4, 1, 1, 2, 2, 2, 4, 1], params=MIB, stash=4096, act=8192),
                         cluster(2), stages=2, micro_batches=4, schedule="gpipe",
                         global_batch=32, capacities=(2, 1))


def test_round_trip_is_byte_identical() -> None:
    p = pipe()
    data = p.to_bytes()
    assert PipelinePlan.from_proto(p.to_proto()) == p
    assert PipelinePlan.from_bytes(data) == p and PipelinePlan.from_bytes(data).to_bytes() == data
    assert pipe().to_bytes() == data


def test_plan_carries_the_pipeline(tmp_path) -> None:
    plan = dataclasses.replace(small_plan(), pipeline=pipe())
    assert Plan.from_bytes(plan.to_bytes()) == plan
    assert Plan.from_bytes(plan.to_bytes()).to_bytes() == plan.to_bytes()
    for name in ("p.pbtxt", "p.pb"):
        save_plan(plan, tmp_path / name)
        assert load_plan(tmp_path / name) == plan
    assert b"schedule: \"gpipe\"" in (tmp_path / "p.pbtxt").read_bytes()


def test_plans_without_a_pipeline_keep_their_bytes() -> None:
    # sha256 of small_plan().to_bytes() before Plan had a pipeline field (commit 116d8a8)
    data = small_plan().to_bytes()
    assert hashlib.sha256(data).hexdigest() == \
        "4cf83f0ade9fc07c2ccda708290d54c66b6da6999fabe33f18eeeb0295597b91"
    assert Plan.from_bytes(data).pipeline is None
    assert "pipeline" not in summary_table(small_plan())


def test_queries() -> None:
    p = pipe()
    assert p.num_stages == 2 and p.queue(1, 0).direction == "backward"
    assert p.capacities("forward") == (2,) and p.capacities("backward") == (1,)
    assert p.orders()[0][:2] == (("F", 0), ("F", 1))
    assert p.timeline().stash_peak == (4, 4)
    where = p.placement()
    assert where["l3/MatMul"] == dev(0) and where["gradient_tape/l4/MatMul"] == dev(1)
    wide = plan_pipeline(units([1, 1]), cluster(3), stages=2, micro_batches=1,
                         devices=[dev(0), (dev(1), dev(2))])
    with pytest.raises(PlanError, match=r"stages \(1\) span several devices"):
        wide.placement()


def test_summary_lines() -> None:
    assert "\n".join(pipeline_lines(pipe())) == "\n".join([
        "pipeline: 2 stages, schedule gpipe, 4 micro-batches of a global batch of 32, "
        "predicted step 11.260 ms",
        "stage  devices                                       units              #ops     GFLOPs"
        "  param MiB   peak MiB      stash   ms/micro",
        "-" * 131,
        f"s0     {dev(0)}  l0 .. l3 (4)          8      0.008       4.00       4.02          4"
        "      2.002",
        f"s1     {dev(1)}  l4 .. l7 (4)          8      0.009       4.00       4.02          4"
        "      2.252",
        "queues: 2",
        "  s0 -> s1  forward   capacity  2  item   2.00 KiB  peak 0",
        "  s1 -> s0  backward  capacity  1  item   2.00 KiB  peak 0",
        "schedule:",
        "  tick  0              5",
        "  s0    F0 F1 F2 F3 .  .  B3 B2 B1 B0",
        "  s1    .  F0 F1 F2 F3 B3 B2 B1 B0 ."])
    assert summary_table(dataclasses.replace(small_plan(), pipeline=pipe())).endswith(
        "  s1    .  F0 F1 F2 F3 B3 B2 B1 B0 .")
