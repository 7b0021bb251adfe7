"""splits="auto" for memory: split the largest variables of over-full devices until all fit.

Greedy and deterministic: take the device most over its capacity, split its largest splittable
variable over the fewest devices that bring it under capacity (or, when none does, over as many
as can take a shard, for the most relief), the shards going to the devices with the most free
memory; repeat. A variable splits on its largest axis that divides by the device count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from tfplace.errors import PlanError, bullets
from tfplace.splits.layout import Layout, S

__all__ = ["VariableSize", "MemorySplit", "MemoryFit", "fit_memory", "split_axis", "split_order"]


@dataclass(frozen=True)
class VariableSize:
    name: str
    shape: tuple[int, ...]
    bytes: int                    # what its device holds for it, optimizer slots included
    device: str                   # where it lives unsplit


@dataclass(frozen=True)
class MemorySplit:
    variable: str
    layout: Layout
    devices: tuple[str, ...]      # its own device first, then the receivers
    shard_bytes: int


@dataclass(frozen=True)
class MemoryFit:
    splits: tuple[MemorySplit, ...]
    usage: tuple[tuple[str, int], ...]    # (device, bytes) after the splits, in device order

    def layouts(self) -> dict[str, Layout]:
        return {s.variable: s.layout for s in self.splits}


def split_axis(shape: Sequence[int], ways: int) -> int | None:
    """The largest axis whose size divides by `ways` (the first of equal ones), or None."""
    best = None
    for a, d in enumerate(shape):
        if d >= ways and d % ways == 0 and (best is None or d > shape[best]):
            best = a
    return best


def split_order(variables: Sequence[VariableSize], ways: int) -> list[tuple[str, Layout]]:
    """The variables splits="auto" tries in turn when a plan does not fit: largest first (ties
    by name), each on its largest axis dividing by the most devices (<= ways) that divide one;
    variables no axis of which divides by 2 or more are left out."""
    out = []
    for v in sorted(variables, key=lambda v: (-v.bytes, v.name)):
        for n in range(ways, 1, -1):
            axis = split_axis(v.shape, n)
            if axis is not None:
                out.append((v.name, S(axis)))
                break
    return out


def fit_memory(variables: Sequence[VariableSize], capacity: Mapping[str, int],
               usage: Mapping[str, int], *, devices: Sequence[str] | None = None,
               max_ways: int | None = None) -> MemoryFit:
    """The splits that make every device's usage fit its capacity.

    usage: bytes per device with every variable whole on its own device (activations and all).
    max_ways caps the devices one variable spans (default: all). PlanError lists each device's
    need against its capacity when even splitting cannot make the plan fit.
    """
    order = list(devices) if devices is not None else list(capacity)
    missing = sorted({v.device for v in variables} - set(order)) + \
        sorted(d for d in order if d not in capacity)
    if missing:
        raise PlanError(f"devices {missing} have no capacity or are not in the group "
                        f"{order}; give every device a memory capacity")
    ways_cap = min(max_ways or len(order), len(order))
    use = {d: int(usage.get(d, 0)) for d in order}
    left = sorted(variables, key=lambda v: (-v.bytes, v.name))
    splits: list[MemorySplit] = []
    while True:
        over = [d for d in order if use[d] > capacity[d]]
        if not over:
            break
        home = max(over, key=lambda d: (use[d] - capacity[d], -order.index(d)))
        done = False
        for v in [v for v in left if v.device == home]:
            left.remove(v)
            split = _best_split(v, order, capacity, use, ways_cap)
            if split is not None:
                for d in split.devices:
                    use[d] += split.shard_bytes - (v.bytes if d == home else 0)
                splits.append(split)
                done = True
                break
        if not done:
            raise PlanError(bullets(
                "the variables do not fit in memory even split across the devices:",
                [f"{d}: needs {use[d]} bytes of {capacity[d]}"
                 + (f" ({use[d] - capacity[d]} over)" if use[d] > capacity[d] else "")
                 for d in order])
                + "\nraise the memory caps in the cluster YAML, add devices, or shrink the "
                  "model or the batch")
    return MemoryFit(tuple(splits), tuple((d, use[d]) for d in order))


def _best_split(v: VariableSize, order: list[str], capacity: Mapping[str, int],
                use: dict[str, int], ways_cap: int) -> MemorySplit | None:
    free = sorted((d for d in order if d != v.device),
                  key=lambda d: (-(capacity[d] - use[d]), order.index(d)))
    feasible: list[MemorySplit] = []
    for ways in range(2, ways_cap + 1):
        axis = split_axis(v.shape, ways)
        if axis is None:
            continue
        shard = v.bytes // ways
        receivers = free[:ways - 1]
        if len(receivers) < ways - 1 or any(capacity[d] - use[d] < shard for d in receivers):
            continue
        split = MemorySplit(v.name, S(axis), (v.device, *receivers), shard)
        if use[v.device] - v.bytes + shard <= capacity[v.device]:
            return split
        feasible.append(split)
    return feasible[-1] if feasible else None
