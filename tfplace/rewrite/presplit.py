"""Per-replica inputs: the replication pass's global-batch Split replaced by one placeholder per
replica, for a batch that arrives already split (each replica's share made on its own device,
``ParallelFunction.prefetch``), so that no share passes through the calling process.

    x (global) -> Split -> tfplace_r{r}/x (Identity)   becomes   tfplace_r{r}/x (Placeholder)

The replica's placeholder keeps the device the replication pass gave its Identity and takes the
per-replica shape; the Split, its axis and the global placeholder go. Inputs every replica reads
whole (``shared``, no Split) stay as they are.
"""
from __future__ import annotations

from typing import Any, Sequence

from tfplace.errors import GraphError

__all__ = ["apply", "split_of", "SPLIT_SCOPE"]

SPLIT_SCOPE = "tfplace_sync/split_"          # replicate.apply's Split of input x: split_{x}


def split_of(graph_def: Any, name: str) -> Any:
    """The Split node the replication pass made for input ``name``, or None (a shared input)."""
    for n in graph_def.node:
        if n.name == SPLIT_SCOPE + name and n.op == "Split":
            return n
    return None


def apply(graph_def: Any, inputs: Sequence[str]) -> tuple[Any, tuple[tuple[str, ...], ...]]:
    """A new GraphDef taking each split input of ``inputs`` (the captured step's argument
    placeholders) as one placeholder per replica, and, per input in order, the placeholder
    names it now takes: the replicas' in replica order, or the input's own for a shared one.
    ``graph_def`` is not modified. A GraphError when no input is split (nothing to feed per
    replica)."""
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    nodes = {n.name: n for n in out.node}
    names: list[tuple[str, ...]] = []
    drop: set[str] = set()
    for name in inputs:
        split = split_of(out, name)
        if split is None:
            names.append((name,))
            continue
        count = int(split.attr["num_split"].i)
        glob = nodes[name].attr["shape"].shape
        per: list[str] = []
        for r in range(count):
            node = nodes.get(f"tfplace_r{r}/{name}")
            reads = list(node.input[:1]) if node is not None else []
            if node is None or node.op != "Identity" or not (
                    reads == [f"{split.name}:{r}"] or (r == 0 and reads == [split.name])):
                raise GraphError(f"replica {r}'s input {name!r} does not read share {r} of "
                                 f"{split.name!r}; the graph is not the replication pass's")
            dtype = node.attr["T"].type
            for key in list(node.attr):
                del node.attr[key]
            node.op = "Placeholder"
            del node.input[:]
            node.attr["dtype"].type = dtype
            shape = node.attr["shape"].shape
            shape.CopyFrom(glob)
            if not shape.unknown_rank and shape.dim and shape.dim[0].size > 0:
                shape.dim[0].size //= count
            per.append(node.name)
        names.append(tuple(per))
        drop |= {split.name, name}
        axis = split.input[0].split(":")[0]
        if sum(1 for n in out.node for i in n.input if i.lstrip("^").split(":")[0] == axis) == 1:
            drop.add(axis)
    if not drop:
        raise GraphError("no input of this step is split across replicas: there is nothing to "
                         "feed per replica")
    kept = [n for n in out.node if n.name not in drop]
    for n in kept:
        if any(i.lstrip("^").split(":")[0] in drop for i in n.input):
            raise GraphError(f"node {n.name!r} reads a global input the per-replica graph drops")
    del out.node[:]
    out.node.extend(kept)
    return out, tuple(names)
