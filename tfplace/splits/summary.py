"""The split plan as a fixed-width table: split ops with their layouts, boxing steps with bytes."""
from __future__ import annotations

from tfplace.splits.splitplan import SplitPlan

__all__ = ["summary_table"]


def _fmt(layouts: tuple) -> str:
    return "(" + ", ".join(map(str, layouts)) + ")"


def summary_table(plan: SplitPlan) -> str:
    """Deterministic text: the group, each split op, each boxing step, each split variable,
    and what splits="auto" weighed."""
    if plan.parts:                              # one plan per pipeline stage
        return "\n".join(summary_table(part) for part in plan.parts)
    auto = [f"  {a.reason:<6}  {a.describe()}" for a in plan.auto]
    if plan.is_empty and (plan.auto or not plan.devices):     # splits="auto" chose nothing
        why = ("none saves more than its boxing costs" if plan.auto
               else "no variable splits over the devices")
        return "\n".join([f'splits="auto": no split ({why})', *auto])
    lines = [f"splits on {len(plan.devices)} devices: {', '.join(plan.devices)}",
             f"split ops: {len(plan.ops)}"]
    if plan.ops:
        nw = max(len(o.name) for o in plan.ops)
        tw = max(len(o.op) for o in plan.ops)
        for o in plan.ops:
            local = f"  [{o.local}]" if o.local else ""
            lines.append(f"  {o.name:<{nw}}  {o.op:<{tw}}  {_fmt(o.inputs)} -> {_fmt(o.outputs)}"
                         + local)
    lines.append(f"boxing: {len(plan.boxing)} steps, {plan.boxing_bytes} bytes per device")
    if plan.boxing:
        nw = max(len(b.tensor) for b in plan.boxing)
        cw = max(len(b.collective) for b in plan.boxing)
        for b in plan.boxing:
            readers = ", ".join(c or "<output>" for c in b.consumers)
            lines.append(f"  {b.tensor:<{nw}}  {str(b.src):>4} -> {str(b.dst):<4}  "
                         f"{b.collective:<{cw}}  {b.bytes:>10} B  for {readers}")
    lines.append(f"split variables: {len(plan.variables)}")
    if plan.variables:
        vw = max(len(v.variable) for v in plan.variables)
        for v in plan.variables:
            shard = "x".join(map(str, v.shapes[0])) if v.shapes else "-"
            lines.append(f"  {v.variable:<{vw}}  {str(v.layout):<4}  shard {shard} "
                         f"on {len(v.devices)} devices")
    if auto:
        lines += ['splits="auto" weighed:', *auto]
    return "\n".join(lines)
