"""Splits composed with data parallelism and with a pipeline: the split group of a replica or a
stage, and the rewrites that copy a split step over replicas or micro-batches.

    splits x data parallel: a 2-D mesh (replicas x split group)
      placed step (replica 0, on groups[0]) -> split pass over the split group
      -> replication: R copies, copy r on groups[r]; gradient buckets
           whole gradient marks       synced over all replicas (as without splits)
           split gradient marks       one bucket per shard k, synced over {groups[r][k]}: the
                                      replica axis of the mesh only
      -> the split boxing's collectives of copy r re-keyed to copy r's group

    splits within pipeline stages: stages on equal device groups, ops on each group's first
    device, the split pass over the group of each stage holding split variables (one pass per
    stage, Keras' gradient IdentityN split per gradient first: split_identity_n); M
    micro-batch copies on the same devices, shard k's gradient accumulated on shard k's
    device, each variable shard kept on the device the split pass gave it
"""
from __future__ import annotations

from typing import Any, Sequence

from tfplace.capture import Captured
from tfplace.errors import PlanError
from tfplace.plan import Plan

__all__ = ["split_devices", "split_identity_n", "stage_groups", "check_composition", "replicate_split",
           "pipeline_split"]


def split_devices(plan: Plan, variables: Sequence[Any] = (),
                  splits: Sequence[str] = ()) -> list[tuple[tuple[str, ...], list[str]]]:
    """The devices one copy of the split step may use, with the names in ``splits`` split
    there: replica 0's group with data parallelism, all of the cluster's devices alone; with a
    pipeline, one entry per stage that holds split ``variables``: the stage's group and its
    split variables (each stage's splits planned and applied on its own group)."""
    if plan.pipeline is not None:
        by_stage: dict[int, list[str]] = {}
        for name in splits:
            found = [plan.pipeline.stage_of(v.node) for v in variables
                     if name in (v.name, v.node)]
            by_stage.setdefault(found[0] if found else 0, []).append(name)
        out = []
        for stage, names in sorted(by_stage.items()):
            group = tuple(plan.pipeline.stages[stage].devices)
            if len(group) < 2:
                raise PlanError(f"splits within pipeline stage {stage}: the stage has "
                                f"{len(group)} device; plan the stages on device groups "
                                "(split_compose.stage_groups), as parallelize(splits=..., "
                                "pipeline_stages=K) does")
            out.append((group, names))
        return out
    group = tuple(plan.replicas[0]) if plan.num_replicas > 1 else tuple(plan.cluster.names)
    return [(group, list(splits))]


def split_identity_n(graph_def: Any) -> Any:
    """A copy of ``graph_def`` where each output of a Keras gradient IdentityN is an Identity
    of its own (rewrite/ps.py's helper; shape hints kept, the IdentityN dropped), so that the
    gradients of different pipeline stages' split variables meet in no shared op."""
    from tfplace.rewrite.ps import _split_identity_n
    gd = type(graph_def)()
    gd.CopyFrom(graph_def)
    multi = {n.name: n for n in gd.node if n.op == "IdentityN"}
    _split_identity_n(gd)
    for n in gd.node:
        head, _, tail = n.name.rpartition("/tfplace_part_")
        if n.op == "Identity" and head in multi:
            shapes = multi[head].attr["_output_shapes"].list.shape
            if len(shapes) > int(tail):
                n.attr["_output_shapes"].list.shape.add().CopyFrom(shapes[int(tail)])
    parts = {name: [f"^{name}/tfplace_part_{i}" for i, inp in enumerate(
        x for x in node.input if not x.startswith("^"))] for name, node in multi.items()}
    for n in gd.node:
        ctrl = [x for x in n.input if x.startswith("^") and x[1:] in multi]
        if ctrl:
            keep = [x for x in n.input if x not in ctrl]
            del n.input[:]
            n.input.extend(keep + [p for x in ctrl for p in parts[x[1:]]])
    keep_nodes = [n for n in gd.node if n.name not in multi]
    del gd.node[:]
    gd.node.extend(keep_nodes)
    return gd


def stage_groups(devices: Sequence[str], stages: Any) -> list[tuple[str, ...]]:
    """K groups of consecutive devices, one per pipeline stage, for splits within a stage;
    PlanError unless K divides the devices into groups of 2 or more."""
    n = len(devices)
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        raise PlanError(f"splits within pipeline stages need pipeline_stages=K, an int (got "
                        f"{stages!r}); e.g. pipeline_stages={max(1, n // 2)} on {n} devices")
    if n % stages or n // stages < 2:
        fits = [k for k in range(1, n + 1) if n % k == 0 and n // k >= 2]
        raise PlanError(f"splits within {stages} pipeline stages on {n} devices: each stage "
                        f"needs an equal group of 2 or more devices ({n} / {stages} = "
                        f"{n / stages:g}); use pipeline_stages in {fits}, or "
                        f"{2 * stages} devices")
    w = n // stages
    return [tuple(devices[i * w:(i + 1) * w]) for i in range(stages)]


def check_composition(plan: Plan, split_dims: Sequence[int]) -> None:
    """PlanError for a plan the split rewrite cannot compose with (every problem named)."""
    from tfplace.splits.mesh import check_mesh
    if plan.pipeline is not None:
        if plan.num_replicas > 1:
            raise PlanError("splits with pipeline stages and data_parallel together are not "
                            "supported; use splits with one of them")
        return
    if plan.num_replicas <= 1:
        return
    check_mesh(len(plan.cluster.names), plan.num_replicas, split_dims)
    if plan.sync is not None and plan.sync.method == "ps":
        raise PlanError("splits with sync='ps' are not supported (a parameter server would "
                        "hold whole variables); use sync='ring' or 'hierarchical'")
    if plan.sync is not None and plan.sync.backend == "horovod":
        raise PlanError("splits with sync_backend='horovod' are not supported; use "
                        "sync_backend='tf' (one process, or gRPC workers)")


def replicate_split(split_gd: Any, plan: Plan, captured: Captured, *,
                    collectives: bool = False) -> Any:
    """R copies of the split GraphDef ``split_gd`` (made by rewrite/splits.py from replica 0's
    placed step), gradients synced over the replica axis (see the module docstring)."""
    import dataclasses
    from tfplace.data_parallel import replication_spec
    from tfplace.rewrite import replicate
    if plan.splits is None:
        raise PlanError("replicate_split needs a plan with splits")
    spec = replication_spec(plan, captured, collectives=collectives)
    split_gd, sharded = _shard_marks(split_gd, plan, captured)
    split_sparse = [v for v, _i in spec.sparse if v in sharded]
    if split_sparse:
        raise PlanError(f"the IndexedSlices gradient of a split variable ({split_sparse[0]}) "
                        "cannot be synced per shard yet; with data_parallel split dense "
                        "variables only (not an Embedding table)")
    n = len(plan.splits.devices)
    buckets: list[tuple[str, ...]] = []
    targets: list[str] = []
    for i, bucket in enumerate(spec.dense):
        whole = tuple(m for m in bucket if m not in sharded)
        split = [m for m in bucket if m in sharded]
        parts = ([whole] if whole else []) + \
            [tuple(sharded[m][k] for m in split) for k in range(n) if split]
        buckets += parts
        targets += [spec.ps_targets[i]] * len(parts) if spec.ps_targets else []
    spec = dataclasses.replace(spec, dense=tuple(buckets), ps_targets=tuple(targets))
    out = replicate.apply(split_gd, spec)
    _rekey(out, plan.replicas, plan.splits.devices)
    return out


def pipeline_split(split_gd: Any, plan: Plan, captured: Captured) -> Any:
    """The pipeline pass over the split GraphDef: M micro-batch copies on the stages' groups;
    a split variable's shard k accumulates its own gradient shard on its own device."""
    import dataclasses
    from tfplace.pipeline_parallel import pipeline_spec
    from tfplace.rewrite import pipeline
    if plan.splits is None or plan.pipeline is None:
        raise PlanError("pipeline_split needs a plan with splits and a pipeline")
    spec = pipeline_spec(plan, captured)
    split_gd, sharded = _shard_marks(split_gd, plan, captured)
    if any(v in sharded for v, _i in spec.sparse):
        raise PlanError("the IndexedSlices gradient of a split variable cannot be accumulated "
                        "per shard yet; in a pipeline split dense variables only")
    buckets: list[tuple[str, ...]] = []
    targets: list[str] = []
    for bucket, target in zip(spec.dense, spec.ps_targets):
        for m in bucket:
            if m in sharded:
                buckets += [(name,) for name in sharded[m]]
                targets += list(plan.splits.part_of(m).devices)
            else:
                buckets.append((m,))
                targets.append(target)
    spec = dataclasses.replace(spec, dense=tuple(buckets), ps_targets=tuple(targets))
    out = pipeline.apply(split_gd, spec, plan.pipeline)
    _keep_shard_homes(split_gd, out)
    for part in plan.splits.parts or (plan.splits,):
        _rekey(out, spec.groups, part.devices)
    return out


def _keep_shard_homes(split_gd: Any, out: Any) -> None:
    """Each variable shard (and the ops using its resource) back on the device the split pass
    gave it: the pipeline pass homes a variable with its whole gradient's accumulation, which
    for a split variable whose gradient is made whole would put every shard on one device."""
    from tfplace.rewrite.splits import SHARD_INDEX
    home = {n.name: n.device for n in split_gd.node if SHARD_INDEX in n.attr}
    if not home:
        return
    by_name = {n.name: n for n in out.node}
    for n in out.node:
        base = n.name.partition("/")[2] if n.name.startswith("tfplace_r") else n.name
        if base in home:
            n.device = home[base]
    for n in out.node:                  # resource ops take the handle as their first input
        src = by_name.get(n.input[0].split(":")[0]) if n.input and \
            not n.input[0].startswith("^") else None
        if src is not None and SHARD_INDEX in src.attr:
            n.device = src.device


def _shard_marks(split_gd: Any, plan: Plan,
                 captured: Captured) -> tuple[Any, dict[str, list[str]]]:
    """A copy of ``split_gd`` where each shard of a gradient mark has the static shape of its
    shard (the replication pass flattens gradients by shape), and {gradient mark: its n shard
    names} for the marks the split pass sharded."""
    from tfplace.rewrite.splits import shard_name
    gd = type(split_gd)()
    gd.CopyFrom(split_gd)
    if plan.splits is None:
        return gd, {}
    nodes = {n.name: n for n in gd.node}
    orig = {n.name: n for n in captured.graph_def.node}
    marks = [m.node for m in captured.gradients] + \
        [m.indices for m in captured.gradients if m.sparse]
    out: dict[str, list[str]] = {}
    for mark in marks:
        if shard_name(0, mark) not in nodes:
            continue
        n = len(plan.splits.part_of(mark).devices)
        layout = plan.splits.op(mark).outputs[0]
        dims = orig[mark].attr["_output_shapes"].list.shape[0].dim
        shape = [int(d.size) for d in dims]
        if layout.is_split:
            shape[layout.axis] //= n
        out[mark] = [shard_name(k, mark) for k in range(n)]
        for name in out[mark]:
            attr = nodes[name].attr["_output_shapes"].list
            del attr.shape[:]
            dim = attr.shape.add()
            for d in shape:
                dim.dim.add().size = d
    return gd, out


def _rekey(gd: Any, groups: Sequence[Sequence[str]], split_group: Sequence[str]) -> None:
    """Copy r of each split all-reduce runs over copy r's split group (``split_group`` mapped
    from ``groups[0]`` to ``groups[r]``): a group key for those devices and an instance key of
    its own (copy 0 keeps the split pass's keys; micro-batch copies share the devices)."""
    from tfplace.rewrite.replicate import _stable_key, device_map
    from tfplace.rewrite.splits import SCOPE
    from tfplace.split_parallel import TOKEN_PREFIX
    nodes = {n.name: n for n in gd.node}
    for node in gd.node:
        head, _, rest = node.name.partition("/")
        if node.op != "CollectiveReduceV2" or not rest.startswith(SCOPE + "/") or \
                not head.startswith("tfplace_r") or head == "tfplace_r0":
            continue
        r = int(head[len("tfplace_r"):])
        devices = [device_map(groups, r).get(d, d) for d in split_group]
        if node.device not in devices:  # another part's group (splits in several stages)
            continue
        group = nodes[node.input[2].split(":")[0]].attr["value"].tensor
        instance = nodes[node.input[3].split(":")[0]].attr["value"].tensor
        group.int_val[0] = _stable_key(TOKEN_PREFIX, *devices)
        instance.int_val[0] = _stable_key(TOKEN_PREFIX, str(instance.int_val[0]), head)
