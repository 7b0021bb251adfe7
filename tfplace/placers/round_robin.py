"""The `round_robin` placer: colocation groups in topological order, cycling through devices."""
from __future__ import annotations

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.costs import Calibration
from tfplace.placers import register
from tfplace.placers._common import Binder

__all__ = ["place"]


@register("round_robin")
def place(dag: OpDag, cluster: Cluster, *, calibration: Calibration) -> dict[str, str]:
    binder = Binder(dag, cluster)
    n_dev = len(cluster.devices)
    nxt = 0
    for i in range(len(dag.nodes)):
        d = binder.bound_device(i)
        if d < 0:                                   # a new group: the next device with room
            for step in range(n_dev):
                d = (nxt + step) % n_dev
                if binder.fits(i, d):
                    break
            else:
                raise binder.no_room(i)
            nxt = (d + 1) % n_dev
        binder.place(i, d)
    return binder.placement()
