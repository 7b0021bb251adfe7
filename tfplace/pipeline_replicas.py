"""Pipeline x data parallel: R replicas of one K-stage pipeline; after the micro-batches are
accumulated, each stage's gradients are all-reduced across the R replicas of that stage.

    Cluster.local(devices=4), data_parallel=2, pipeline_stages=2:

    replica 0:  CPU:0 [stage 0] -> CPU:1 [stage 1]     global batch -> Split(R) -> Split(M)
    replica 1:  CPU:2 [stage 0] -> CPU:3 [stage 1]
    stage 0's gradients: CPU:0 <-> CPU:2    stage 1's: CPU:1 <-> CPU:3   (after the flush)

Planning: the pipeline is planned on replica 0's devices (``plan_pipeline_step``); the other
replicas are its image on their device groups, so ``Plan.replicas`` holds every replica's stage
devices in stage order. A bucket never mixes stages: its gradients all live on one device.
Rewrite: the pipeline pass unrolls replica 0's micro-batches; the replication pass then copies
that whole pipeline R times and syncs each accumulated gradient (``tfplace_r0/<mark>``) with
the plan's sync method. Every replica applies the same mean, so the variables stay identical.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from tfplace.cluster import Cluster
from tfplace.errors import PlanError
from tfplace.plan import Plan

__all__ = ["replica_count", "replica_total", "check_batch", "micro_batch", "plan_pipeline_replicas",
           "replication_spec", "ps_targets", "apply"]

BACKENDS = ("tf", "dataflow")


def replica_count(cluster: Cluster, replicas: int | str, stages: int | str,
                  backend: str = "tf") -> int:
    """R for ``data_parallel=replicas`` with K pipeline stages (``"auto"``: as many whole
    pipelines as the devices hold), checked: PlanError when R*K exceeds the devices."""
    from tfplace import replicas as groups
    if backend not in BACKENDS:
        raise PlanError(f"pipeline_stages with sync_backend={backend!r} is not supported; use "
                        f"one of {', '.join(BACKENDS)} (Horovod runs one process per replica, "
                        "not a pipeline)")
    n = len(cluster.devices)
    if replicas == "auto":
        if stages == "auto":
            raise PlanError("data_parallel='auto' with pipeline_stages='auto' leaves both "
                            "counts open; give one of them as a number")
        replicas = max(1, n // int(stages))
    r = groups.replica_count(cluster, replicas)
    if isinstance(stages, int) and r * stages > n:
        raise PlanError(f"data_parallel={r} x pipeline_stages={stages} needs {r * stages} "
                        f"devices but the cluster has {n}; use at most {max(1, n // stages)} "
                        f"replicas of {stages} stages, or fewer stages")
    return r


def replica_total(cluster: Cluster, replicas: Any, pipeline: Any, backend: str = "tf") -> int:
    """The front doors' replica count: with pipeline options and ``replicas`` != 1 as
    ``replica_count``, else ``data_parallel.replica_total``."""
    if pipeline is not None and replicas != 1:
        return replica_count(cluster, replicas, pipeline["stages"], backend)
    from tfplace.data_parallel import replica_total as plain
    return plain(cluster, replicas, backend)


def check_batch(batch: int, replicas: int, micro_batches: int) -> None:
    """PlanError naming the sizes when the global batch does not split into R x M equal
    micro-batches."""
    parts = replicas * micro_batches
    if batch < parts or batch % parts:
        ok = [b for b in range(parts, 4 * parts + 1, parts)]
        raise PlanError(f"the global batch of {batch} does not split into data_parallel="
                        f"{replicas} x micro_batches={micro_batches} = {parts} equal "
                        f"micro-batches ({batch} % {parts} = {batch % parts}); use a batch "
                        f"that is a multiple of {parts} (e.g. {', '.join(map(str, ok))}) or "
                        "change data_parallel / micro_batches")


def micro_batch(args: tuple, replicas: int, micro_batches: int) -> tuple[tuple, int]:
    """One replica's first micro-batch of every batch-major argument, and the global batch."""
    import tensorflow as tf
    from tfplace.pipeline_parallel import micro_batch as first
    leaves = [a for a in tf.nest.flatten(args) if hasattr(a, "shape") and len(a.shape) >= 1]
    if leaves and replicas > 1:
        check_batch(int(leaves[0].shape[0]), replicas, micro_batches)
    return first(args, replicas * micro_batches)


def _stage_buckets(plan: Plan, captured: Any, fusion_bytes: int) -> tuple[Any, ...]:
    """Buckets per stage (last stage first: its backward ends first), each stage's gradients
    in production order."""
    from tfplace.data_parallel import _mark_bytes
    from tfplace.pipeline_parallel import pipeline_spec
    from tfplace.sync_cost import make_buckets
    spec = pipeline_spec(plan, captured)
    nodes = {n.name: (i, n) for i, n in enumerate(captured.graph_def.node)}
    home = {b[0]: t for b, t in zip(spec.dense, spec.ps_targets)}
    out: list[Any] = []
    for stage in reversed(plan.pipeline.stages if plan.pipeline else ()):
        marks = [m for m, dev in home.items() if dev == stage.devices[0]]
        marks.sort(key=lambda m: nodes[nodes[m][1].input[0].split(":")[0]][0])
        out += make_buckets(marks, [_mark_bytes(nodes[m][1]) for m in marks], fusion_bytes)
    return tuple(out)


def plan_pipeline_replicas(captured: Any, cluster: Cluster, *, replicas: int,
                           pipeline: Any, sync: str = "auto", backend: str = "tf",
                           fusion_bytes: int | None = None,
                           layer_names: Sequence[str] | None = None,
                           calibration: Any = None) -> Plan:
    """The pipeline on replica 0's devices, its image on every other replica's, and the sync
    of each stage's accumulated gradients across the replicas. ``captured``: one micro-batch
    of one replica (``micro_batch``)."""
    from tfplace.cluster import GRPC_BANDWIDTH
    from tfplace.data_parallel import _mark_bytes, shard_loads
    from tfplace.pipeline_parallel import _captured_batch, plan_pipeline_step
    from tfplace.replicas import replica_groups
    from tfplace.sync_cost import choose_sync, default_fusion_bytes, gradient_sync_plan
    replica_count(cluster, replicas, pipeline["stages"], backend)
    if pipeline.get("devices_per_stage", 1) != 1:
        raise PlanError(f"devices_per_stage={pipeline['devices_per_stage']} with "
                        f"data_parallel={replicas} is not supported yet; use devices_per_stage=1 "
                        "with data_parallel, or data_parallel=1 with stages spanning devices")
    groups = replica_groups(cluster, replicas)
    sub = dataclasses.replace(cluster.without_runtime(),
                              devices=tuple(cluster.device(d) for d in groups[0]))
    opts = dict(pipeline)
    base = plan_pipeline_step(captured, sub, **opts, layer_names=layer_names,
                              calibration=calibration)
    pipe = base.pipeline
    if pipe is None:
        raise PlanError("plan_pipeline_step returned no pipeline; this is a tfplace bug")
    stage_devs = tuple(s.devices[0] for s in pipe.stages)
    reps = tuple(tuple(dict(zip(groups[0], g))[d] for d in stage_devs) for g in groups)
    if fusion_bytes is None:
        nodes = {n.name: n for n in captured.graph_def.node}
        grad_bytes = sum(_mark_bytes(nodes[m.node]) for m in captured.gradients if not m.sparse)
        bw, lat = cluster.link(reps[0][0], reps[-1][0]) if replicas > 1 else (GRPC_BANDWIDTH, 0)
        fusion_bytes = default_fusion_bytes(replicas, bw, lat, max(grad_bytes, 1))
    elif fusion_bytes < 1:
        raise PlanError(f"fusion_bytes={fusion_bytes} must be >= 1 (or None to let the planner "
                        "choose)")
    buckets = _stage_buckets(base, captured, fusion_bytes)
    total = sum(b.bytes for b in buckets)
    loads = shard_loads(reps, buckets)
    decision = choose_sync(reps, cluster, total, requested=sync,
                           backward_seconds=0.6 * base.predicted_step_seconds,
                           ps_busiest_bytes=max(loads.values()) if loads else 0)
    sync_plan = gradient_sync_plan(decision, replicas=replicas, fusion_bytes=fusion_bytes,
                                   backend=backend)
    sync_plan = dataclasses.replace(sync_plan, reason=sync_plan.reason + (
        f"; pipeline: {replicas} replicas x {pipe.num_stages} stages, each stage's "
        f"accumulated gradients synced across its {replicas} replicas"))
    usage = tuple(dataclasses.replace(u, device=dict(zip(groups[0], g))[u.device])
                  for g in groups for u in base.usage if u.device in groups[0])
    batch = _captured_batch(captured) * pipe.micro_batches * replicas
    return dataclasses.replace(
        base, cluster=cluster.without_runtime(), replicas=reps, sync=sync_plan, usage=usage,
        buckets=buckets, pipeline=dataclasses.replace(pipe, global_batch=batch or pipe.global_batch))


def replication_spec(plan: Plan, captured: Any, *, collectives: bool = False) -> Any:
    """The replication of the unrolled pipeline: every replica a copy of replica 0's pipeline,
    the synced gradients the accumulated marks of micro-batch copy 0."""
    from tfplace.data_parallel import _implementation
    from tfplace.data_parallel import replication_spec as plain
    from tfplace.rewrite.replicate import replica_name
    spec = plain(plan, captured, collectives=collectives)
    method = _implementation(plan, collectives)
    return dataclasses.replace(
        spec, dense=tuple(tuple(replica_name(0, m) for m in b.gradients) for b in plan.buckets),
        sparse=tuple((replica_name(0, v), replica_name(0, i)) for v, i in spec.sparse),
        method=method, ps_targets=ps_targets(plan, captured) if method == "ps" else ())


def ps_targets(plan: Plan, captured: Any) -> tuple[str, ...]:
    """For sync "ps": each bucket's aggregation device, the least-loaded replica of the
    bucket's own stage device (a stage's gradients never leave that stage's devices)."""
    from tfplace.pipeline_parallel import pipeline_spec
    spec = pipeline_spec(plan, captured)
    home = {b[0]: t for b, t in zip(spec.dense, spec.ps_targets)}
    stage = {d: i for i, d in enumerate(plan.replicas[0])}
    load: dict[str, int] = {}
    out = []
    for bucket in plan.buckets:
        s = stage[home[bucket.gradients[0]]]
        dev = min((g[s] for g in plan.replicas), key=lambda d: (load.get(d, 0), d))
        load[dev] = load.get(dev, 0) + bucket.bytes
        out.append(dev)
    return tuple(out)


def apply(placed: Any, plan: Plan, captured: Any, *, collectives: bool = False,
          queues: str | None = None) -> Any:
    """Placed GraphDef -> R replicas of the schedule-ordered pipeline, gradients synced."""
    from tfplace.pipeline_parallel import pipeline_spec
    from tfplace.rewrite import pipeline, replicate
    if plan.pipeline is None:
        raise PlanError("pipeline_replicas.apply needs a plan with a pipeline")
    unrolled = pipeline.apply(placed, pipeline_spec(plan, captured), plan.pipeline, queues=queues)
    if plan.num_replicas == 1:
        return unrolled
    return replicate.apply(unrolled, replication_spec(plan, captured, collectives=collectives))
