"""Replica groups over a cluster's devices and the global batch split, by exact value."""
from __future__ import annotations

import pytest

from tfplace.cluster import Cluster, Device, Task, grpc_cluster, local_device_name
from tfplace.errors import PlanError
from tfplace.replicas import cluster_task_of, replica_count, replica_groups, split_batch

L = [local_device_name(i) for i in range(4)]


def w(task: int, dev: int) -> str:
    return f"/job:worker/replica:0/task:{task}/device:CPU:{dev}"


def local4() -> Cluster:
    return Cluster.local(4, configure=False)


def grpc(tasks: int, per_task: int) -> Cluster:
    return grpc_cluster([Task("worker", i, f"localhost:{2000 + i}") for i in range(tasks)], per_task)


def test_local_groups_are_consecutive() -> None:
    assert replica_groups(local4(), 1) == (tuple(L),)
    assert replica_groups(local4(), 2) == ((L[0], L[1]), (L[2], L[3]))
    assert replica_groups(local4(), 4) == ((L[0],), (L[1],), (L[2],), (L[3],))


def test_auto_is_one_replica_per_device() -> None:
    assert replica_groups(local4(), "auto") == replica_groups(local4(), 4)
    assert replica_count(grpc(3, 2), "auto") == 6


def test_grpc_groups_stay_inside_a_task() -> None:
    c = grpc(2, 2)
    assert replica_groups(c, 2) == ((w(0, 0), w(0, 1)), (w(1, 0), w(1, 1)))
    assert replica_groups(c, 4) == ((w(0, 0),), (w(0, 1),), (w(1, 0),), (w(1, 1),))
    assert replica_groups(grpc(2, 4), 4) == ((w(0, 0), w(0, 1)), (w(0, 2), w(0, 3)),
                                             (w(1, 0), w(1, 1)), (w(1, 2), w(1, 3)))
    assert cluster_task_of(w(1, 3)) == "/job:worker/replica:0/task:1"


def test_uneven_tasks_keep_whole_groups_inside_one_task() -> None:
    # Tasks holding 1, 2 and 1 devices, groups of 2: task 1 fills a group by itself; the two
    # single devices share the other. Plain consecutive slicing would split both groups.
    devices = (w(0, 0), w(1, 0), w(1, 1), w(2, 0))
    c = Cluster(devices=tuple(Device(d) for d in devices))
    assert replica_groups(c, 2) == ((w(0, 0), w(2, 0)), (w(1, 0), w(1, 1)))
    # Tasks of 3 and 1 devices: only one group can stay inside a task.
    c = Cluster(devices=tuple(Device(d) for d in (w(0, 0), w(0, 1), w(0, 2), w(1, 0))))
    assert replica_groups(c, 2) == ((w(0, 0), w(0, 1)), (w(0, 2), w(1, 0)))


def test_replica_count_errors() -> None:
    with pytest.raises(PlanError) as e:
        replica_groups(local4(), 8)
    assert str(e.value) == ("data_parallel=8 but the cluster has 4 devices; "
                            "use at most 4 or add devices")
    with pytest.raises(PlanError, match=r"data_parallel=0 must be at least 1"):
        replica_groups(local4(), 0)
    with pytest.raises(PlanError) as e:
        replica_groups(local4(), 3)
    assert str(e.value) == ("data_parallel=3 does not divide the cluster's 4 devices into equal "
                            "groups (4 % 3 = 1); use one of 1, 2, 4, or change the device count")
    for bad in ("many", True, 2.0):
        with pytest.raises(PlanError, match=r"is not a replica count; pass an int from 1 to 4 "
                                            r"or 'auto'"):
            replica_groups(local4(), bad)  # type: ignore[arg-type]


def test_split_batch() -> None:
    assert split_batch(8, 4) == (2, 2, 2, 2)
    assert split_batch(7, 1) == (7,)
    assert split_batch(64, 2) == (32, 32)


def test_split_batch_refuses_an_uneven_split() -> None:
    with pytest.raises(PlanError) as e:
        split_batch(10, 4)
    assert str(e.value) == ("global batch 10 does not split evenly across 4 replicas "
                            "(10 % 4 = 2); use a global batch of 8 or 12 (a multiple of 4), "
                            "or a replica count that divides it")
    with pytest.raises(PlanError, match=r"global batch 3 .* 4 replicas .* use a global batch of "
                                        r"4 \(a multiple of 4\)"):
        split_batch(3, 4)
    with pytest.raises(PlanError, match="global batch 0 must be an int >= 1"):
        split_batch(0, 2)
    with pytest.raises(PlanError, match="replicas=0 must be an int >= 1"):
        split_batch(8, 0)
