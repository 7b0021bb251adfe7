"""The measured overlap of gradient sync with backward compute, from a step's Chrome trace
events (``tfplace.runtime.trace``), and the op kinds it is measured by."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["overlap_report", "format_overlap", "is_sync_op", "is_backward_op", "union", "length"]


def is_sync_op(name: str) -> bool:
    """By name only: a node of the replication pass's ``tfplace_sync/`` scope."""
    return "tfplace_sync/" in name


def is_backward_op(name: str) -> bool:
    return "gradient_tape/" in name and not is_sync_op(name)


def union(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (start, end) intervals merged where they overlap, sorted."""
    out: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _intersection(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    """Total length of the intersection of two sorted, disjoint interval lists."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def length(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length of disjoint intervals (``union``'s)."""
    return sum(e - s for s, e in intervals)


def _kind(event: Mapping[str, Any]) -> str | None:
    """The event's "kind" arg when the trace has one, else a guess from its name."""
    args = event.get("args") or {}
    if "kind" in args or "op" in args:
        return args.get("kind")
    name = str(event.get("name", ""))
    return "sync" if is_sync_op(name) else "backward" if is_backward_op(name) else None


def _spans(ops: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    return union([(e["ts"], e["ts"] + e["dur"]) for e in ops])


def overlap_report(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How much gradient sync ran while backward was still computing, measured from a trace.

    Per device with sync ops: ``sync_us``, the time any of its sync ops was in flight
    (asynchronous collectives count from launch to done, so waiting for a slower replica
    counts too), and ``overlap_us``, the part of it during which a backward op ran on ANY
    device; ``active_us``/``active_overlap_us`` are the same for the sync kernels' own
    execution only (launch-to-done spans left out). Backward counts only running kernels
    (a backward _Recv waiting for its tensor is not compute). Per step: the number of steps in which
    the first sync op started before the last backward op of that step ended."""
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    ops = [e for e in events if e.get("ph") == "X"]
    sync = [e for e in ops if _kind(e) == "sync"]
    back = [e for e in ops if _kind(e) == "backward"            # computing, not waiting
            and (e.get("args") or {}).get("phase") != "launch-to-done"]
    backward = _spans(back)
    per_device: dict[str, dict[str, float]] = {}
    for pid in sorted({e["pid"] for e in sync}):
        mine = [e for e in sync if e["pid"] == pid]
        active = [e for e in mine if (e.get("args") or {}).get("phase") != "launch-to-done"]
        spans, run = _spans(mine), _spans(active)
        per_device[names.get(pid, str(pid))] = {
            "sync_us": round(length(spans), 3),
            "overlap_us": round(_intersection(spans, backward), 3),
            "active_us": round(length(run), 3),
            "active_overlap_us": round(_intersection(run, backward), 3)}
    steps = sorted({s for e in ops if (s := (e.get("args") or {}).get("step")) is not None})
    early = 0
    for step in steps:
        first = min((e["ts"] for e in sync if e["args"].get("step") == step), default=None)
        last = max((e["ts"] + e["dur"] for e in back if e["args"].get("step") == step),
                   default=None)
        early += first is not None and last is not None and first < last
    return {"devices": per_device, "sync_ops": len(sync), "backward_ops": len(back),
            "backward_us": round(length(backward), 3), "steps": len(steps),
            "steps_sync_before_backward_end": early,
            "first_sync_us": min((e["ts"] for e in sync), default=None),
            "last_backward_end_us": max((end for _s, end in backward), default=None)}


def format_overlap(report: Mapping[str, Any]) -> str:
    """The overlap report as a few lines for the console."""
    lines = [f"overlap of gradient sync with backward ({report['steps']} steps, "
             f"{report['sync_ops']} sync / {report['backward_ops']} backward op runs, "
             f"backward busy {report['backward_us'] / 1e3:.3f} ms):"]
    if not report["devices"]:
        lines.append("  no gradient-sync ops ran in this process (the step is not data parallel, "
                     "or its replicas ran on gRPC workers, whose kernels are not profiled)")
    for device, d in report["devices"].items():
        lines.append(f"  {device}: sync in flight {d['sync_us'] / 1e3:.3f} ms, "
                     f"{d['overlap_us'] / 1e3:.3f} ms of it during backward; sync kernels "
                     f"running {d['active_us'] / 1e3:.3f} ms, "
                     f"{d['active_overlap_us'] / 1e3:.3f} ms during backward")
    if report["devices"]:
        lines.append(f"  steps where sync started before backward ended: "
                     f"{report['steps_sync_before_backward_end']} of {report['steps']}")
    return "\n".join(lines)
