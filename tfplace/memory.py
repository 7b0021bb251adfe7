"""Per-device memory while placing ops in topological order: parameters plus live activations."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from tfplace.analysis import DT_RESOURCE, DT_VARIANT, OpDag
from tfplace.cluster import Cluster
from tfplace.errors import PlanError

__all__ = ["MemoryTracker", "device_peaks", "fmt_bytes", "ALIASING_OPS"]

# Ops whose output shares its variable's buffer: the parameter bytes already count it.
ALIASING_OPS = frozenset(("ReadVariableOp",))


def fmt_bytes(n: float) -> str:
    """1.5 GiB, 12.0 MiB, 300 B."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


class MemoryTracker:
    """Running memory of each device as nodes are placed.

    A device holds the parameters of every variable placed on it for the whole step, plus
    activations: a node's outputs are live from its placement until all their consumers are
    placed (handles, variants and variable reads, which alias the variable, count 0). peak = params + peak live activations. Placers
    place nodes in a topological order; a tensor whose consumers were all placed first (out of
    order) is freed as soon as its producer is placed.
    """

    def __init__(self, dag: OpDag, cluster: Cluster) -> None:
        self.dag = dag
        self.names: tuple[str, ...] = cluster.names
        self.pos: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self.capacity: list[int] = [d.memory for d in cluster.devices]
        nd = len(self.names)
        self.params: list[int] = [0] * nd
        self.live: list[int] = [0] * nd
        self.peak_live: list[int] = [0] * nd
        self.device_of: list[int] = [-1] * len(dag.nodes)
        self.param: list[int] = [n.param_bytes for n in dag.nodes]
        self.act: list[list[int]] = []
        for n in dag.nodes:
            dts = n.out_dtypes
            if n.op in ALIASING_OPS:
                self.act.append([0] * len(n.out_bytes))
            elif DT_RESOURCE in dts or DT_VARIANT in dts:
                self.act.append([0 if (k < len(dts) and dts[k] in (DT_RESOURCE, DT_VARIANT))
                                 else b for k, b in enumerate(n.out_bytes)])
            else:
                self.act.append(list(n.out_bytes))
        self.act_total: list[int] = [sum(a) for a in self.act]
        self.pending: list[list[int]] = [[len(c) for c in cons]
                                         for cons in dag.tensor_consumers]
        for a, p in zip(self.act, self.pending):
            if len(p) < len(a):
                p.extend([0] * (len(a) - len(p)))
            elif len(a) < len(p):                     # consumers of outputs with no shape info
                a.extend([0] * (len(p) - len(a)))
        self.in_tensors = dag.in_tensors

    def _dev(self, device: int | str) -> int:
        return device if isinstance(device, int) else self.pos[device]

    def group_need(self, nodes: Sequence[int]) -> tuple[int, int]:
        """(param bytes, output bytes) of `nodes` together."""
        return sum(self.param[i] for i in nodes), sum(self.act_total[i] for i in nodes)

    def need(self, nodes: Sequence[int], device: int | str) -> tuple[int, int]:
        """(param bytes, activation bytes) device would need at its peak if `nodes` joined it."""
        return self.need_for(*self.group_need(nodes), self._dev(device))

    def need_for(self, params: int, acts: int, d: int) -> tuple[int, int]:
        """(param bytes, activation bytes) device d would need after adding (params, acts)."""
        return self.params[d] + params, max(self.peak_live[d], self.live[d] + acts)

    def fits(self, params: int, acts: int, d: int) -> bool:
        """Whether device index d has room for a group needing (params, acts) from group_need."""
        peak = self.live[d] + acts
        if peak < self.peak_live[d]:
            peak = self.peak_live[d]
        return self.params[d] + params + peak <= self.capacity[d]

    def can_place(self, nodes: Sequence[int], device: int | str) -> bool:
        return self.fits(*self.group_need(nodes), self._dev(device))

    def add_params(self, nbytes: int, device: int | str) -> None:
        """Reserve parameter bytes ahead of placing their nodes (a colocation group's)."""
        self.params[self._dev(device)] += nbytes

    def place(self, node: int, device: int | str, *, with_params: bool = True) -> None:
        """Place one node; with_params=False when its params were reserved by add_params."""
        d = self._dev(device)
        self.device_of[node] = d
        if with_params:
            self.params[d] += self.param[node]
        live = self.live[d] + self.act_total[node]
        if live > self.peak_live[d]:
            self.peak_live[d] = live
        self.live[d] = live
        pending, device_of, act = self.pending, self.device_of, self.act
        for j, k in self.in_tensors[node]:
            pending[j][k] -= 1
            if pending[j][k] == 0 and device_of[j] >= 0:
                self.live[device_of[j]] -= act[j][k]
        for k, left in enumerate(pending[node]):
            if left == 0:
                self.live[d] -= act[node][k]

    def place_all(self, nodes: Iterable[int], device: int | str) -> None:
        d = self._dev(device)
        for i in nodes:
            self.place(i, d)

    @property
    def peak_bytes(self) -> list[int]:
        return [p + a for p, a in zip(self.params, self.peak_live)]

    def peak_report(self) -> dict[str, tuple[int, int]]:
        """Device name -> (param bytes, peak bytes)."""
        return {n: (self.params[d], self.params[d] + self.peak_live[d])
                for d, n in enumerate(self.names)}


def device_peaks(dag: OpDag, placement: Mapping[str, str],
                 cluster: Cluster) -> dict[str, tuple[int, int]]:
    """Replay the topological order of a placement; device name -> (param bytes, peak bytes)."""
    tracker = MemoryTracker(dag, cluster)
    missing = [n.name for n in dag.nodes if n.name not in placement]
    unknown = sorted({d for d in placement.values() if d not in tracker.pos})
    problems = []
    if missing:
        problems.append(f"{len(missing)} ops have no device (first: {missing[0]!r}); "
                        "the placement must cover every op of the graph")
    if unknown:
        problems.append(f"devices not in the cluster: {', '.join(unknown)} "
                        f"(cluster: {', '.join(tracker.names)})")
    if problems:
        from tfplace.errors import bullets
        raise PlanError(bullets("placement does not match the graph and cluster:", problems))
    pos = tracker.pos
    for i, n in enumerate(dag.nodes):
        tracker.place(i, pos[placement[n.name]])
    return tracker.peak_report()
