"""The `m_topo` placer: Baechi's memory-constrained topological placement.

Jeon et al., "Baechi: Fast Device Placement of Machine Learning Graphs", SoCC 2020 (m-TOPO).
Walk the topological order and fill one device up to its memory share (total need divided by
the number of devices, capped by the device's capacity) before moving to the next, so each
device gets one contiguous slice of the order::

    topo order:  [a b c d | e f g h | i j k | l m n]
    devices:        0         1        2      3

A colocation group goes where its first member goes.
"""
from __future__ import annotations

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.costs import Calibration
from tfplace.memory import MemoryTracker
from tfplace.placers import register
from tfplace.placers._common import Binder

__all__ = ["place", "shares"]


def shares(tracker: MemoryTracker) -> list[float]:
    """Each device's memory share: total need / number of devices, capped by its capacity."""
    total = sum(tracker.param) + sum(tracker.act_total)
    even = total / len(tracker.names)
    return [min(float(cap), even) for cap in tracker.capacity]


@register("m_topo")
def place(dag: OpDag, cluster: Cluster, *, calibration: Calibration) -> dict[str, str]:
    binder = Binder(dag, cluster)
    last = len(cluster.devices) - 1
    share = shares(binder.tracker)
    used = [0] * len(cluster.devices)    # share accounting: params + outputs placed so far
    d = 0
    for i in range(len(dag.nodes)):
        params, acts = binder.need(i)
        target = binder.bound_device(i)
        if target < 0:
            if d < last and used[d] > 0 and used[d] + params + acts > share[d]:
                d += 1
            target = d
            if not binder.fits(i, d):
                # Stay contiguous when possible: the next devices first, then any with room.
                room = binder.fitting(i)
                later = [e for e in room if e > d]
                if not room:
                    raise binder.no_room(i)
                target = (later or room)[0]
                d = max(d, target)
        binder.place(i, target)
        used[target] += params + binder.tracker.act_total[i]
    return binder.placement()
