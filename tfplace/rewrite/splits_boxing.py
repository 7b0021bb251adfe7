"""Boxing as placed dataflow: each conversion between two SBP layouts on a group of n devices.

A tensor on the group is a list of n tensor names, entry k on device k (for B every entry holds
the whole value, possibly the same name n times)::

    P -> B     all_reduce      AddN of the n partials on device 0, read by every device
                               (or CollectiveReduceV2, one per device, when collectives run)
    S(a) -> B  all_gather      ConcatV2 of the n shards along a, on device 0
    P -> S(a)  reduce_scatter  device m splits its partial along a; device k adds the k-th pieces
    S(i)->S(j) all_to_all      device m splits its shard along j; device k concats the k-th
                               pieces along i
    B -> S(a)  slice           device k splits the whole along a and keeps piece k
    B -> P     zeros           device 0 keeps the value, the others hold zeros
    S(a) -> P  pad_zeros       device k pads its shard with zeros to the full shape
"""
from __future__ import annotations

from typing import Callable, Sequence

from tfplace.errors import GraphError
from tfplace.rewrite.nodes import DT_INT32, NodeBuilder
from tfplace.splits.layout import Layout

__all__ = ["Boxer"]

Names = list[str]


class Boxer:
    """Builds conversions into ``b``'s GraphDef for tensors on ``devices``.

    ``collective``: when given, P -> B uses it (``collective(b, parts, devices, dtype)``
    returns one reduced name per device) instead of dataflow AddN."""

    def __init__(self, b: NodeBuilder, devices: Sequence[str],
                 collective: Callable[..., Names] | None = None) -> None:
        self.b, self.devices, self.n = b, tuple(devices), len(devices)
        self.collective = collective

    def convert(self, names: Names, src: Layout, dst: Layout, dtype: int,
                shape: Sequence[int] | None) -> Names:
        if src == dst:
            return list(names)
        if src.is_partial and dst.is_broadcast:
            return self.all_reduce(names, dtype)
        if src.is_split and dst.is_broadcast:
            return [self.gather(names, src.axis, dtype, self.devices[0])] * self.n
        if src.is_partial and dst.is_split:
            return self._scatter(names, dst.axis, dtype, reduce=True)
        if src.is_split and dst.is_split:
            return self._scatter(names, dst.axis, dtype, reduce=False, concat_axis=src.axis)
        if src.is_broadcast and dst.is_split:
            return [self.slice(names[k], dst.axis, k, dtype, self.devices[k])
                    for k in range(self.n)]
        if src.is_broadcast and dst.is_partial:
            return [names[0] if k == 0 else self.zeros(names[k], dtype, shape, self.devices[k])
                    for k in range(self.n)]
        if src.is_split and dst.is_partial:
            return [self.pad(names[k], src.axis, k, dtype, shape, self.devices[k])
                    for k in range(self.n)]
        raise GraphError(f"no conversion from {src} to {dst}")

    # -- the collectives ----------------------------------------------------------------------
    def all_reduce(self, parts: Names, dtype: int) -> Names:
        if self.collective is not None and self.n > 1:
            return self.collective(self.b, parts, self.devices, dtype)
        total = self.b.add("all_reduce", "AddN", list(parts), self.devices[0], N=len(parts),
                           T=dtype)
        return [total] * self.n

    def gather(self, shards: Names, axis: int, dtype: int, device: str) -> str:
        return self._concat("all_gather", shards, axis, dtype, device)

    def _scatter(self, names: Names, axis: int, dtype: int, *, reduce: bool,
                 concat_axis: int = 0) -> Names:
        b, n = self.b, self.n
        pieces = [self._split(names[m], axis, dtype, self.devices[m]) for m in range(n)]
        out = []
        for k in range(n):
            mine = [pieces[m][k] for m in range(n)]
            if reduce:
                out.append(b.add("reduce_scatter", "AddN", mine, self.devices[k], N=n, T=dtype))
            else:
                out.append(self._concat("all_to_all", mine, concat_axis, dtype, self.devices[k]))
        return out

    # -- local pieces -------------------------------------------------------------------------
    def slice(self, whole: str, axis: int, k: int, dtype: int, device: str) -> str:
        return self._split(whole, axis, dtype, device)[k]

    def zeros(self, like: str, dtype: int, shape: Sequence[int] | None, device: str) -> str:
        b = self.b
        if shape is None or any(d < 0 for d in shape):
            return b.add("zeros", "ZerosLike", [like], device, T=dtype)
        zero = b.const_scalar("zero", 0.0, dtype, device)
        name = b.add("zeros", "Fill", [b.const_ints("zeros_shape", list(shape), device), zero],
                     device, T=dtype)
        b._node(name).attr["index_type"].type = DT_INT32
        return name

    def pad(self, shard: str, axis: int, k: int, dtype: int, shape: Sequence[int] | None,
            device: str) -> str:
        if shape is None or shape[axis] < 0:
            raise GraphError(f"padding shard {shard!r} to a partial sum needs its static shape")
        size = shape[axis] // self.n
        pads = []
        for a in range(len(shape)):
            pads += [k * size, (self.n - 1 - k) * size] if a == axis else [0, 0]
        b = self.b
        paddings = b.const_ints("paddings", pads, device)
        node = b._node(paddings)
        t = node.attr["value"].tensor
        del t.tensor_shape.dim[:]
        t.tensor_shape.dim.add().size = len(shape)
        t.tensor_shape.dim.add().size = 2
        name = b.add("pad_zeros", "Pad", [shard, paddings], device, T=dtype)
        b._node(name).attr["Tpaddings"].type = DT_INT32
        return name

    def _split(self, x: str, axis: int, dtype: int, device: str) -> Names:
        b = self.b
        if self.n == 1:
            return [x]
        name = b.add("split", "Split", [self._axis(axis, device), x], device, num_split=self.n,
                     T=dtype)
        return [f"{name}:{k}" for k in range(self.n)]

    def _concat(self, base: str, xs: Names, axis: int, dtype: int, device: str) -> str:
        b = self.b
        if len(xs) == 1:
            return b.add(base, "Identity", [xs[0]], device, T=dtype)
        return b.add(base, "ConcatV2", [*xs, self._axis(axis, device)], device, N=len(xs),
                     T=dtype, Tidx=DT_INT32)

    def _axis(self, axis: int, device: str) -> str:
        return self.b.const_scalar("axis", axis, DT_INT32, device)

