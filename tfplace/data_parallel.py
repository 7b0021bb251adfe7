"""Data-parallel planning: replica groups, the sync decision and buckets for a captured step."""
from __future__ import annotations

import dataclasses
from typing import Any

from tfplace.cluster import GRPC_BANDWIDTH, GRPC_LATENCY, Cluster
from tfplace.errors import PlanError
from tfplace.plan import Plan

__all__ = ["plan_data_parallel", "replication_spec", "shard_args", "replica_total",
           "horovod_groups", "horovod_sync", "BACKENDS"]

BACKENDS = ("tf", "dataflow", "horovod")
_DTYPE_BYTES = {1: 4, 2: 8, 19: 2, 14: 2}


def shard_args(args: tuple, replicas: int) -> tuple[tuple, int]:
    """The first replica's slice of every batch-major argument, and the global batch size."""
    import tensorflow as tf
    from tfplace.replicas import split_batch
    leaves = [a for a in tf.nest.flatten(args) if hasattr(a, "shape") and len(a.shape) >= 1]
    if not leaves:
        raise PlanError("data parallelism needs at least one batch-major tensor argument")
    batch = int(leaves[0].shape[0])
    per = split_batch(batch, replicas)[0]

    def cut(a: Any) -> Any:
        if hasattr(a, "shape") and len(a.shape) >= 1 and int(a.shape[0]) == batch:
            return a[:per]
        return a
    return tf.nest.map_structure(cut, args), batch


def _mark_bytes(node: Any) -> int:
    shapes = node.attr["_output_shapes"].list.shape
    n = _DTYPE_BYTES.get(node.attr["T"].type, 4)
    for d in shapes[0].dim if shapes else ():
        n *= max(int(d.size), 1)
    return n


def plan_data_parallel(captured: Any, cluster: Cluster, *, replicas: int | str, placer: str,
                       sync: str = "auto", backend: str = "tf", fusion_bytes: int | None = None,
                       calibration: Any = None) -> Plan:
    """Place one replica on the first device group, then record replicas, sync and buckets."""
    from tfplace.api import plan_captured
    from tfplace.replicas import replica_groups
    from tfplace.sync_cost import choose_sync, default_fusion_bytes, gradient_sync_plan, make_buckets
    if backend not in BACKENDS:
        raise PlanError(f"unknown sync_backend {backend!r} (valid: {', '.join(BACKENDS)})")
    horovod = backend == "horovod"
    if horovod:
        from tfplace.runtime.horovod import load
        load()                                  # BackendError naming `make horovod`
    groups = horovod_groups(cluster, replicas) if horovod else replica_groups(cluster, replicas)
    if not captured.gradients:
        raise PlanError("data parallelism needs a training step that calls "
                        "tf.GradientTape.gradient; this step computes no gradients")
    sub = dataclasses.replace(cluster.without_runtime(),
                              devices=tuple(cluster.device(d) for d in groups[0]))
    base = plan_captured(captured, sub, placer=placer, calibration=calibration)
    nodes = {n.name: (i, n) for i, n in enumerate(captured.graph_def.node)}
    dense = [m for m in captured.gradients if not m.sparse]
    dense.sort(key=lambda m: nodes[nodes[m.node][1].input[0].split(":")[0]][0])
    sizes = [_mark_bytes(nodes[m.node][1]) for m in dense]
    total = sum(sizes)
    if fusion_bytes is None:
        bw, lat = (GRPC_BANDWIDTH, GRPC_LATENCY) if horovod else \
            cluster.link(groups[0][0], groups[-1][0])
        fusion_bytes = default_fusion_bytes(len(groups), bw, lat, max(total, 1))
    elif fusion_bytes < 1:
        raise PlanError(f"fusion_bytes={fusion_bytes} must be >= 1 (or None to let the planner "
                        "choose)")
    buckets = make_buckets([m.node for m in dense], sizes, fusion_bytes)
    if horovod:
        decision = horovod_sync(len(groups), total, requested=sync,
                                backward_seconds=0.6 * base.predicted_step_seconds)
    else:
        loads = shard_loads(groups, buckets)
        decision = choose_sync(groups, cluster, total,
                               backward_seconds=0.6 * base.predicted_step_seconds,
                               requested=sync,
                               ps_busiest_bytes=max(loads.values()) if loads else 0,
                               buckets=max(1, len(buckets)))
    sync_plan = gradient_sync_plan(decision, replicas=len(groups), fusion_bytes=fusion_bytes,
                                   backend=backend)
    sparse = [m for m in captured.gradients if m.sparse]
    if sparse:
        gathered = sum(_mark_bytes(nodes[m.node][1]) for m in sparse) * len(groups)
        densified = sum(_prod(m.dense_shape) * 4 for m in sparse)
        sync_plan = dataclasses.replace(sync_plan, reason=sync_plan.reason + (
            f"; sparse: {len(sparse)} IndexedSlices gradient(s) all-gathered "
            f"({gathered:,} bytes per replica) instead of densified ({densified:,} bytes)"))
    # every replica loads its devices as replica 0 loads the first group (under Horovod each
    # process has the cluster's devices to itself: its usage is replica 0's)
    usage = base.usage if horovod else tuple(
        dataclasses.replace(u, device=dict(zip(groups[0], g))[u.device])
        for g in groups for u in base.usage if u.device in groups[0])
    return dataclasses.replace(
        base, cluster=cluster.without_runtime(), replicas=groups, sync=sync_plan, usage=usage,
        buckets=buckets)


def replica_total(cluster: Cluster, replicas: int | str, backend: str = "tf") -> int:
    """The replicas ``data_parallel=replicas`` runs now: equal groups of the cluster's devices,
    or with the "horovod" backend the Horovod processes (an int must equal their number)."""
    if backend == "horovod":
        from tfplace.runtime.horovod import processes
        return processes(replicas)
    from tfplace.replicas import replica_count
    return replica_count(cluster, replicas)


def horovod_groups(cluster: Cluster, replicas: int | str) -> tuple[tuple[str, ...], ...]:
    """Horovod runs one replica per process, each on all of ``cluster`` (its own devices);
    ``"auto"`` asks the running Horovod for its process count."""
    if replicas == "auto":
        from tfplace.runtime.horovod import processes
        replicas = processes("auto")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise PlanError(f"data_parallel={replicas!r} is not a replica count; with "
                        "sync_backend='horovod' pass the number of Horovod processes or 'auto'")
    return (cluster.names,) * replicas


def horovod_sync(n: int, grad_bytes: int, *, requested: str,
                 backward_seconds: float) -> Any:
    """The SyncDecision for Horovod: its own ring all-reduce over Gloo between the processes,
    costed on a loopback link (the cluster describes one process's devices, not the links
    between processes)."""
    from tfplace.sync_cost import SyncDecision, ring_seconds
    if requested not in ("auto", "ring"):
        raise PlanError(f"sync={requested!r} with sync_backend='horovod': Horovod runs its own "
                        "ring all-reduce between the processes; use sync='ring' or 'auto', or "
                        f"sync_backend='tf' for {requested!r}")
    seconds = ring_seconds(n, grad_bytes, GRPC_BANDWIDTH, GRPC_LATENCY)
    reason = (f"ring (Horovod over Gloo, one process per replica): 2(N-1)/N·B/bw + 2(N-1)·lat "
              f"= {seconds * 1e3:.3g} ms  [N={n}, B={grad_bytes:,} bytes, "
              f"bw={GRPC_BANDWIDTH / 1e9:.2f} GB/s, lat={GRPC_LATENCY * 1e6:.3g} us between "
              "processes, assumed]")
    if requested == "ring":
        reason = f"ring (requested); {reason}"
    return SyncDecision(method="ring", costs=(("ring", seconds),), reason=reason,
                        exposed_seconds=max(0.0, seconds - backward_seconds))


def ps_targets(groups: Any, buckets: Any) -> list[str]:
    """The aggregation device of each bucket for "ps": the least-loaded replica leader next."""
    load = {g[0]: 0 for g in groups}
    targets = []
    for bucket in buckets:
        dev = min(load, key=lambda d: (load[d], d))
        load[dev] += bucket.bytes
        targets.append(dev)
    return targets


def shard_loads(groups: Any, buckets: Any) -> dict[str, int]:
    """Bytes each ps aggregation device receives per replica."""
    loads = {g[0]: 0 for g in groups}
    for dev, bucket in zip(ps_targets(groups, buckets), buckets):
        loads[dev] += bucket.bytes
    return loads


def replication_spec(plan: Plan, captured: Any, *, collectives: bool = False) -> Any:
    """What the replication pass needs, from the plan and the captured step's bindings.

    ``collectives``: TF's collective ops can span the plan's devices (always true in one
    process; across gRPC tasks only when configured at program start)."""
    from tfplace.rewrite.replicate import ReplicationSpec
    nodes = {n.name: n for n in captured.graph_def.node}
    shard = None
    batch: list[str] = []
    shared: list[str] = []
    for name in captured.inputs:
        dims = nodes[name].attr["shape"].shape.dim
        lead = int(dims[0].size) if dims else None
        if shard is None and lead:
            shard = lead
        (batch if lead is not None and lead == shard else shared).append(name)
    groups = plan.replicas
    targets: list[str] = []
    if plan.sync is not None and plan.sync.method == "ps":
        targets = ps_targets(groups, plan.buckets)
    return ReplicationSpec(
        groups=groups, batch_inputs=tuple(batch), shared_inputs=tuple(shared),
        outputs=captured.outputs, dense=tuple(b.gradients for b in plan.buckets),
        sparse=tuple((m.node, m.indices) for m in captured.gradients if m.sparse),
        method=_implementation(plan, collectives), ps_targets=tuple(targets))


def _implementation(plan: Plan, collectives: bool) -> str:
    """Which reducer realises the plan's sync: TF's CollectiveReduceV2 for a ring with the "tf"
    backend where collectives can run; placed dataflow nodes otherwise."""
    method = plan.sync.method if plan.sync else "ring"
    in_process = all(d.startswith("/job:localhost/") for g in plan.replicas for d in g)
    if method == "ring" and plan.sync is not None and plan.sync.backend == "tf" and \
            (in_process or collectives):
        return "collective"
    return method


def _prod(shape: Any) -> int:
    p = 1
    for d in shape:
        p *= int(d)
    return p
