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
    if parse_split_spec(spec) == "auto":      # splits alone: split_auto.plan_split_step
        raise PlanError('splits="auto" plans a step with splits alone (no data_parallel, no '
                        'pipeline); name the splits, e.g. splits="dense_1:S(1);dense_2:S(0)"')
    names = [v.name for v in captured.variables]
    resolved = resolve_splits(spec, names, shapes={v.name: v.shape for v in captured.variables})
    check_composition(plan, split_dims(resolved, captured.variables))
    dag = analyse(captured.graph_def, captured.variables)
    group = split_devices(plan, captured.variables, list(resolved))
    split_plan = propagate(dag, resolved, devices=split_group(group, resolved,
                                                              captured.variables),
                           variables=captured.variables, attrs=node_attrs(captured.graph_def),
                           outputs=captured.outputs)
    return dataclasses.replace(plan, splits=split_plan)


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
