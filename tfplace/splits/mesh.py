"""The 2-D device mesh of splits x data parallel: replicas along one axis, a split group along
the other, and the PlanError when the cluster's devices do not form one.

    Cluster.local(devices=4), data_parallel=2, splits={...}     (replicas x split group)
                 split 0   split 1
    replica 0    CPU:0     CPU:1        shard k of a split variable: the gradient is synced
    replica 1    CPU:2     CPU:3        down its column only (shard k of every replica)

Pure Python: numbers in, numbers (or one PlanError listing every problem) out.
"""
from __future__ import annotations

from typing import Sequence

from tfplace.errors import PlanError, bullets

__all__ = ["mesh_shape", "check_mesh", "mesh_lines"]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_mesh(devices: int, replicas: int, split_dims: Sequence[int] = ()) -> None:
    """PlanError unless ``devices`` form ``replicas`` equal split groups of >= 2 devices each
    that divide every split axis of ``split_dims`` (the sizes of the split variables' split
    axes) at least 2 ways."""
    problems = []
    fits = [r for r in _divisors(devices) if mesh_shape(devices, r, split_dims)[1] >= 2]
    other = " or ".join(f"data_parallel={r}" for r in fits if r != replicas) or \
        "another replica count"
    if replicas < 1 or devices % replicas:
        more = devices + replicas - devices % replicas if replicas else devices
        more = max(more, 2 * replicas)
        problems.append(
            f"the cluster's {devices} devices do not divide into {replicas} replicas "
            f"({devices} % {replicas} = {devices % replicas if replicas else devices}); use "
            f"{other}, or {more} devices ({replicas} replicas x a {more // replicas}-way split "
            "group)")
    else:
        group = devices // replicas
        if group < 2:
            problems.append(
                f"data_parallel={replicas} on {devices} devices leaves {group} device per "
                f"replica, nothing to split over; use {other}, or {2 * replicas} devices "
                f"({replicas} replicas x a 2-way split group)")
        elif mesh_shape(devices, replicas, split_dims)[1] < 2:
            dims = ", ".join(str(d) for d in split_dims)
            problems.append(
                f"no split group of 2 or more of a replica's {group} devices divides the "
                f"split axes (sizes {dims}); split axes whose sizes are multiples of a "
                f"divisor of {group}" + (f", or use {other}" if fits else ""))
    if problems:
        raise PlanError(bullets(f"splits x data_parallel={replicas} on {devices} devices is not "
                                "a device mesh:", problems))


def mesh_shape(devices: int, replicas: int, split_dims: Sequence[int] = ()) -> tuple[int, int]:
    """(replicas, split group size): the largest group n <= devices / replicas that divides
    the replica's device count and every split axis."""
    group = devices // max(replicas, 1)
    for n in range(group, 0, -1):
        if group % n == 0 and all(d % n == 0 for d in split_dims if d > 0):
            return replicas, n
    return replicas, 1


def mesh_lines(replicas: Sequence[Sequence[str]], split_devices: Sequence[str]) -> list[str]:
    """The mesh as text: one row per replica, one column per shard (copy r of the split group
    is replica 0's group mapped onto replica r's devices)."""
    rows = [[dict(zip(replicas[0], group)).get(d, d) for d in split_devices]
            for group in replicas]
    width = max(len(d) for row in rows for d in row)
    lines = [f"mesh: {len(rows)} replicas x {len(split_devices)}-way split group "
             "(split gradients synced down each shard column, whole ones over all replicas)",
             "  " + " " * len(f"replica {len(rows) - 1}") + "  " +
             "  ".join(f"{f'shard {k}':<{width}}" for k in range(len(split_devices)))]
    for r, row in enumerate(rows):
        lines.append(f"  {f'replica {r}':<{len(f'replica {len(rows) - 1}')}}  " +
                     "  ".join(f"{d:<{width}}" for d in row))
    return [line.rstrip() for line in lines]
