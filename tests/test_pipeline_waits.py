"""The queue wait graph: deadlocks rejected with the cycle and the fix, timing, queue peaks."""
from __future__ import annotations

import pytest

from tfplace.errors import PlanError
from tfplace.pipeline.grid import schedule_grid
from tfplace.pipeline.waits import (check_deadlock, find_deadlock, min_capacity,
                                    queue_capacities, simulate)


def test_1f1b_rendezvous_queues_deadlock_and_capacity_one_passes() -> None:
    # Stage 0 blocks sending F1 until stage 1 takes it; stage 1 first blocks sending B0, which
    # stage 0 takes only after F1.
    assert find_deadlock("1f1b", 2, 2, forward_capacity=0, backward_capacity=0) == [
        "s0:F1=s1:F1", "s0:B0=s1:B0", "s0:F1=s1:F1"]
    with pytest.raises(PlanError) as e:
        check_deadlock("1f1b", 2, 2, forward_capacity=0, backward_capacity=0)
    assert str(e.value) == (
        "schedule '1f1b' deadlocks with K=2 stages, M=2 micro-batches, forward queue capacities "
        "(0) and backward (0): s0:F1=s1:F1 -> s0:B0=s1:B0 -> s0:F1=s1:F1 (each waits on the "
        "next); give every queue capacity >= 1 (pipeline capacities=...)")
    check_deadlock("1f1b", 2, 2, forward_capacity=1, backward_capacity=1)      # the boundary
    check_deadlock("1f1b", 2, 2, forward_capacity=1, backward_capacity=0)      # one buffer suffices
    check_deadlock("1f1b", 2, 2, forward_capacity=0, backward_capacity=1)


@pytest.mark.parametrize("k, m, cycle", [
    (4, 8, ["s0:F3=s1:F3", "s0:B0=s1:B0", "s0:F3=s1:F3"]),
    (4, 2, ["s2:B0=s3:B0", "s2:F1=s3:F1", "s2:B0=s3:B0"]),
])
def test_1f1b_rendezvous_deadlocks_for_larger_k(k: int, m: int, cycle: list[str]) -> None:
    assert find_deadlock("1f1b", k, m, forward_capacity=0, backward_capacity=0) == cycle
    assert min_capacity("1f1b", k, m) == 1


@pytest.mark.parametrize("k, m", [(2, 1), (3, 1), (4, 1)])
def test_1f1b_one_micro_batch_needs_no_buffer(k: int, m: int) -> None:
    assert min_capacity("1f1b", k, m) == 0


@pytest.mark.parametrize("k, m", [(2, 2), (4, 8), (4, 2)])
def test_gpipe_never_deadlocks(k: int, m: int) -> None:
    assert min_capacity("gpipe", k, m) == 0


def test_per_queue_capacity_names_the_queues() -> None:
    with pytest.raises(PlanError, match=r"capacities \(1, 0, 1\) and backward \(1, 0, 1\): "
                                        r"s1:B0=s2:B0 -> s1:F2=s2:F2 -> s1:B0=s2:B0"):
        check_deadlock("1f1b", 4, 8, forward_capacity=(1, 0, 1), backward_capacity=(1, 0, 1))


def test_capacity_validation() -> None:
    assert queue_capacities(None, 3, 8, "forward") == (8, 8)
    assert queue_capacities(2, 3, 8, "forward") == (2, 2)
    with pytest.raises(PlanError, match=r"forward queue capacities \(\(1,\)\) must be one int >= 0 "
                                        "or 2 of them"):
        queue_capacities((1,), 3, 8, "forward")
    with pytest.raises(PlanError, match="backward queue capacities"):
        queue_capacities(-1, 3, 8, "backward")


def test_timeline_exact_and_peaks() -> None:
    t = simulate("1f1b", 3, 4)
    assert t.starts == ((0, 1, 2, 5, 6, 7, 9, 11), (1, 2, 4, 5, 6, 7, 8, 10),
                        (2, 3, 4, 5, 6, 7, 8, 9))
    assert t.ticks == 12
    assert t.stash_peak == (3, 2, 1)
    assert t.forward_peak == (1, 1) and t.backward_peak == (0, 0)
    g = simulate("gpipe", 4, 8)
    assert g.stash_peak == (8,) * 4 and g.ticks == 22


def test_backward_ticks_and_a_blocked_send() -> None:
    t = simulate("1f1b", 2, 4, backward_ticks=2)
    assert t.starts == ((0, 1, 4, 6, 7, 9, 10, 13), (1, 2, 4, 5, 7, 8, 10, 11))
    assert t.ends[0][:2] == (1, 2) and t.forward_peak == (1,) and t.ticks == 15
    # Rendezvous forward queue: stage 0 sits in its send of F1 until stage 1 takes it at 4;
    # the grid shows the blocked ticks as idle.
    r = simulate("1f1b", 2, 4, backward_ticks=2, forward_capacity=0)
    assert r.ends[0][:2] == (1, 4) and r.forward_peak == (0,) and r.ticks == 15
    assert schedule_grid(r).splitlines()[1] == "s0    F0 F1 .  .  B0 B0 F2 B1 B1 F3 B2 B2 .  B3 B3"


def test_gpipe_capacity_zero_waits_but_never_deadlocks() -> None:
    free = simulate("gpipe", 2, 3)
    tight = simulate("gpipe", 2, 3, forward_capacity=0, backward_capacity=0)
    assert tight.forward_peak == (0,) and tight.ticks == free.ticks == 8
