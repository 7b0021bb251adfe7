"""Planning a step with splits alone: explicit or splits="auto", checked against memory as split.

    spec -> layouts       explicit: resolve_splits; "auto": split what does not fit
                          (splits.memory_fit), else the split the cost model finds faster
                          (splits.auto), else nothing
         -> SplitPlan     propagate() over split_group()
         -> placement     the placer on the unsplit ops, every group device's capacity lowered
                          by the shards it holds, split ops' outputs counted at their shard size
         -> memory check  split_peaks(): shards, sharded slots and split activations per device;
                          the foundation's PlanError when a device is still over its capacity
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from tfplace.analysis import OpDag
from tfplace.capture import Captured
from tfplace.cluster import Cluster
from tfplace.costs import Calibration, family
from tfplace.errors import PlanError, bullets
from tfplace.memory import fmt_bytes
from tfplace.plan import Plan
from tfplace.splits.auto import AutoChoice, SpeedCandidate, choose_for_speed
from tfplace.splits.layout import Layout, S
from tfplace.splits.memory_fit import VariableSize, split_axis, split_order
from tfplace.splits.splitplan import SplitPlan

__all__ = ["plan_split_step", "speed_candidates", "MAX_SPEED_CANDIDATES", "MAX_MEMORY_SPLITS"]

MAX_SPEED_CANDIDATES = 6          # the largest trainable variables tried for a speed split
MAX_MEMORY_SPLITS = 8             # ... and split one more at a time for memory
_UNLIMITED = 2**62


def plan_split_step(captured: Captured, cluster: Cluster, spec: Any, *, placer: str = "m_etf",
                    calibration: Calibration | None = None) -> Plan:
    """The plan of ``captured`` on ``cluster`` with the splits of ``spec`` (dict, one-line
    string or "auto"); PlanError when a device does not fit even split."""
    from tfplace.analysis import analyse
    from tfplace.planner import graph_fingerprint, make_plan
    from tfplace.splits import node_attrs, parse_split_spec, resolve_splits
    calib = calibration or Calibration()
    dag = analyse(captured.graph_def, captured.variables)
    fp = graph_fingerprint(captured.graph_def)
    attrs = node_attrs(captured.graph_def)
    if parse_split_spec(spec) != "auto":
        layouts = resolve_splits(spec, [v.name for v in captured.variables],
                                 shapes={v.name: v.shape for v in captured.variables})
        split_plan = _propagate(dag, captured, cluster, layouts, attrs)
        return _place(dag, captured, cluster, split_plan, placer, calib, fp)
    try:
        whole = make_plan(dag, cluster, placer=placer, variables=captured.variables,
                          calibration=calib, fingerprint=fp)
    except PlanError as e:
        return _memory_splits(dag, captured, cluster, attrs, placer, calib, fp, e)
    choices, plans = speed_candidates(dag, captured, cluster, attrs, calib)
    chosen = [c for c in choices if c.chosen]
    if not chosen:
        return dataclasses.replace(whole, splits=SplitPlan(devices=(), auto=choices))
    split_plan = dataclasses.replace(plans[chosen[0].variable], auto=choices)
    try:
        return _place(dag, captured, cluster, split_plan, placer, calib, fp)
    except PlanError:                      # faster but not placeable in memory: keep it whole
        kept = tuple(dataclasses.replace(a, chosen=False) for a in choices)
        return dataclasses.replace(whole, splits=SplitPlan(devices=(), auto=kept))


def _propagate(dag: OpDag, captured: Captured, cluster: Cluster,
               layouts: Mapping[str, Layout], attrs: Any) -> SplitPlan:
    from tfplace.split_parallel import split_group
    from tfplace.splits import propagate
    group = split_group(cluster.names, layouts, captured.variables)
    return propagate(dag, layouts, devices=group, variables=captured.variables, attrs=attrs,
                     outputs=captured.outputs)


def _relaxed(cluster: Cluster, reserve: Mapping[str, int] | None = None) -> Cluster:
    """``cluster`` with each device's memory lowered by ``reserve`` (None: unlimited)."""
    devices = tuple(dataclasses.replace(
        d, memory=_UNLIMITED if reserve is None else max(d.memory - reserve.get(d.name, 0), 1))
        for d in cluster.devices)
    return dataclasses.replace(cluster, devices=devices)


def _boxing_seconds(plan: SplitPlan, cluster: Cluster) -> float:
    if len(plan.devices) < 2:
        return 0.0
    bw, lat = cluster.link(plan.devices[0], plan.devices[1])
    return sum(lat + b.bytes / bw for b in plan.boxing if b.bytes > 0)


def _memory_splits(dag: OpDag, captured: Captured, cluster: Cluster, attrs: Any, placer: str,
                   calib: Calibration, fingerprint: str, whole: PlanError) -> Plan:
    """Split the largest variables (with their tied slots) one more at a time, in split_order,
    until the split plan passes the memory check; PlanError with the last check's figures."""
    from tfplace.splits.slots import tied_variables
    by_node = {v.node: v for v in captured.variables}
    tied = {n: g for g in tied_variables(dag, by_node) for n in g}
    sizes = [VariableSize(v.name, tuple(v.shape),
                          sum(by_node[n].nbytes for n in tied.get(v.node, (v.node,))), "")
             for v in captured.variables if v.trainable]
    layouts: dict[str, Layout] = {}
    last: PlanError = whole
    for name, layout in split_order(sizes, len(cluster.names))[:MAX_MEMORY_SPLITS]:
        try:
            split_plan = _propagate(dag, captured, cluster, {**layouts, name: layout}, attrs)
        except PlanError:                  # no signature for this split: try the next one
            continue
        layouts[name] = layout
        box = _boxing_seconds(split_plan, cluster)
        split_plan = dataclasses.replace(split_plan, auto=tuple(
            AutoChoice(v, lay, len(split_plan.devices), "memory", 0.0, box, True)
            for v, lay in layouts.items()))
        try:
            return _place(dag, captured, cluster, split_plan, placer, calib, fingerprint)
        except PlanError as e:
            last = e
    tried = ", ".join(f"{v}:{lay}" for v, lay in layouts.items()) or "no variable could be split"
    raise PlanError(f'splits="auto" could not make the plan fit (split: {tried}):\n{last}')


def speed_candidates(dag: OpDag, captured: Captured, cluster: Cluster, attrs: Any,
                     calib: Calibration) -> tuple[tuple[AutoChoice, ...], dict[str, SplitPlan]]:
    """The speed figures of splitting each of the largest trainable variables on its own (on
    its largest axis that divides by the device count), and the split plan of each."""
    n = len(cluster.names)
    device = cluster.devices[0]
    bw, lat = cluster.link(cluster.names[0], cluster.names[-1]) if n > 1 else (1.0, 0.0)
    candidates, plans = [], {}
    ranked = sorted((v for v in captured.variables if v.trainable and len(v.shape) >= 2),
                    key=lambda v: (-v.nbytes, v.name))[:MAX_SPEED_CANDIDATES]
    for v in ranked:
        axis = split_axis(v.shape, n) if n > 1 else None
        if axis is None:
            continue
        try:
            sp = _propagate(dag, captured, cluster, {v.name: S(axis)}, attrs)
        except PlanError:                  # no signature for this split: not a candidate
            continue
        split_ops = {o.name for o in sp.ops if o.local or any(
            not lay.is_broadcast for lay in o.inputs + o.outputs)}
        compute = sum(node.flops / (device.flops * calib.scale(family(node.op)))
                      for node in dag.nodes if node.name in split_ops)
        plans[v.name] = sp
        candidates.append(SpeedCandidate(v.name, S(axis), len(sp.devices), compute,
                                         sum(1 for b in sp.boxing if b.bytes > 0),
                                         sp.boxing_bytes))
    return choose_for_speed(candidates, bandwidth=bw, latency=lat), plans


def _place(dag: OpDag, captured: Captured, cluster: Cluster, split_plan: SplitPlan,
           placer: str, calib: Calibration, fingerprint: str) -> Plan:
    """Place the whole ops around the split plan's reserved shards; check memory as split."""
    from tfplace.planner import make_plan
    from tfplace.splits.peaks import shard_params, split_peaks
    shards = {v.node for v in split_plan.variables}
    reserve = shard_params(dag, split_plan)
    ways = max(len(split_plan.devices), 1)
    split_outputs = {o.name: o.outputs for o in split_plan.ops}
    nodes = [dataclasses.replace(
        n, param_bytes=0 if n.name in shards else n.param_bytes,
        out_bytes=tuple(b // ways if k < len(split_outputs[n.name])
                        and split_outputs[n.name][k].is_split else b
                        for k, b in enumerate(n.out_bytes)) if n.name in split_outputs
        else n.out_bytes) for n in dag.nodes]
    adjusted = OpDag(nodes)
    kw: dict[str, Any] = dict(placer=placer, variables=captured.variables, calibration=calib,
                              fingerprint=fingerprint)
    try:
        plan = make_plan(adjusted, _relaxed(cluster, reserve), **kw)
    except PlanError:                 # the exact check below reports what does not fit
        plan = make_plan(adjusted, _relaxed(cluster), **kw)
    placement = {o.name: o.device for o in plan.ops}
    peaks = split_peaks(dag, placement, cluster, split_plan)
    problems = [f"{d.name}: needs {fmt_bytes(peaks[d.name][1])} (params "
                f"{fmt_bytes(peaks[d.name][0])} + activations "
                f"{fmt_bytes(peaks[d.name][1] - peaks[d.name][0])}) > capacity "
                f"{fmt_bytes(d.memory)}" for d in cluster.devices
                if peaks[d.name][1] > d.memory]
    if problems:
        split = ", ".join(f"{v.variable} {v.layout}" for v in split_plan.variables) or "nothing"
        raise PlanError(bullets(f"plan by placer {placer!r} with splits ({split}) does not "
                                "fit:", problems)
                        + "\n  fix: split more or larger variables (splits=\"auto\" picks them), "
                          "add devices, give devices more `memory` in the cluster YAML, or use "
                          "a smaller batch")
    usage = tuple(dataclasses.replace(u, param_bytes=peaks[u.device][0],
                                      peak_bytes=peaks[u.device][1],
                                      capacity_bytes=cluster.device(u.device).memory)
                  for u in plan.usage)
    return dataclasses.replace(plan, cluster=cluster, usage=usage, splits=split_plan)

