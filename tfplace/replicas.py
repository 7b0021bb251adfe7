"""Data-parallel replicas: split a cluster's devices into equal device groups, and the batch across them.

    cluster (2 gRPC tasks x 2 devices), data_parallel=2      data_parallel=4
      task:0  CPU:0 CPU:1   -> replica 0                    -> replicas 0, 1
      task:1  CPU:0 CPU:1   -> replica 1                    -> replicas 2, 3

A replica is a group of consecutive devices; the placer may spread one copy of the step over it.
"""
from __future__ import annotations

from tfplace.cluster import Cluster, task_prefix
from tfplace.errors import PlanError

__all__ = ["replica_groups", "replica_count", "split_batch", "cluster_task_of"]


def cluster_task_of(device: str) -> str:
    """The gRPC task a device belongs to: the part of its name before `/device:`."""
    return task_prefix(device)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def replica_count(cluster: Cluster, replicas: int | str) -> int:
    """The number of replicas `replicas` asks for on `cluster`, checked (PlanError otherwise).

    `"auto"` means one replica per device: the right choice when the step is compute-bound and
    fits on one device, since every device then computes and the only extra cost is the gradient
    sync. (Weighing sync cost and memory against compute to pick fewer, wider replicas may come
    later.)
    """
    n = len(cluster.devices)
    if n == 0:
        raise PlanError("the cluster has no devices to replicate over; describe its devices")
    if isinstance(replicas, str):
        if replicas != "auto":
            raise PlanError(f"data_parallel={replicas!r} is not a replica count; "
                            f"pass an int from 1 to {n} or 'auto'")
        return n
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise PlanError(f"data_parallel={replicas!r} is not a replica count; "
                        f"pass an int from 1 to {n} or 'auto'")
    if replicas < 1:
        raise PlanError(f"data_parallel={replicas} must be at least 1; "
                        "use 1 for no replication or 'auto' for one replica per device")
    if replicas > n:
        raise PlanError(f"data_parallel={replicas} but the cluster has {n} devices; "
                        f"use at most {n} or add devices")
    if n % replicas:
        valid = ", ".join(str(d) for d in _divisors(n))
        raise PlanError(f"data_parallel={replicas} does not divide the cluster's {n} devices "
                        f"into equal groups ({n} % {replicas} = {n % replicas}); "
                        f"use one of {valid}, or change the device count")
    return replicas


def replica_groups(cluster: Cluster, replicas: int | str) -> tuple[tuple[str, ...], ...]:
    """Split the cluster's devices into R equal groups of consecutive devices.

    Groups stay inside one gRPC task whenever possible: each task first fills as many whole
    groups as it can from its own devices (in cluster order); the devices left over in each
    task (fewer than a group each) are then chunked consecutively, in cluster order, into the
    remaining groups, which necessarily span tasks. Groups are returned in the order of their
    first device in the cluster. When every task's device count is a multiple of the group
    size this is simply the cluster's device list cut into R consecutive slices.
    """
    r = replica_count(cluster, replicas)
    names = cluster.names
    size = len(names) // r
    pos = {d: i for i, d in enumerate(names)}
    by_task: dict[str, list[str]] = {}
    for d in names:
        by_task.setdefault(cluster_task_of(d), []).append(d)
    groups: list[tuple[str, ...]] = []
    leftover: list[str] = []
    for devices in by_task.values():
        whole = len(devices) - len(devices) % size
        groups += [tuple(devices[i:i + size]) for i in range(0, whole, size)]
        leftover += devices[whole:]
    leftover.sort(key=pos.__getitem__)
    groups += [tuple(leftover[i:i + size]) for i in range(0, len(leftover), size)]
    return tuple(sorted(groups, key=lambda g: pos[g[0]]))


def split_batch(global_batch: int, replicas: int) -> tuple[int, ...]:
    """The per-replica batch sizes: `global_batch / replicas` each, never an uneven split.

    A batch that does not divide is a PlanError naming both numbers and the nearest global
    batch sizes that do (an uneven split would weight replicas' gradients unequally).
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise PlanError(f"replicas={replicas!r} must be an int >= 1")
    if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
        raise PlanError(f"global batch {global_batch!r} must be an int >= 1")
    if global_batch % replicas:
        below = global_batch - global_batch % replicas
        above = below + replicas
        nearest = f"{below} or {above}" if below else f"{above}"
        raise PlanError(f"global batch {global_batch} does not split evenly across {replicas} "
                        f"replicas ({global_batch} % {replicas} = {global_batch % replicas}); "
                        f"use a global batch of {nearest} (a multiple of {replicas}), "
                        "or a replica count that divides it")
    return (global_batch // replicas,) * replicas
