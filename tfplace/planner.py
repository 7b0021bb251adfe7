"""Planning: run a placer, check memory per device statically, and build the `Plan` value."""
from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.costs import Calibration
from tfplace._perf import gc_paused
from tfplace.errors import PlanError, bullets
from tfplace.memory import device_peaks, fmt_bytes
from tfplace.placers import get_placer
from tfplace.plan import CutEdge, DeviceUsage, OpPlacement, Plan, VariablePlacement
from tfplace.schedule_sim import durations, simulate

__all__ = ["make_plan", "graph_fingerprint", "cut_edges"]


def graph_fingerprint(graph_def: Any) -> str:
    """First 16 hex digits of the sha256 of the deterministic serialisation."""
    return hashlib.sha256(graph_def.SerializeToString(deterministic=True)).hexdigest()[:16]


def cut_edges(dag: OpDag, placement: dict[str, str]) -> tuple[CutEdge, ...]:
    """One CutEdge per (tensor, destination device) consumed away from its producer."""
    edges: set[tuple[str, str, str, int]] = set()
    nodes = dag.nodes
    for j, n in enumerate(nodes):
        src = placement[n.name]
        for k, cons in enumerate(dag.tensor_consumers[j]):
            for c in cons:
                dst = placement[nodes[c].name]
                if dst != src:
                    nb = n.out_bytes[k] if k < len(n.out_bytes) else 0
                    edges.add((f"{n.name}:{k}", src, dst, nb))
    return tuple(CutEdge(t, s, d, b) for t, s, d, b in sorted(edges))


def _shape(shape: Any) -> tuple[int, ...]:
    return tuple(-1 if s is None else int(s) for s in (shape or ()))


def make_plan(dag: OpDag, cluster: Cluster, *, placer: str = "m_etf",
              variables: Sequence[Any] = (), calibration: Calibration | None = None,
              fingerprint: str = "") -> Plan:
    """Place every op of `dag` on `cluster` with the named placer and describe the result.

    variables: objects with `.node .name .nbytes .shape .dtype` (the captured variables).
    Raises PlanError listing every device over capacity (and every unknown variable node).
    """
    with gc_paused():
        try:
            return _make_plan(dag, cluster, placer=placer, variables=variables,
                              calibration=calibration or Calibration(), fingerprint=fingerprint)
        except PlanError as e:
            hint = _split_hint(variables, len(cluster.devices))
            if not hint or "capacity" not in str(e):
                raise
            raise PlanError(f"{e}\n{hint}") from None


def _split_hint(variables: Sequence[Any], n_devices: int) -> str:
    """The memory error's last fix: split the largest weight (by name) over the devices."""
    from tfplace.splits.memory_fit import split_axis
    ranked = sorted((v for v in variables if getattr(v, "trainable", True)),
                    key=lambda v: (-int(v.nbytes), str(v.name)))
    for v in ranked[:1]:
        for ways in range(n_devices, 1, -1):
            axis = split_axis(_shape(v.shape), ways)
            if axis is not None:
                return (f'  or split the largest weight over the devices: '
                        f'splits="{v.name}:S({axis})" ({fmt_bytes(int(v.nbytes))}, '
                        f'{ways} shards), or splits="auto"')
    return ""


def _make_plan(dag: OpDag, cluster: Cluster, *, placer: str, variables: Sequence[Any],
               calibration: Calibration, fingerprint: str) -> Plan:
    place = get_placer(placer)
    placement = place(dag, cluster, calibration=calibration)
    peaks = device_peaks(dag, placement, cluster)
    problems = []
    for dev in cluster.devices:
        params, peak = peaks[dev.name]
        if peak > dev.memory:
            problems.append(f"{dev.name}: needs {fmt_bytes(peak)} (params {fmt_bytes(params)} + "
                            f"activations {fmt_bytes(peak - params)}) > capacity "
                            f"{fmt_bytes(dev.memory)}")
    missing = sorted(v.node for v in variables if v.node not in dag.index)
    if missing:
        problems.append(f"variables captured at nodes missing from the graph: "
                        f"{', '.join(missing)}; analyse the same graph the variables came from")
    if problems:
        raise PlanError(bullets(f"plan by placer {placer!r} does not fit:", problems)
                        + "\n  fix: add devices, give devices more `memory` in the cluster "
                          "YAML, or use a smaller batch")

    names = cluster.names
    pos = {n: i for i, n in enumerate(names)}
    dur = durations(dag, cluster, calibration)
    ops = [0] * len(names)
    flops: list[list[float]] = [[] for _ in names]
    busy: list[list[float]] = [[] for _ in names]
    for i, n in enumerate(dag.nodes):
        d = pos[placement[n.name]]
        ops[d] += 1
        flops[d].append(n.flops)
        busy[d].append(dur[d][i])
    usage = tuple(DeviceUsage(device=dev.name, ops=ops[d], flops=math.fsum(flops[d]),
                              param_bytes=peaks[dev.name][0], peak_bytes=peaks[dev.name][1],
                              capacity_bytes=dev.memory, busy_seconds=math.fsum(busy[d]))
                  for d, dev in enumerate(cluster.devices))
    var_placements = tuple(sorted(
        (VariablePlacement(node=v.node, name=str(v.name), device=placement[v.node],
                           bytes=int(v.nbytes), shape=_shape(v.shape), dtype=str(v.dtype))
         for v in variables), key=lambda v: (v.node, v.name)))
    return Plan(cluster=cluster, placer=placer,
                ops=tuple(OpPlacement(name, placement[name]) for name in sorted(placement)),
                variables=var_placements, cut_edges=cut_edges(dag, placement), usage=usage,
                predicted_step_seconds=simulate(dag, placement, cluster, calibration),
                graph_fingerprint=fingerprint)
