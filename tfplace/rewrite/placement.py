"""The placement pass: every node gets its planned device; nothing else changes."""
from __future__ import annotations

from typing import Any

from tfplace.errors import PlanError, bullets

__all__ = ["apply"]


def apply(graph_def: Any, plan: Any) -> Any:
    """A copy of ``graph_def`` with ``node.device`` set from ``plan`` (input untouched)."""
    placement = plan.placement()
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    names = {n.name for n in out.node}
    unplanned = sorted(names - placement.keys())
    stale = sorted(placement.keys() - names)
    if unplanned or stale:
        problems = []
        if unplanned:
            problems.append(f"{len(unplanned)} graph nodes have no device in the plan "
                            f"(first: {unplanned[:3]})")
        if stale:
            problems.append(f"{len(stale)} planned nodes are not in the graph "
                            f"(first: {stale[:3]})")
        raise PlanError(bullets("the plan does not match this graph; re-plan it "
                                "(tfplace plan SOURCE --out plan.pbtxt):", problems))
    for node in out.node:
        node.device = placement[node.name]
    return out
