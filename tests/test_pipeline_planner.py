"""plan_pipeline on hand-made units: exact stages, memory, boundaries, auto K, errors."""
from __future__ import annotations

import pytest

from tfplace.cluster import Cluster, Device
from tfplace.errors import PlanError
from tfplace.pipeline.planner import plan_pipeline
from tfplace.pipeline.units import Unit

MIB = 2**20


def dev(i: int) -> str:
    return f"/job:localhost/replica:0/task:0/device:CPU:{i}"


def cluster(n: int, memory: int = 64 * MIB) -> Cluster:
    return Cluster(devices=tuple(Device(dev(i), "CPU", memory, 1e9) for i in range(n)),
                   default_bandwidth=1e9, default_latency=0.0)


def units(flops: list[float], *, params: int = 0, stash: int = 0, act: int = 0) -> list[Unit]:
    return [Unit(f"l{i}", flops=f * 1e6, param_bytes=params, out_bytes=act, grad_bytes=act,
                 stash_bytes=stash, ops=(f"l{i}/MatMul", f"gradient_tape/l{i}/MatMul"))
            for i, f in enumerate(flops)]


def stage_units(plan) -> list[tuple[str, ...]]:
    return [s.units for s in plan.stages]


def test_exact_balanced_stages_and_step() -> None:
    p = plan_pipeline(units([4, 1, 1, 2, 2, 2, 4, 1]), cluster(4), stages=4, micro_batches=4)
    assert stage_units(p) == [("l0",), ("l1", "l2", "l3"), ("l4", "l5"), ("l6", "l7")]
    assert [s.flops for s in p.stages] == [4e6, 4e6, 4e6, 5e6]
    assert [s.devices for s in p.stages] == [(dev(0),), (dev(1),), (dev(2),), (dev(3),)]
    assert p.stages[1].ops == ("l1/MatMul", "gradient_tape/l1/MatMul", "l2/MatMul",
                               "gradient_tape/l2/MatMul", "l3/MatMul", "gradient_tape/l3/MatMul")
    assert p.stages[3].seconds == pytest.approx(5e6 / 4 / 1e9)
    assert p.predicted_step_seconds == pytest.approx(5e6 / 4 / 1e9 * (4 + 4 - 1))
    assert [s.stash for s in p.stages] == [4, 3, 2, 1]
    assert [(q.src, q.dst, q.direction, q.capacity) for q in p.queues] == [
        (0, 1, "forward", 2), (1, 0, "backward", 2), (1, 2, "forward", 2),
        (2, 1, "backward", 2), (2, 3, "forward", 2), (3, 2, "backward", 2)]
    assert p.stage_of("gradient_tape/l5/MatMul") == 2


def test_peak_memory_counts_params_stash_and_queues() -> None:
    u = units([1, 1, 1, 1], params=MIB, stash=4096, act=8192)
    g = plan_pipeline(u, cluster(2), stages=2, micro_batches=4, schedule="gpipe", capacities=2)
    f = plan_pipeline(u, cluster(2), stages=2, micro_batches=4, schedule="1f1b", capacities=2)
    # params 2 MiB + stash x 2 units x 1 KiB + 2 slots x 2 KiB of the queue it receives into
    assert [s.peak_bytes for s in g.stages] == [2 * MIB + 4 * 2048 + 2 * 2048] * 2
    assert [s.peak_bytes for s in f.stages] == [2 * MIB + 2 * 2048 + 4096, 2 * MIB + 2048 + 4096]
    assert [q.item_bytes for q in f.queues] == [2048, 2048]
    # a micro-batch: 2 units' FLOPs at 1 GFLOP/s, then 2 KiB of activations at 1 GB/s
    assert f.stages[0].seconds == pytest.approx(2e6 / 4 / 1e9 + 2048 / 1e9)


def test_memory_moves_the_split() -> None:
    u = units([1, 1, 1, 3], params=MIB)
    assert stage_units(plan_pipeline(u, cluster(2), stages=2, micro_batches=1)) == [
        ("l0", "l1", "l2"), ("l3",)]
    tight = cluster(2, memory=2 * MIB + MIB // 2)       # two units' params per device at most
    assert stage_units(plan_pipeline(u, tight, stages=2, micro_batches=1)) == [
        ("l0", "l1"), ("l2", "l3")]


def test_infeasible_memory_lists_every_stage() -> None:
    u = units([1, 1, 1, 1], params=MIB, stash=MIB)
    with pytest.raises(PlanError) as e:
        plan_pipeline(u, cluster(2, memory=3 * MIB), stages=2, micro_batches=2, schedule="gpipe")
    assert str(e.value) == (
        "no split of 4 units into 2 stages fits the devices' memory (schedule 'gpipe', M=2); "
        "the fastest split needs:\n"
        f"  - stage 0 (l0..l1) on {dev(0)}: needs 4.0 MiB (4194304 B, stash 2) of 3.0 MiB "
        "(3145728 B)  <- too much\n"
        f"  - stage 1 (l2..l3) on {dev(1)}: needs 4.0 MiB (4194304 B, stash 2) of 3.0 MiB "
        "(3145728 B)  <- too much\n"
        "fix: more pipeline_stages, devices with more memory, schedule='1f1b' (stashes at most "
        "K-s micro-batches, not M)")


def test_stage_boundaries_by_unit_or_op_name() -> None:
    u = units([4, 1, 1, 2, 2, 2, 4, 1])
    p = plan_pipeline(u, cluster(2), stages=2, micro_batches=2, stage_boundaries=["l6"])
    assert stage_units(p)[1] == ("l6", "l7")
    p = plan_pipeline(u, cluster(3), stages=3, micro_batches=2,
                      stage_boundaries=("gradient_tape/l2/MatMul", "l7"))
    assert [s.units[0] for s in p.stages] == ["l0", "l2", "l7"]


def test_stage_boundary_errors() -> None:
    u = units([1, 1, 1])
    with pytest.raises(PlanError, match=r"stage_boundaries \('dense_9'\) name no unit or op; "
                                        r"valid units: l0, l1, l2 \(or any of their ops\)"):
        plan_pipeline(u, cluster(2), stages=2, micro_batches=1, stage_boundaries="dense_9")
    with pytest.raises(PlanError, match=r"stage_boundaries \(l1, l2\) need 3 stages but "
                                        r"pipeline_stages=2"):
        plan_pipeline(u, cluster(2), stages=2, micro_batches=1, stage_boundaries=["l1", "l2"])


@pytest.mark.parametrize("m, want", [(4, 4), (1, 1)])
def test_auto_stages(m: int, want: int) -> None:
    # M=4: K=1 4.0, K=2 2.5, K=4 1.75 (x flops unit); M=1: K=1, 2 and 4 tie at 4 -> fewest
    p = plan_pipeline(units([1, 1, 1, 1]), cluster(4), stages="auto", micro_batches=m)
    assert p.num_stages == want


def test_auto_skips_stage_counts_that_do_not_fit() -> None:
    u = units([1, 1, 1, 1], params=MIB)
    p = plan_pipeline(u, cluster(4, memory=MIB + MIB // 2), stages="auto", micro_batches=1)
    assert p.num_stages == 4                # nothing else fits one unit per device


@pytest.mark.parametrize("kwargs, match", [
    (dict(stages=5), r"5 stages need 5 devices but the cluster has 4"),
    (dict(stages=2, global_batch=10, micro_batches=4), r"global batch of 10 does not split into 4"),
    (dict(stages=2, schedule="zb"), r"unknown pipeline schedule 'zb' \(valid: 1f1b, gpipe\)"),
    (dict(stages="two"), r"pipeline_stages must be an int or 'auto' \(got 'two'\)"),
    (dict(stages=2, devices=["/cpu:9"]), r"pipeline devices \(/cpu:9\) are not cluster devices"),
    (dict(stages=2, micro_batches=4, capacities=0),
     r"schedule '1f1b' deadlocks with K=2 stages, M=4 micro-batches, forward queue capacities "
     r"\(0\) and backward \(0\): .* give every queue capacity >= 1"),
])
def test_errors(kwargs: dict, match: str) -> None:
    kwargs.setdefault("micro_batches", 2)
    with pytest.raises(PlanError, match=match):
        plan_pipeline(units([1, 1, 1, 1, 1]), cluster(4), **kwargs)


def test_capacities_per_direction_and_gpipe_rendezvous() -> None:
    u = units([1, 1, 1, 1])
    p = plan_pipeline(u, cluster(2), stages=2, micro_batches=4, capacities=(1, 0))
    assert p.capacities("forward") == (1,) and p.capacities("backward") == (0,)
    g = plan_pipeline(u, cluster(2), stages=2, micro_batches=4, schedule="gpipe", capacities=0)
    assert [q.peak for q in g.queues] == [0, 0]


def test_device_groups_span_a_stage() -> None:
    p = plan_pipeline(units([1, 1, 1, 1]), cluster(4), stages=2, micro_batches=2,
                      devices=[[dev(0), dev(1)], [dev(2), dev(3)]])
    assert [s.devices for s in p.stages] == [(dev(0), dev(1)), (dev(2), dev(3))]
    assert p.stages[0].seconds == pytest.approx(2e6 / 2 / 2e9)      # two devices' FLOP/s
