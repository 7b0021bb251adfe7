"""The `round_robin` placer: colocation groups in topological order, cycling through devices."""
from __future__ import annotations

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.colocation import colocation_groups
from tfplace.costs import Calibration
from tfplace.memory import MemoryTracker
from tfplace.placers import register
from tfplace.placers._common import no_room_error

__all__ = ["place"]


@register("round_robin")
def place(dag: OpDag, cluster: Cluster, *, calibration: Calibration) -> dict[str, str]:
    tracker = MemoryTracker(dag, cluster)
    names = cluster.names
    n_dev = len(names)
    out: dict[str, str] = {}
    nxt = 0
    for group in colocation_groups(dag):
        for step in range(n_dev):                 # skip devices without room
            d = (nxt + step) % n_dev
            if tracker.can_place(group, d):
                break
        else:
            raise no_room_error(tracker, group, dag)
        tracker.place_all(group, d)
        for i in group:
            out[dag.nodes[i].name] = names[d]
        nxt = (d + 1) % n_dev
    return out
