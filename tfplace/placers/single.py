"""The `single` placer: every op on the first device (the baseline)."""
from __future__ import annotations

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.colocation import colocation_groups
from tfplace.costs import Calibration
from tfplace.memory import MemoryTracker
from tfplace.placers import register
from tfplace.placers._common import no_room_error

__all__ = ["place"]


@register("single")
def place(dag: OpDag, cluster: Cluster, *, calibration: Calibration) -> dict[str, str]:
    tracker = MemoryTracker(dag, cluster)
    for group in colocation_groups(dag):
        if not tracker.can_place(group, 0):
            raise no_room_error(tracker, group, dag)
        tracker.place_all(group, 0)
    name = cluster.names[0]
    return {n.name: name for n in dag.nodes}
