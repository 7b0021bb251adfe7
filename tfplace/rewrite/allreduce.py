"""All-reduce as dataflow: ring, parameter-server and hierarchical sync built from placed nodes.

Every function takes one flat gradient tensor per replica (``flats[r]`` on ``devices[r]``) and
returns one tensor per replica holding the MEAN over replicas. All replicas get the same bytes:
each chunk is summed once, on one device, and then only copied.

Ring (R = 4, chunk c starts at device c; '+' = AddV2 on that device, '=' = copy)::

    reduce-scatter: c0: d0 -> d1+ -> d2+ -> d3+ (mean)   all-gather: d3 = d0 = d1 = d2
                    c1: d1 -> d2+ -> d3+ -> d0+ (mean)               d0 = d1 = d2 = d3
    each step moves B/R bytes per device: 2(R-1)/R * B per device in all
"""
from __future__ import annotations

from typing import Callable, Sequence

from tfplace.rewrite.nodes import NodeBuilder

__all__ = ["ring", "central", "hierarchical", "collective", "REDUCERS", "chunk_sizes",
           "TOKEN_SCOPE"]


def chunk_sizes(n: int, parts: int) -> list[int]:
    """``n`` elements in ``parts`` near-equal chunks (the first ones one larger)."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def ring(b: NodeBuilder, flats: Sequence[str], devices: Sequence[str], n: int, dtype: int,
         scale: float) -> list[str]:
    r = len(flats)
    if r == 1:
        return [b.scale(flats[0], scale, dtype, devices[0])]
    sizes = chunk_sizes(n, r)
    live = [i for i, s in enumerate(sizes) if s > 0]
    chunks = [b.split(flats[d], [sizes[i] for i in live], dtype, devices[d]) for d in range(r)]
    final: dict[tuple[int, int], str] = {}          # (chunk, device) -> mean chunk there
    for k, c in enumerate(live):
        partial = chunks[c % r][k]
        for step in range(1, r):
            d = (c + step) % r
            partial = b.add("ring_add", "AddV2", [partial, chunks[d][k]], devices[d], T=dtype)
        last = (c + r - 1) % r
        partial = b.scale(partial, scale, dtype, devices[last])
        final[(k, last)] = partial
        for step in range(1, r):
            d = (last + step) % r
            partial = b.add("ring_copy", "Identity", [partial], devices[d], T=dtype)
            final[(k, d)] = partial
    return [b.concat([final[(k, d)] for k in range(len(live))], dtype, devices[d])
            for d in range(r)]


def central(b: NodeBuilder, flats: Sequence[str], devices: Sequence[str], n: int, dtype: int,
            scale: float, *, target: str | None = None) -> list[str]:
    """Parameter-server style: push to ``target`` (default the first device), average there,
    read the result back on every replica."""
    target = target or devices[0]
    total = flats[0] if len(flats) == 1 else b.add("ps_sum", "AddN", list(flats), target,
                                                  N=len(flats), T=dtype)
    mean = b.scale(total, scale, dtype, target)
    return [b.add("ps_read", "Identity", [mean], d, T=dtype) for d in devices]


def hierarchical(b: NodeBuilder, flats: Sequence[str], devices: Sequence[str], n: int,
                 dtype: int, scale: float) -> list[str]:
    """Sum within each task on its first replica device, ring-average across the task leaders
    (scaled by 1/R overall), then copy back to the task's other replicas."""
    tasks: dict[str, list[int]] = {}
    for i, d in enumerate(devices):
        tasks.setdefault(d.split("/device:")[0], []).append(i)
    groups = list(tasks.values())
    leaders, sums = [], []
    for g in groups:
        lead = devices[g[0]]
        leaders.append(lead)
        sums.append(flats[g[0]] if len(g) == 1 else
                    b.add("local_sum", "AddN", [flats[i] for i in g], lead, N=len(g), T=dtype))
    across = ring(b, sums, leaders, n, dtype, scale)
    out: list[str] = [""] * len(devices)
    for g, mean in zip(groups, across):
        for i in g:
            out[i] = mean if i == g[0] else b.add("local_copy", "Identity", [mean], devices[i],
                                                  T=dtype)
    return out


TOKEN_SCOPE = "tfplace_token"


def collective(b: NodeBuilder, flats: Sequence[str], devices: Sequence[str], n: int, dtype: int,
               scale: float, *, group_key: int, instance_key: int) -> list[str]:
    """TF's own CollectiveReduceV2 (ring implementation), one per replica, mean by Div.

    Each collective takes its device's ordering token (a resource placeholder the runtime binds
    to a variable on that device): without per-device tokens, automatic control dependencies
    chain all collectives of the function together and they wait on each other forever."""
    r = len(flats)
    if abs(scale * r - 1.0) > 1e-12:
        raise ValueError("collective all-reduce computes the mean over all replicas only")
    out = []
    for flat, dev in zip(flats, devices):
        token = f"{TOKEN_SCOPE}/{dev.strip('/').replace('/', '_').replace(':', '_')}"
        if token not in b._names:                       # one token per device, shared
            node = b.gd.node.add()
            node.name, node.op, node.device = token, "Placeholder", dev
            node.attr["dtype"].type = 20
            node.attr["shape"].shape.SetInParent()
            b._names.add(token)
        consts = [b.const_scalar(k, v, 3, dev) for k, v in
                  (("group_size", r), ("group_key", group_key), ("instance_key", instance_key))]
        name = b.add("collective", "CollectiveReduceV2", [flat, *consts, token], dev, T=dtype,
                     Nordering_token=1, max_subdivs_per_device=-1)
        node = b._node(name)
        node.attr["merge_op"].s = b"Add"
        node.attr["final_op"].s = b"Div"
        node.attr["communication_hint"].s = b"ring"
        node.attr["is_stateless"].b = False
        node.attr["timeout_seconds"].f = 0.0
        out.append(name)
    return out


REDUCERS: dict[str, Callable[..., list[str]]] = {
    "ring": ring, "ps": central, "hierarchical": hierarchical, "collective": collective}
