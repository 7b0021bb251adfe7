"""GraphDef -> GraphDef passes; each takes (graph_def, plan) and returns a new GraphDef."""
from __future__ import annotations

from typing import Any

from tfplace.rewrite import placement

__all__ = ["rewrite", "PASSES"]

PASSES = (placement.apply,)


def rewrite(graph_def: Any, plan: Any) -> Any:
    """Run every pass in order; the input is never mutated."""
    out = graph_def
    for apply in PASSES:
        out = apply(out, plan)
    return out
