"""Model-parallel splits glue: a plan with its SplitPlan, and the split rewrite of a placed step."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from tfplace.capture import Captured
from tfplace.errors import PlanError
from tfplace.plan import Plan

__all__ = ["plan_splits", "apply_splits", "split_group", "split_dims", "TOKEN_PREFIX"]

TOKEN_PREFIX = "split"


def plan_splits(captured: Captured, plan: Plan, spec: Any) -> Plan:
    """``plan`` with the SplitPlan of ``spec`` (dict, "dense_1:S(1);..." string) over all the
    cluster's devices, with data parallelism over each replica's devices (a 2-D mesh), with
    a pipeline over the devices of the stage that holds the split variables."""
    from tfplace.analysis import analyse
    from tfplace.split_compose import check_composition, split_devices
    from tfplace.splits import node_attrs, parse_split_spec, propagate, resolve_splits
    from tfplace.splits.splitplan import SplitPlan
    if parse_split_spec(spec) == "auto":      # splits alone: split_auto.plan_split_step
        raise PlanError('splits="auto" plans a step with splits alone (no data_parallel, no '
                        'pipeline); name the splits, e.g. splits="dense_1:S(1);dense_2:S(0)"')
    names = [v.name for v in captured.variables]
    resolved = resolve_splits(spec, names, shapes={v.name: v.shape for v in captured.variables})
    check_composition(plan, split_dims(resolved, captured.variables))
    groups = split_devices(plan, captured.variables, list(resolved))
    graph_def = captured.graph_def
    if len(groups) > 1:                  # stages' gradients apart (rewrite: the same copy)
        from tfplace.split_compose import split_identity_n
        graph_def = split_identity_n(graph_def)
    dag = analyse(graph_def, captured.variables)
    parts = []
    for group, names in groups:
        mine = {name: resolved[name] for name in names}
        parts.append(propagate(dag, mine, devices=split_group(group, mine, captured.variables),
                               variables=captured.variables, attrs=node_attrs(graph_def),
                               outputs=captured.outputs, fence=_fence(plan, group, dag)))
    if len(parts) > 1:
        _check_disjoint(parts)
    split_plan = parts[0] if len(parts) == 1 else SplitPlan.of_parts(tuple(parts))
    return dataclasses.replace(plan, splits=split_plan)


def _fence(plan: Plan, group: Sequence[str], dag: Any) -> frozenset[str]:
    """The ops a stage's split plan leaves whole: the other pipeline stages' ops, except the
    Identity ops a gradient passes through on its way to the optimizer (Keras' gradient
    Identity may sit on another stage; it carries one gradient, split where it is made)."""
    if plan.pipeline is None:
        return frozenset()
    return frozenset(op for st in plan.pipeline.stages if set(st.devices) != set(group)
                     for op in st.ops
                     if op in dag.index and dag.nodes[dag.index[op]].op != "Identity")


def _check_disjoint(parts: Sequence[Any]) -> None:
    """PlanError if two stages' split plans split the same op (each pass replaces its ops)."""
    seen: dict[str, int] = {}
    for k, part in enumerate(parts):
        for o in part.ops:
            if o.name in seen:
                raise PlanError(f"op {o.name!r} is split by the split variables of two pipeline "
                                f"stages (on {', '.join(parts[seen[o.name]].devices)} and on "
                                f"{', '.join(part.devices)}); split the variables of one of "
                                "these stages only, or move the stage boundaries "
                                "(stage_boundaries=...)")
            seen[o.name] = k


def split_group(devices: Sequence[str], splits: Mapping[str, Any],
                variables: Sequence[Any]) -> tuple[str, ...]:
    """The devices a split runs on: the largest count n <= len(devices) that divides every
    split axis (a 50-row table on 4 devices goes on 2), spread evenly over ``devices`` (which
    list each task's devices together, so the group spans the tasks)."""
    dims = split_dims(splits, variables)
    total = len(devices)
    for n in range(total, 0, -1):
        if total % n == 0 and all(d % n == 0 for d in dims if d > 0):
            return tuple(devices[::total // n])
    return tuple(devices[:1])


def split_dims(splits: Mapping[str, Any], variables: Sequence[Any]) -> list[int]:
    """The sizes of the split variables' split axes."""
    shapes = {v.name: tuple(v.shape) for v in variables} | {v.node: tuple(v.shape)
                                                            for v in variables}
    return [shapes[name][lay.axis] for name, lay in splits.items()
            if name in shapes and lay.is_split and lay.axis < len(shapes[name])]


def apply_splits(placed: Any, plan: Plan, captured: Captured, *,
                 collectives: bool = False) -> Any:
    """The split pass on the placed GraphDef (P -> B by CollectiveReduceV2 when
    ``collectives``, else by dataflow AddN); with data parallelism, then replicated over the
    mesh (split_compose)."""
    from tfplace.rewrite import splits
    if plan.splits is None or plan.splits.is_empty:      # splits="auto" that split nothing
        return placed
    reduce = _collective_all_reduce if collectives else None
    if plan.splits.parts:                # one part per pipeline stage, one pass each
        from tfplace.split_compose import split_identity_n
        out = split_identity_n(placed)
        for part in plan.splits.parts:
            out = splits.apply(out, part, outputs=captured.outputs, collective=reduce)
    else:
        out = splits.apply(placed, plan.splits, outputs=captured.outputs, collective=reduce)
    if plan.pipeline is not None:
        from tfplace.split_compose import pipeline_split
        out = pipeline_split(out, plan, captured)
    elif plan.num_replicas > 1:
        from tfplace.split_compose import replicate_split
        out = replicate_split(out, plan, captured, collectives=collectives)
    return out


def _collective_all_reduce(b: Any, parts: list[str], devices: tuple[str, ...],
                           dtype: int) -> list[str]:
    """A sum over the group by TF's CollectiveReduceV2, one per device (allreduce.collective's
    ordering tokens)."""
    from tfplace.rewrite.allreduce import collective
    from tfplace.rewrite.replicate import _stable_key
    n = len(parts)
    key = _stable_key(TOKEN_PREFIX, *parts)
    sums = collective(b, parts, devices, 0, dtype, 1.0 / n,
                      group_key=_stable_key(TOKEN_PREFIX, *devices), instance_key=key)
    for name in sums:                   # collective() builds a mean; the boxing needs the sum
        b._node(name).attr["final_op"].s = b"Id"
    return sums
