"""Per-device memory of a split plan: shards where they live, split activations on every device.

The replay of tfplace.memory.MemoryTracker, with a tensor living on a set of devices:

    whole op               its outputs on the device the placement gave it, full size
    split op (S or P)      a copy on every device of the group; an S output holds 1/n of the
                           bytes on each, a P or B output all of them
    boxed tensor           the conversion's result (S: 1/n, B: all) on every group device,
                           live as long as the tensor it converts
    split variable         each shard device holds its share of the variable's bytes; the
                           optimizer slots tied to it are split variables too

A tensor is freed on all its devices once its last consumer is placed; peak = params + the
peak of live activations, as for an unsplit plan.
"""
from __future__ import annotations

import math
from typing import Mapping

from tfplace.analysis import OpDag, split_input
from tfplace.cluster import Cluster
from tfplace.memory import MemoryTracker
from tfplace.splits.layout import B
from tfplace.splits.splitplan import SplitPlan

__all__ = ["split_peaks", "shard_params"]


def split_peaks(dag: OpDag, placement: Mapping[str, str], cluster: Cluster,
                plan: SplitPlan) -> dict[str, tuple[int, int]]:
    """Device name -> (param bytes, peak bytes) of ``placement`` with ``plan``'s splits."""
    base = MemoryTracker(dag, cluster)              # activation sizes and consumer counts
    names = cluster.names
    pos = {n: i for i, n in enumerate(names)}
    group = tuple(pos[d] for d in plan.devices)
    ways = max(len(group), 1)
    split_ops = {o.name: o for o in plan.ops
                 if o.local or any(lay != B for lay in o.inputs + o.outputs)}
    shards = {v.node: v for v in plan.variables}
    params = [0] * len(names)
    for dev, nbytes in shard_params(dag, plan).items():
        params[pos[dev]] += nbytes
    boxed: dict[tuple[str, int], int] = {}
    for b in plan.boxing:
        node, k = split_input(b.tensor)
        per = b.tensor_bytes // ways if b.dst.is_split else b.tensor_bytes
        boxed[(node, k)] = max(boxed.get((node, k), 0), per)

    live = [0] * len(names)
    peak = [0] * len(names)
    # per tensor (node index, output): {device index: bytes}
    held: list[list[dict[int, int]]] = [[] for _ in dag.nodes]
    pending = base.pending
    for i, n in enumerate(dag.nodes):
        if n.param_bytes and n.name not in shards:
            params[pos[placement[n.name]]] += n.param_bytes
        op = split_ops.get(n.name)
        outs: list[dict[int, int]] = []
        for k, nbytes in enumerate(base.act[i]):
            if op is not None:
                lay = op.outputs[k] if k < len(op.outputs) else B
                per = nbytes // ways if lay.is_split else nbytes
                where = {d: per for d in group}
            else:
                where = {pos[placement[n.name]]: nbytes}
            extra = boxed.get((n.name, k), 0)
            if extra and nbytes:
                for d in group:
                    where[d] = where.get(d, 0) + extra
            outs.append(where)
        held[i] = outs
        for where in outs:
            for d, nb in where.items():
                live[d] += nb
        for d in {d for where in outs for d in where}:
            peak[d] = max(peak[d], live[d])
        for j, k in base.in_tensors[i]:
            pending[j][k] -= 1
            if pending[j][k] == 0 and held[j]:
                _free(held[j][k], live)
        for k, left in enumerate(pending[i]):
            if left == 0 and k < len(outs):
                _free(outs[k], live)
    return {name: (params[d], params[d] + peak[d]) for d, name in enumerate(names)}


def shard_params(dag: OpDag, plan: SplitPlan) -> dict[str, int]:
    """Device name -> bytes of the split variables' shards it holds."""
    out: dict[str, int] = {}
    for v in plan.variables:
        nbytes = dag.node(v.node).param_bytes
        sizes = [math.prod(max(x, 1) for x in shape) for shape in v.shapes]
        for d, size in zip(v.devices, sizes):      # the shards partition the variable
            out[d] = out.get(d, 0) + nbytes * size // max(sum(sizes), 1)
    return out


def _free(where: dict[int, int], live: list[int]) -> None:
    for d, nb in where.items():
        live[d] -= nb
    where.clear()
