"""List-schedule simulation of a placement: per-op durations, link costs, and the step makespan."""
from __future__ import annotations

import heapq
from typing import Mapping

from tfplace import costs
from tfplace.analysis import OpDag
from tfplace.cluster import Cluster

__all__ = ["durations", "link_matrices", "simulate"]


def durations(dag: OpDag, cluster: Cluster, calibration: costs.Calibration) -> list[list[float]]:
    """durations[d][i] = costs.op_seconds(node i, device d), computed once per distinct device speed."""
    by_speed: dict[float, list[float]] = {}
    out: list[list[float]] = []
    oh = calibration.overhead_seconds
    scale = [calibration.scale(costs.family(n.op)) for n in dag.nodes]
    for dev in cluster.devices:
        row = by_speed.get(dev.flops)
        if row is None:
            f = dev.flops
            row = [oh + n.flops / (f * s) if n.flops > 0 else oh
                   for n, s in zip(dag.nodes, scale)]
            by_speed[dev.flops] = row
        out.append(row)
    return out


def link_matrices(cluster: Cluster) -> tuple[list[list[float]], list[list[float]]]:
    """(latency[e][d], seconds-per-byte[e][d]); both 0 on the diagonal."""
    names = cluster.names
    lat = [[0.0] * len(names) for _ in names]
    inv = [[0.0] * len(names) for _ in names]
    for e, a in enumerate(names):
        for d, b in enumerate(names):
            if e != d:
                bw, la = cluster.link(a, b)
                lat[e][d], inv[e][d] = la, 1.0 / bw
    return lat, inv


def simulate(dag: OpDag, placement: Mapping[str, str], cluster: Cluster,
             calibration: costs.Calibration | None = None) -> float:
    """Makespan (seconds) of one step: ops run in data-ready order, one at a time per device,
    each starting when its device is free and every input has arrived over its link."""
    calibration = calibration or costs.Calibration()
    pos = {n: i for i, n in enumerate(cluster.names)}
    dev = [pos[placement[n.name]] for n in dag.nodes]
    dur = durations(dag, cluster, calibration)
    lat, inv = link_matrices(cluster)
    preds, pbytes, succs = dag.preds, dag.pred_bytes, dag.succs
    indeg = [len(p) for p in preds]
    finish = [0.0] * len(dag.nodes)
    ready_at = [0.0] * len(dag.nodes)
    free = [0.0] * len(cluster.devices)
    heap = [(0.0, i) for i, k in enumerate(indeg) if k == 0]
    heapq.heapify(heap)
    end = 0.0
    while heap:
        _, i = heapq.heappop(heap)
        d = dev[i]
        start = free[d]
        for p, nb in zip(preds[i], pbytes[i]):
            e = dev[p]
            t = finish[p] if e == d else finish[p] + nb * inv[e][d] + lat[e][d]
            if t > start:
                start = t
        f = start + dur[d][i]
        finish[i] = f
        free[d] = f
        if f > end:
            end = f
        for s in succs[i]:
            if f > ready_at[s]:
                ready_at[s] = f
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, (ready_at[s], s))
    return end
