"""Pipeline-parallel planning glue: a captured micro-batch step -> stages -> a placed Plan.

The step is captured on ONE micro-batch (global batch / M). Its layers become units
(``pipeline.units_from_dag``), ``pipeline.plan_pipeline`` cuts them into K stages, and every op
goes to its stage's device: forward ops by unit, ``gradient_tape/...`` ops with their forward
unit, optimizer updates with their gradient's (= their variable's) unit. The result is an
ordinary Plan (the placement pass and the executor apply unchanged) with ``Plan.pipeline`` set;
``pipeline_spec`` tells the rewrite (``rewrite.pipeline``) what to unroll.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from tfplace.cluster import Cluster
from tfplace.errors import PlanError
from tfplace.plan import Plan

__all__ = ["plan_pipeline_step", "pipeline_spec", "micro_batch", "check_options",
           "stage_devices", "check_devices_per_stage", "place_stages", "update_groups"]

PLACER = "pipeline"


def check_options(stages: Any, micro_batches: Any, schedule: str) -> None:
    """PlanError for a bad K, M or schedule name, before anything is traced."""
    from tfplace.pipeline.schedules import check_shape, get_schedule
    get_schedule(schedule)
    check_shape(1 if stages == "auto" else stages, micro_batches)


def micro_batch(args: tuple, micro_batches: int) -> tuple[tuple, int]:
    """The first micro-batch of every batch-major argument and the global batch; PlanError
    (with the sizes that would work) when M does not divide the batch."""
    import tensorflow as tf
    from tfplace.pipeline.partition import split_batch
    leaves = [a for a in tf.nest.flatten(args) if hasattr(a, "shape") and len(a.shape) >= 1]
    if not leaves:
        raise PlanError("pipeline parallelism needs at least one batch-major tensor argument "
                        "to split into micro-batches")
    batch = int(leaves[0].shape[0])
    per = split_batch(batch, micro_batches)

    def cut(a: Any) -> Any:
        if hasattr(a, "shape") and len(a.shape) >= 1 and int(a.shape[0]) == batch:
            return a[:per]
        return a
    return tf.nest.map_structure(cut, args), batch


def stage_devices(cluster: Cluster, stages: int | str,
                  devices_per_stage: int = 1) -> list[tuple[str, ...]] | None:
    """K groups of ``devices_per_stage`` devices in pipeline order, spread evenly over the
    cluster's tasks (workers) and contiguous within each, so that only the task boundaries
    cross the network: K=2 on 2 workers x 2 devices -> (task0/CPU:0,), (task1/CPU:0,); with 2
    devices per stage -> (task0/CPU:0, task0/CPU:1), (task1/CPU:0, task1/CPU:1). None for
    "auto" or when K x devices_per_stage does not fit (plan_pipeline then uses every device in
    order and reports the problem)."""
    tasks: dict[str, list[str]] = {}
    for d in cluster.names:
        tasks.setdefault(d.split("/device:")[0], []).append(d)
    groups = list(tasks.values())
    if stages == "auto" or not isinstance(stages, int) or \
            not 1 <= stages * devices_per_stage <= len(cluster.names):
        return None
    total = stages * devices_per_stage
    per = [total // len(groups) + (1 if i < total % len(groups) else 0)
           for i in range(len(groups))]
    if any(n > len(g) for n, g in zip(per, groups)):
        return None
    flat = [d for g, n in zip(groups, per) for d in g[:n]]
    return [tuple(flat[i:i + devices_per_stage]) for i in range(0, total, devices_per_stage)]


def check_devices_per_stage(cluster: Cluster, stages: int | str, devices_per_stage: int) -> None:
    """PlanError when K stages of ``devices_per_stage`` devices do not fit the cluster."""
    if not isinstance(devices_per_stage, int) or isinstance(devices_per_stage, bool) or \
            devices_per_stage < 1:
        raise PlanError(f"devices_per_stage must be an int >= 1 (got {devices_per_stage!r})")
    if devices_per_stage == 1:
        return
    if not isinstance(stages, int):
        raise PlanError(f"devices_per_stage={devices_per_stage} needs a fixed pipeline_stages "
                        f"(got {stages!r}); pass pipeline_stages=K")
    if stages * devices_per_stage > len(cluster.names):
        raise PlanError(f"{stages} stages x {devices_per_stage} devices per stage need "
                        f"{stages * devices_per_stage} devices but the cluster has "
                        f"{len(cluster.names)}; use fewer stages or devices_per_stage="
                        f"{max(1, len(cluster.names) // stages)}")


def place_stages(dag: Any, pipe: Any, cluster: Cluster, *, placer: str = "m_etf",
                 calibration: Any = None, together: Sequence[Sequence[str]] = ()
                 ) -> dict[str, str]:
    """Op -> device for every stage's ops: a one-device stage takes its device; a wider stage
    is placed over its own devices by ``placer`` (the foundation's placers, e.g. m_etf), on
    the stage's ops alone (edges from other stages are ignored: they arrive by the pipeline).
    Each group of ``together`` (a weight and its optimizer slots, ``update_groups``) is
    colocated, with every op on those variables."""
    join: dict[str, tuple[str, ...]] = {}
    for group in together:
        for name in group[1:]:
            join[name] = (group[0],)
    from tfplace.analysis import OpDag
    from tfplace.costs import Calibration
    from tfplace.placers import get_placer
    place = get_placer(placer)
    out: dict[str, str] = {}
    for stage in pipe.stages:
        ops = set(stage.ops)
        if len(stage.devices) == 1:
            out.update((op, stage.devices[0]) for op in stage.ops)
            continue
        nodes = [dataclasses.replace(
            n, inputs=tuple(i for i in n.inputs if _producer(i) in ops),
            control_inputs=tuple(c for c in n.control_inputs if c in ops),
            colocate_with=tuple(c for c in n.colocate_with + join.get(n.name, ()) if c in ops))
            for n in dag.nodes if n.name in ops]
        sub = dataclasses.replace(cluster.without_runtime(), devices=tuple(
            cluster.device(d) for d in stage.devices))
        out.update(place(OpDag(nodes), sub, calibration=calibration or Calibration()))
    return out


def _producer(ref: str) -> str:
    from tfplace.analysis import split_input
    return split_input(ref)[0]


def _scaled(units: Sequence[Any], m: int) -> tuple[Any, ...]:
    """Units costed on one micro-batch -> on the global batch (what plan_pipeline expects)."""
    return tuple(dataclasses.replace(u, flops=u.flops * m, out_bytes=u.out_bytes * m,
                                     grad_bytes=u.grad_bytes * m, stash_bytes=u.stash_bytes * m)
                 for u in units)


def plan_pipeline_step(captured: Any, cluster: Cluster, *, stages: int | str,
                       micro_batches: int, schedule: str = "1f1b",
                       stage_boundaries: Sequence[str] | str | None = None,
                       global_batch: int | None = None,
                       layer_names: Sequence[str] | None = None,
                       calibration: Any = None, devices_per_stage: int = 1,
                       placer: str = "m_etf",
                       devices: Sequence[Sequence[str]] | None = None) -> Plan:
    """Stages over ``cluster``'s devices (``devices_per_stage`` each, contiguous) and the
    placement they imply; ``placer`` places a stage of several devices over them.
    ``devices``: a device group per stage instead (splits within a stage): each stage's ops
    are placed on its group's first device, and the split pass spreads its split ops."""
    from tfplace.analysis import analyse
    from tfplace.costs import Calibration
    from tfplace.memory import device_peaks
    from tfplace.pipeline import plan_pipeline, units_from_dag
    from tfplace.planner import cut_edges, graph_fingerprint
    from tfplace.plan import DeviceUsage, OpPlacement, VariablePlacement
    from tfplace.schedule_sim import durations, simulate
    if not captured.gradients:
        raise PlanError("pipeline parallelism needs a training step that calls "
                        "tf.GradientTape.gradient; this step computes no gradients")
    check_options(stages, micro_batches, schedule)
    check_devices_per_stage(cluster, stages, devices_per_stage)
    dag = analyse(captured.graph_def, captured.variables)
    if global_batch is None:
        global_batch = _captured_batch(captured) * micro_batches or None
    units = _scaled(units_from_dag(dag, layer_names=layer_names), micro_batches)
    pipe = plan_pipeline(units, cluster.without_runtime(), stages=stages,
                         micro_batches=micro_batches, schedule=schedule,
                         stage_boundaries=stage_boundaries, global_batch=global_batch,
                         devices=stage_devices(cluster, stages, devices_per_stage)
                         if devices is None else devices)
    placement = place_stages(dag, pipe, cluster, placer=placer, calibration=calibration,
                             together=update_groups(captured)) if devices is None else \
        {op: st.devices[0] for st in pipe.stages for op in st.ops}
    missing = [n.name for n in dag.nodes if n.name not in placement]
    if missing:
        raise PlanError(f"{len(missing)} ops belong to no pipeline stage (first: {missing[:3]}); "
                        "this is a tfplace bug: report it with the step")
    peaks = device_peaks(dag, placement, cluster)
    calibration = calibration or Calibration()
    dur = durations(dag, cluster, calibration)
    pos = {d: i for i, d in enumerate(cluster.names)}
    usage = []
    for d, dev in enumerate(cluster.devices):
        mine = [i for i, n in enumerate(dag.nodes) if pos[placement[n.name]] == d]
        usage.append(DeviceUsage(
            device=dev.name, ops=len(mine), flops=math.fsum(dag.nodes[i].flops for i in mine),
            param_bytes=peaks[dev.name][0], peak_bytes=peaks[dev.name][1],
            capacity_bytes=dev.memory, busy_seconds=math.fsum(dur[d][i] for i in mine)))
    variables = tuple(sorted(
        (VariablePlacement(node=v.node, name=str(v.name), device=placement[v.node],
                           bytes=int(v.nbytes), shape=tuple(int(s) for s in v.shape),
                           dtype=str(v.dtype)) for v in captured.variables),
        key=lambda v: (v.node, v.name)))
    return Plan(cluster=cluster.without_runtime(), placer=PLACER,
                ops=tuple(OpPlacement(n, placement[n]) for n in sorted(placement)),
                variables=variables, cut_edges=cut_edges(dag, placement), usage=tuple(usage),
                predicted_step_seconds=pipe.predicted_step_seconds or
                simulate(dag, placement, cluster, calibration),
                graph_fingerprint=graph_fingerprint(captured.graph_def), pipeline=pipe)


def _captured_batch(captured: Any) -> int:
    """The leading dimension of the step's first batch-major argument (0 when none)."""
    nodes = {n.name: n for n in captured.graph_def.node}
    for name in captured.inputs:
        dims = nodes[name].attr["shape"].shape.dim
        if dims and dims[0].size > 0:
            return int(dims[0].size)
    return 0


def _consumers(graph_def: Any) -> dict[str, list[tuple[str, int]]]:
    """Tensor "node:k" -> the (consumer, input position) pairs reading it (data edges)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for n in graph_def.node:
        for pos, inp in enumerate(i for i in n.input if not i.startswith("^")):
            src, _, k = inp.partition(":")
            out.setdefault(f"{src}:{k or 0}", []).append((n.name, pos))
    return out


def _written_variables(nodes: dict[str, Any], consumers: dict[str, list[tuple[str, int]]],
                       mark: str, after: dict[str, list[str]] | None = None) -> list[str]:
    """The resource placeholders written downstream of a gradient mark, nearest first
    (breadth first; an IdentityN passes input k to output k only, as Keras passes all
    gradients through one). With ``after`` (write -> the reads of its variable that wait for
    it), a read after a write is downstream too: then the list is the variable the gradient
    updates and its optimizer slots (Keras' Adam reads m and v back after assigning them)."""
    found: list[str] = []
    seen, todo = {f"{mark}:0"}, [f"{mark}:0"]
    while todo:
        nxt = []
        for tensor in todo:
            for c, pos in consumers.get(tensor, ()):
                node = nodes[c]
                if node.op != "ReadVariableOp" and node.input:
                    src = nodes.get(node.input[0].lstrip("^").split(":")[0])
                    if src is not None and src.op == "Placeholder" and \
                            src.attr["dtype"].type == 20:
                        if src.name not in found:
                            found.append(src.name)
                        for read in (after or {}).get(c, ()):
                            if f"{read}:0" not in seen:
                                seen.add(f"{read}:0")
                                nxt.append(f"{read}:0")
                outs = [pos] if node.op == "IdentityN" else \
                    range(max(1, len(node.attr["_output_shapes"].list.shape)
                              if "_output_shapes" in node.attr else 1))
                for k in outs:
                    t = f"{c}:{k}"
                    if t not in seen:
                        seen.add(t)
                        nxt.append(t)
        todo = nxt
    return found


def update_groups(captured: Any) -> list[list[str]]:
    """Per dense gradient: the variables its optimizer update writes (weight and slots), which
    must share a device (the pipeline's "ps" flush updates them on one device)."""
    gd = captured.graph_def
    nodes = {n.name: n for n in gd.node}
    consumers = _consumers(gd)
    after: dict[str, list[str]] = {}
    for n in gd.node:
        if n.op == "ReadVariableOp":
            for inp in n.input:
                w = nodes.get(inp.lstrip("^").split(":")[0])
                if inp.startswith("^") and w is not None and w.op != "ReadVariableOp" and \
                        w.input and w.input[0].split(":")[0] == n.input[0].split(":")[0]:
                    after.setdefault(w.name, []).append(n.name)
    return [_written_variables(nodes, consumers, m.node, after)
            for m in captured.gradients if not m.sparse]


def _variable_device(nodes: dict[str, Any], consumers: dict[str, list[tuple[str, int]]],
                     mark: str, placement: dict[str, str]) -> str:
    """The device of the variable a gradient updates: the first resource placeholder written
    downstream of the mark, else the mark's own device."""
    written = _written_variables(nodes, consumers, mark)
    return placement[written[0]] if written else placement[mark]


def pipeline_spec(plan: Plan, captured: Any) -> Any:
    """The micro-batch unrolling as a ReplicationSpec: M copies on the SAME devices, each
    gradient reduced alone (sum x 1/M) on its variable's stage device, "ps" so the optimizer
    runs once per step on the accumulated gradient."""
    from tfplace.rewrite.replicate import ReplicationSpec
    pipe = plan.pipeline
    if pipe is None:
        raise PlanError("pipeline_spec needs a plan with a pipeline (plan.pipeline is None)")
    gd = captured.graph_def
    nodes = {n.name: n for n in gd.node}
    consumers = _consumers(gd)
    placement = plan.placement()
    shard = None
    batch: list[str] = []
    shared: list[str] = []
    for name in captured.inputs:
        dims = nodes[name].attr["shape"].shape.dim
        lead = int(dims[0].size) if dims else None
        if shard is None and lead:
            shard = lead
        (batch if lead is not None and lead == shard else shared).append(name)
    dense = [m.node for m in captured.gradients if not m.sparse]
    devices = tuple(d for s in pipe.stages for d in s.devices)
    return ReplicationSpec(
        groups=(devices,) * pipe.micro_batches, batch_inputs=tuple(batch),
        shared_inputs=tuple(shared), outputs=captured.outputs,
        dense=tuple((m,) for m in dense),
        sparse=tuple((m.node, m.indices) for m in captured.gradients if m.sparse),
        method="ps",
        ps_targets=tuple(_variable_device(nodes, consumers, m, placement) for m in dense))
