"""What every placer shares: binding colocation groups to devices under memory limits."""
from __future__ import annotations

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.colocation import colocation_groups, group_of
from tfplace.errors import PlanError, bullets
from tfplace.memory import MemoryTracker, fmt_bytes

__all__ = ["Binder"]


class Binder:
    """Binds a colocation group to a device when its first member is placed.

    The group's parameters are reserved on that device at once; each member's activations
    count when the member itself is placed, so placers place nodes one by one in a
    topological order (the order `memory.device_peaks` replays). Binding checks room for the
    whole group (params plus every member's outputs), and a later member that no longer fits
    its bound device is an error too.
    """

    def __init__(self, dag: OpDag, cluster: Cluster) -> None:
        self.dag = dag
        self.names = cluster.names
        self.tracker = MemoryTracker(dag, cluster)
        self.groups = colocation_groups(dag)
        self.gid = group_of(self.groups, len(dag.nodes))
        self.bound = [-1] * len(self.groups)
        param = self.tracker.param
        act = self.tracker.act_total
        self.gparams = [sum(param[i] for i in g) for g in self.groups]
        self.gacts = [sum(act[i] for i in g) for g in self.groups]
        self.device = [-1] * len(dag.nodes)

    def bound_device(self, i: int) -> int:
        """The device node i's group is bound to, or -1."""
        return self.bound[self.gid[i]]

    def need(self, i: int) -> tuple[int, int]:
        """(params, activations) to check before placing node i: its whole group's if the group
        is unbound, else just its own outputs."""
        g = self.gid[i]
        if self.bound[g] < 0:
            return self.gparams[g], self.gacts[g]
        return 0, self.tracker.act_total[i]

    def fits(self, i: int, d: int) -> bool:
        return self.tracker.fits(*self.need(i), d)

    def fitting(self, i: int) -> list[int]:
        params, acts = self.need(i)
        fits = self.tracker.fits
        return [d for d in range(len(self.names)) if fits(params, acts, d)]

    def place(self, i: int, d: int) -> None:
        g = self.gid[i]
        if self.bound[g] < 0:
            self.bound[g] = d
            self.tracker.add_params(self.gparams[g], d)
        elif len(self.groups[g]) > 1 and not self.tracker.fits(0, self.tracker.act_total[i], d):
            raise self.no_room(i)
        self.tracker.place(i, d, with_params=False)
        self.device[i] = d

    def placement(self) -> dict[str, str]:
        names = self.names
        return {n.name: names[d] for n, d in zip(self.dag.nodes, self.device)}

    def no_room(self, i: int) -> PlanError:
        """A PlanError listing each device's need for node i (and its group) against capacity."""
        group = self.groups[self.gid[i]]
        first = self.dag.nodes[group[0]].name
        what = (f"op {first!r}" if len(group) == 1
                else f"colocation group of {len(group)} ops starting at {first!r}")
        g = self.gid[i]
        lines = []
        for d, name in enumerate(self.names):
            if d == self.bound[g]:
                p, a = self.tracker.need_for(0, self.tracker.act_total[i], d)
            else:
                p, a = self.tracker.need_for(self.gparams[g], self.gacts[g], d)
            cap = self.tracker.capacity[d]
            rel = ">" if p + a > cap else "<="
            lines.append(f"{name}: needs {fmt_bytes(p + a)} (params {fmt_bytes(p)} + "
                         f"activations {fmt_bytes(a)}) {rel} capacity {fmt_bytes(cap)}")
        return PlanError(bullets(f"no device has memory for {what}:", lines)
                         + "\n  fix: add devices, give devices more `memory` in the cluster "
                           "YAML, or use a smaller batch")
