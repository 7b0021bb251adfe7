"""Plans on disk (.pbtxt text, anything else binary) and the human-readable plan summary table."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tfplace.errors import PlanError

if TYPE_CHECKING:
    from tfplace.pipeline.value import PipelinePlan
    from tfplace.plan import GradientSyncPlan, Plan

__all__ = ["save_plan", "load_plan", "summary_table", "pipeline_lines", "is_text_path"]

MIB = 2**20
TOP_CUT_EDGES = 5


def is_text_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix == ".pbtxt"


def save_plan(plan: "Plan", path: str | os.PathLike[str]) -> None:
    """Write the plan: protobuf text format for `.pbtxt`, deterministic binary otherwise."""
    from google.protobuf import text_format

    data = (text_format.MessageToString(plan.to_proto()).encode() if is_text_path(path)
            else plan.to_bytes())
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise PlanError(f"cannot write plan to {os.fspath(path)!r}: {e.strerror or e}") from None


def load_plan(path: str | os.PathLike[str]) -> "Plan":
    """Read a plan written by save_plan (or `tfplace plan --out`); PlanError names the path."""
    from google.protobuf import message, text_format

    from tfplace._pb import plan_pb2
    from tfplace.plan import Plan

    where = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PlanError(f"plan file {where!r} does not exist; create it with "
                        f"`tfplace plan SOURCE --cluster FILE --out {where}`") from None
    except OSError as e:
        raise PlanError(f"cannot read plan file {where!r}: {e.strerror or e}") from None
    proto = plan_pb2.Plan()
    try:
        if is_text_path(path):
            text_format.Parse(data.decode("utf-8"), proto)
        else:
            proto.ParseFromString(data)
    except (text_format.ParseError, message.DecodeError, UnicodeDecodeError) as e:
        kind = "text (.pbtxt)" if is_text_path(path) else "binary"
        raise PlanError(f"plan file {where!r} is not a valid {kind} tfplace plan ({e}); "
                        "re-create it with `tfplace plan ... --out`") from None
    try:
        return Plan.from_proto(proto)
    except PlanError as e:
        raise PlanError(f"{where}: {e}") from None


def _mib(nbytes: float) -> str:
    return f"{nbytes / MIB:.2f}"


def _human(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", MIB), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} B"


def summary_table(plan: "Plan") -> str:
    """A fixed-width, deterministic summary: per-device load, the heaviest cut edges, variables."""
    usage = {u.device: u for u in plan.usage}
    op_counts: dict[str, int] = {}
    for o in plan.ops:
        op_counts[o.device] = op_counts.get(o.device, 0) + 1
    names = list(plan.cluster.names)
    names += sorted(({o.device for o in plan.ops} | set(usage)) - set(names))
    capacity = {d.name: d.memory for d in plan.cluster.devices}

    lines = [f"tfplace plan: placer={plan.placer}  devices={len(names)} "
             f"({len(plan.devices_used)} used)  predicted step={plan.predicted_step_seconds * 1e3:.3f} ms"
             f"  cut={_human(plan.cut_bytes)}"]
    width = max([len("device")] + [len(n) for n in names])
    cols = ("#ops", "GFLOPs", "param MiB", "peak MiB", "cap MiB", "used %", "busy ms")
    lines.append(f"{'device':<{width}}  " + "  ".join(f"{c:>9}" for c in cols))
    lines.append("-" * len(lines[-1]))
    for name in names:
        u = usage.get(name)
        ops = u.ops if u else op_counts.get(name, 0)
        cap = u.capacity_bytes if u and u.capacity_bytes else capacity.get(name, 0)
        peak = u.peak_bytes if u else 0
        used = f"{100.0 * peak / cap:.1f}" if cap else "-"
        cells = (str(ops), f"{(u.flops if u else 0.0) / 1e9:.3f}",
                 _mib(u.param_bytes if u else 0), _mib(peak), _mib(cap), used,
                 f"{(u.busy_seconds if u else 0.0) * 1e3:.3f}")
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:>9}" for c in cells))

    lines.append("")
    lines.append(f"cut edges: {len(plan.cut_edges)} ({_human(plan.cut_bytes)} per step)"
                 + (f"; top {TOP_CUT_EDGES} by bytes:" if len(plan.cut_edges) > TOP_CUT_EDGES
                    else ":" if plan.cut_edges else ""))
    top = sorted(plan.cut_edges, key=lambda e: (-e.bytes, e.tensor, e.src_device, e.dst_device))
    tw = max([len(e.tensor) for e in top[:TOP_CUT_EDGES]] + [0])
    for e in top[:TOP_CUT_EDGES]:
        lines.append(f"  {e.tensor:<{tw}}  {e.src_device} -> {e.dst_device}  {_human(e.bytes):>10}")

    lines.append("")
    lines.append(f"variables: {len(plan.variables)}")
    per_device: dict[str, list[int]] = {}
    for v in plan.variables:
        per_device.setdefault(v.device, []).append(v.bytes)
    order = [n for n in names if n in per_device] + sorted(set(per_device) - set(names))
    for name in order:
        sizes = per_device[name]
        lines.append(f"  {name:<{width}}  {len(sizes):>5} vars  {_mib(sum(sizes)):>9} MiB")
    if plan.sync is not None:
        lines += [""] + _data_parallel_lines(plan, plan.sync)
    if plan.pipeline is not None:
        lines += [""] + pipeline_lines(plan.pipeline)
    if plan.splits is not None:
        from tfplace.splits.summary import summary_table as splits_table
        lines += ["", splits_table(plan.splits)]
        if plan.num_replicas > 1:
            from tfplace.splits.mesh import mesh_lines
            lines += mesh_lines(plan.replicas, plan.splits.devices)
        if plan.pipeline is not None:
            stages = [str(st.index) for st in plan.pipeline.stages
                      for part in (plan.splits.parts or (plan.splits,))
                      if set(part.devices) <= set(st.devices)]
            lines.append(f"splits inside pipeline stage{'s' if len(stages) > 1 else ''} "
                         f"{', '.join(stages) or '?'} of {plan.pipeline.num_stages} (each "
                         "micro-batch's shard gradients accumulate on their own devices)")
    return "\n".join(lines)


def _data_parallel_lines(plan: "Plan", sync: "GradientSyncPlan") -> list[str]:
    """Replicas, the sync method with the cost figures that chose it, and the gradient buckets."""
    lines = [f"data parallel: {plan.num_replicas} replicas"]
    if plan.pipeline is not None:                 # each replica a whole pipeline
        k = plan.pipeline.num_stages
        lines = [f"data parallel x pipeline: {plan.num_replicas} replicas x {k} stages "
                 f"({plan.num_replicas * k} devices; each stage's gradients synced across "
                 "its replicas)"]
    lines += [f"  replica {i}: {', '.join(devices)}" for i, devices in enumerate(plan.replicas)]
    lines.append(f"sync: {sync.method} (backend {sync.backend}, {sync.replicas} replicas)  "
                 f"fusion={_human(sync.fusion_bytes)}  exposed={sync.exposed_seconds * 1e3:.3f} ms")
    lines.append(f"  why: {sync.reason}")
    if sync.costs:
        lines.append("  predicted: " + "  ".join(f"{m}={c * 1e3:.3f} ms" for m, c in sync.costs))
    total = sum(b.bytes for b in plan.buckets)
    largest = max((b.bytes for b in plan.buckets), default=0)
    lines.append(f"buckets: {len(plan.buckets)} ({_human(total)} total, largest {_human(largest)})")
    return lines


def _units(names: tuple[str, ...]) -> str:
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]} .. {names[-1]} ({len(names)})"


def pipeline_lines(pipe: "PipelinePlan") -> list[str]:
    """The stages table, the queues table and the schedule's stage x clock grid."""
    batch = f" of a global batch of {pipe.global_batch}" if pipe.global_batch else ""
    lines = [f"pipeline: {pipe.num_stages} stages, schedule {pipe.schedule}, "
             f"{pipe.micro_batches} micro-batches{batch}, predicted step "
             f"{pipe.predicted_step_seconds * 1e3:.3f} ms"]
    devs = [",".join(s.devices) for s in pipe.stages]
    units = [_units(s.units) for s in pipe.stages]
    dw = max([len("devices")] + [len(d) for d in devs])
    uw = max([len("units")] + [len(u) for u in units])
    cols = ("#ops", "GFLOPs", "param MiB", "peak MiB", "stash", "ms/micro")
    lines.append(f"{'stage':<5}  {'devices':<{dw}}  {'units':<{uw}}  "
                 + "  ".join(f"{c:>9}" for c in cols))
    lines.append("-" * len(lines[-1]))
    for s, d, u in zip(pipe.stages, devs, units):
        cells = (str(len(s.ops)), f"{s.flops / 1e9:.3f}", _mib(s.param_bytes), _mib(s.peak_bytes),
                 str(s.stash), f"{s.seconds * 1e3:.3f}")
        lines.append(f"{'s' + str(s.index):<5}  {d:<{dw}}  {u:<{uw}}  "
                     + "  ".join(f"{c:>9}" for c in cells))
    lines.append(f"queues: {len(pipe.queues)}")
    for q in pipe.queues:
        lines.append(f"  s{q.src} -> s{q.dst}  {q.direction:<8}  capacity {q.capacity:>2}  "
                     f"item {_human(q.item_bytes):>10}  peak {q.peak}")
    lines.append("schedule:")
    lines += ["  " + row for row in pipe.grid().splitlines()]
    return lines
