"""The `m_topo` placer: Baechi's memory-constrained topological placement.

Jeon et al., "Baechi: Fast Device Placement of Machine Learning Graphs", SoCC 2020 (m-TOPO).
Walk the topological order and fill one device up to its memory share (total need divided by
the number of devices, capped by the device's capacity) before moving to the next, so each
device gets one contiguous slice of the order::

    topo order:  [a b c d | e f g h | i j k | l m n]
    devices:        0         1        2      3
"""
from __future__ import annotations

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.colocation import colocation_groups
from tfplace.costs import Calibration
from tfplace.memory import MemoryTracker
from tfplace.placers import register
from tfplace.placers._common import fitting_devices, no_room_error

__all__ = ["place", "shares"]


def shares(tracker: MemoryTracker) -> list[float]:
    """Each device's memory share: total need / number of devices, capped by its capacity."""
    total = sum(tracker.param) + sum(tracker.act_total)
    even = total / len(tracker.names)
    return [min(float(cap), even) for cap in tracker.capacity]


@register("m_topo")
def place(dag: OpDag, cluster: Cluster, *, calibration: Calibration) -> dict[str, str]:
    tracker = MemoryTracker(dag, cluster)
    names = cluster.names
    last = len(names) - 1
    share = shares(tracker)
    used = [0] * len(names)             # the share accounting: params + outputs placed so far
    out: dict[str, str] = {}
    d = 0
    for group in colocation_groups(dag):
        need = sum(tracker.param[i] + tracker.act_total[i] for i in group)
        if d < last and used[d] > 0 and used[d] + need > share[d]:
            d += 1
        target = d
        if not tracker.can_place(group, d):
            # Stay contiguous when possible: the next devices first, then any with room.
            later = [e for e in fitting_devices(tracker, group) if e > d]
            anywhere = later or fitting_devices(tracker, group)
            if not anywhere:
                raise no_room_error(tracker, group, dag)
            target = anywhere[0]
            if target > d:
                d = target
        tracker.place_all(group, target)
        used[target] += need
        for i in group:
            out[dag.nodes[i].name] = names[target]
    return out
