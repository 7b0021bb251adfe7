"""Colocation groups: nodes that must share a device (a variable and its ops, TF `_class` hints)."""
from __future__ import annotations

from tfplace.analysis import DT_RESOURCE, OpDag

__all__ = ["colocation_groups", "group_of"]


def _find(parent: list[int], i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:                      # path compression
        parent[i], i = root, parent[i]
    return root


def _union(parent: list[int], a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        # The smaller index becomes the root so roots are deterministic.
        if ra < rb:
            parent[rb] = ra
        else:
            parent[ra] = rb


def colocation_groups(dag: OpDag) -> list[list[int]]:
    """Groups of node indices (each sorted), ordered by their first node's topological index.

    A node reading a DT_RESOURCE tensor joins the tensor's producer, so a variable stays with
    its reads, assignments and optimizer updates; `_class: loc:@x` joins x (when x exists).
    """
    parent = list(range(len(dag.nodes)))
    index = dag.index
    nodes = dag.nodes
    makes_handles = [DT_RESOURCE in n.out_dtypes for n in nodes]
    for i, ins in enumerate(dag.in_tensors):
        for j, k in ins:
            if makes_handles[j]:
                dt = nodes[j].out_dtypes
                if k < len(dt) and dt[k] == DT_RESOURCE:
                    _union(parent, i, j)
    for i, n in enumerate(nodes):
        for other in n.colocate_with:
            j2 = index.get(other)
            if j2 is not None:
                _union(parent, i, j2)
    groups: dict[int, list[int]] = {}
    for i in range(len(nodes)):
        r = parent[i]
        if r != i:
            r = _find(parent, i)
        if r in groups:
            groups[r].append(i)
        else:
            groups[r] = [i]
    return [groups[r] for r in sorted(groups)]


def group_of(groups: list[list[int]], size: int) -> list[int]:
    """For each node index, the position of its group in `groups`."""
    where = [0] * size
    for g, members in enumerate(groups):
        for i in members:
            where[i] = g
    return where
