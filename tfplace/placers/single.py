"""The `single` placer: every op on the first device (the baseline)."""
from __future__ import annotations

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.costs import Calibration
from tfplace.placers import register
from tfplace.placers._common import Binder

__all__ = ["place"]


@register("single")
def place(dag: OpDag, cluster: Cluster, *, calibration: Calibration) -> dict[str, str]:
    binder = Binder(dag, cluster)
    for i in range(len(dag.nodes)):
        if binder.bound_device(i) < 0 and not binder.fits(i, 0):
            raise binder.no_room(i)
        binder.place(i, 0)
    return binder.placement()
