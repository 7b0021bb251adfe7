"""The `m_etf` placer: Baechi's memory-constrained Earliest Task First list scheduling.

Jeon et al., "Baechi: Fast Device Placement of Machine Learning Graphs", SoCC 2020 (m-ETF).
Ready ops (all predecessors scheduled) wait in a heap keyed by data-ready time. The popped op
goes to the device where it can start earliest::

    start(d) = max(free(d), max over preds p of finish(p) + transfer(dev(p) -> d, bytes))

among devices with memory for its colocation group (ties: lower device index). The first
member of a group binds the whole group to that device (`Binder`). Costs come from `costs.op_seconds`
and `Cluster.transfer_seconds` (as latency + bytes/bandwidth matrices).

Time: O(V log V + E + V·D) when every pair of devices has the same link (then the latest
arrival from each source device is folded once and the best other source found from the top
two), O(V log V + E·D) with a link matrix.
"""
from __future__ import annotations

import heapq

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.costs import Calibration
from tfplace.placers import register
from tfplace.placers._common import Binder
from tfplace.schedule_sim import durations, link_matrices

__all__ = ["place", "schedule"]

_NEG = float("-inf")


def _uniform(lat: list[list[float]], inv: list[list[float]]) -> tuple[float, float] | None:
    """(latency, seconds per byte) if all distinct device pairs share one link, else None."""
    off = {(lat[e][d], inv[e][d]) for e in range(len(lat)) for d in range(len(lat)) if e != d}
    return next(iter(off)) if len(off) == 1 else None


def schedule(dag: OpDag, cluster: Cluster, *,
             calibration: Calibration) -> tuple[list[int], list[float]]:
    """(device index per node, finish time per node) of the m-ETF schedule."""
    binder = Binder(dag, cluster)
    gid, bound = binder.gid, binder.bound
    n_dev = len(cluster.devices)
    all_devs = range(n_dev)
    dur = durations(dag, cluster, calibration)
    lat, inv = link_matrices(cluster)
    uniform = _uniform(lat, inv) if n_dev > 1 else None
    preds, pbytes, succs = dag.preds, dag.pred_bytes, dag.succs
    indeg = [len(p) for p in preds]
    ready_at = [0.0] * len(dag.nodes)
    finish = [0.0] * len(dag.nodes)
    dev = [-1] * len(dag.nodes)
    free = [0.0] * n_dev
    fitting, place_node = binder.fitting, binder.place
    heap = [(0.0, i) for i, k in enumerate(indeg) if k == 0]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        _, i = pop(heap)
        b = bound[gid[i]]
        if b >= 0:
            cands: list[int] = [b]
        else:
            cands = fitting(i)
            if not cands:
                raise binder.no_room(i)
        if uniform is not None and len(cands) > 1:
            lat_u, inv_u = uniform
            local = [_NEG] * n_dev        # latest finish of a pred on each device
            remote = [_NEG] * n_dev       # latest arrival elsewhere of a pred on each device
            for p, nb in zip(preds[i], pbytes[i]):
                fp = finish[p]
                e = dev[p]
                if fp > local[e]:
                    local[e] = fp
                r = fp + nb * inv_u
                if r > remote[e]:
                    remote[e] = r
            top1 = top2 = _NEG
            top_dev = -1
            for e in all_devs:
                r = remote[e]
                if r > top1:
                    top2, top1, top_dev = top1, r, e
                elif r > top2:
                    top2 = r
            start = []
            for d in cands:
                s = free[d]
                other = (top2 if d == top_dev else top1) + lat_u
                if other > s:
                    s = other
                if local[d] > s:
                    s = local[d]
                start.append(s)
        else:
            start = [free[d] for d in cands]
            for p, nb in zip(preds[i], pbytes[i]):
                fp = finish[p]
                e = dev[p]
                lat_e, inv_e = lat[e], inv[e]
                for c, d in enumerate(cands):
                    t = fp if d == e else fp + nb * inv_e[d] + lat_e[d]
                    if t > start[c]:
                        start[c] = t
        best = 0
        for c in range(1, len(cands)):
            if start[c] < start[best]:                     # strict: ties keep the lower index
                best = c
        d = cands[best]
        place_node(i, d)
        f = start[best] + dur[d][i]
        finish[i] = f
        free[d] = f
        dev[i] = d
        for s_ in succs[i]:
            if f > ready_at[s_]:
                ready_at[s_] = f
            indeg[s_] -= 1
            if indeg[s_] == 0:
                push(heap, (ready_at[s_], s_))
    return dev, finish


@register("m_etf")
def place(dag: OpDag, cluster: Cluster, *, calibration: Calibration) -> dict[str, str]:
    dev, _ = schedule(dag, cluster, calibration=calibration)
    names = cluster.names
    return {n.name: names[d] for n, d in zip(dag.nodes, dev)}
