"""Variables that must share a layout: a variable and the optimizer slots its update reads.

An update op (assign, ResourceApply*) writes a value computed element-wise from same-shaped
variable reads; a slot read in that element-wise cone (Adam's m and v in the variable's update)
is tied to the variable, so splitting the variable splits its slots alike and the update stays
local. Found from the dataflow, not from slot names.
"""
from __future__ import annotations

from typing import Iterable

from tfplace.analysis import OpDag, split_input
from tfplace.splits.rules_pointwise import ELEMENTWISE_OPS
from tfplace.splits.rules_shape import PASSTHROUGH
from tfplace.splits.rules_state import APPLY_OPS, ASSIGN_OPS

__all__ = ["tied_variables"]

_CONE_OPS = ELEMENTWISE_OPS | PASSTHROUGH | {"AddN"}


def tied_variables(dag: OpDag, variable_nodes: Iterable[str]) -> list[tuple[str, ...]]:
    """Groups (sorted tuples, of 2 or more) of variable nodes whose layouts must agree."""
    nodes = set(variable_nodes)
    parent = {v: v for v in nodes}

    def find(v: str) -> str:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for node in dag.nodes:
        if node.op in APPLY_OPS:
            handles = [split_input(r)[0] for r in node.inputs]
            tied = [h for h in handles if h in nodes]
            for h in tied[1:]:
                union(tied[0], h)
        elif node.op in ASSIGN_OPS and len(node.inputs) >= 2:
            target = split_input(node.inputs[0])[0]
            if target in nodes:
                for other in _cone_reads(dag, node.inputs[1], nodes):
                    union(target, other)
    groups: dict[str, list[str]] = {}
    for v in sorted(nodes):
        groups.setdefault(find(v), []).append(v)
    return sorted(tuple(g) for g in groups.values() if len(g) > 1)


def _cone_reads(dag: OpDag, value: str, nodes: set[str]) -> set[str]:
    """Variables read, with the value's shape, in the element-wise cone of tensor `value`."""
    src, k = split_input(value)
    start = dag.node(src)
    shape = start.out_shapes[k] if k < len(start.out_shapes) else None
    found: set[str] = set()
    seen: set[str] = set()
    stack = [value]
    while stack:
        ref = stack.pop()
        name, k = split_input(ref)
        if ref in seen:
            continue
        seen.add(ref)
        node = dag.node(name)
        out = node.out_shapes[k] if k < len(node.out_shapes) else None
        if out != shape:
            continue
        if node.op == "ReadVariableOp" and node.inputs:
            handle = split_input(node.inputs[0])[0]
            if handle in nodes:
                found.add(handle)
        elif node.op == "IdentityN":
            stack.extend(node.inputs[k:k + 1])
        elif node.op in _CONE_OPS:
            stack.extend(node.inputs)
    return found
