"""Signatures of ops that move data without arithmetic: identities, shape queries, reshapes,
tiles, transposes, concatenation. Shapes decide which splits survive a reshape."""
from __future__ import annotations

import math

from tfplace.splits.layout import B, P, S
from tfplace.splits.signatures import OpContext, Shape, Signature, register

__all__ = ["PASSTHROUGH", "METADATA", "reshape_axis"]

PASSTHROUGH = frozenset(("Identity", "IdentityN", "StopGradient", "Snapshot", "PreventGradient",
                         "CheckNumerics", "EnsureShape"))
# Ops whose outputs describe the logical tensor, never its shard: the rewrite substitutes the
# full static shape, so any input layout gives B.
METADATA = frozenset(("Shape", "ShapeN", "Size", "Rank", "VariableShape",
                      "BroadcastGradientArgs"))


@register(*sorted(PASSTHROUGH))
def _passthrough(ctx: OpContext) -> list[Signature]:
    sigs = [Signature((B,) * ctx.n_in, (B,) * ctx.n_out)]
    if ctx.in_layouts is not None and len(ctx.in_layouts) == ctx.n_in:
        ins = ctx.in_layouts
        outs = ins[:ctx.n_out] if ctx.op != "EnsureShape" else ins[:1]
        sigs.insert(0, Signature(ins, outs, divided=any(x.is_split for x in ins)))
    return sigs


@register(*sorted(METADATA))
def _metadata(ctx: OpContext) -> list[Signature]:
    sigs = [Signature((B,) * ctx.n_in, (B,) * ctx.n_out)]
    if ctx.in_layouts is not None and len(ctx.in_layouts) == ctx.n_in \
            and any(lay != B for lay in ctx.in_layouts):
        sigs.insert(0, Signature(ctx.in_layouts, (B,) * ctx.n_out, local="full_shape"))
    return sigs


def reshape_axis(src: Shape, dst: Shape, axis: int) -> int | None:
    """The axis of `dst` that a split of `src` along `axis` becomes, or None.

    A row-major reshape keeps the dims before the split holding the same elements, so when
    those prefixes match, each device's 1/n of the remaining block is one contiguous 1/n of the
    output's remaining block: the split moves to the first output axis after the prefix (fits()
    still checks that both dims divide by n). Unknown (-1) dims must match exactly.
    """
    if axis >= len(src) or src[axis] == 1:
        return None
    head = src[:axis]
    for b, y in enumerate(dst):
        lead = dst[:b]
        if min(head + lead, default=0) >= 0:
            same = math.prod(head) == math.prod(lead)
        else:
            same = tuple(head) == tuple(lead)
        if same and y != 1:
            return b if (src[axis] < 0) == (y < 0) else None
    return None


@register("Reshape", "ExpandDims", "Squeeze")
def _reshape(ctx: OpContext) -> list[Signature]:
    src, dst = ctx.in_shape(), ctx.out_shape()
    rest = (B,) * (ctx.n_in - 1)
    sigs = []
    if src is not None and dst is not None:
        for a in range(len(src)):
            if src[a] == 1:
                continue
            b = reshape_axis(src, dst, a)
            if b is not None:
                sigs.append(Signature((S(a),) + rest, (S(b),), divided=True,
                                      local="shard_shape_args" if ctx.op == "Reshape" else ""))
    return sigs + [Signature((P,) + rest, (P,)), Signature((B,) + rest, (B,))]


@register("Tile", "BroadcastTo")
def _tile(ctx: OpContext) -> list[Signature]:
    """Axes the op leaves alone (same size, right-aligned) keep their split; copies are linear."""
    src, dst = ctx.in_shape(), ctx.out_shape()
    rest = (B,) * (ctx.n_in - 1)
    sigs = []
    if src is not None and dst is not None:
        off = len(dst) - len(src)
        for a, d in enumerate(src):
            if d > 1 and off >= 0 and dst[a + off] == d:
                sigs.append(Signature((S(a),) + rest, (S(a + off),), divided=True,
                                      local="shard_shape_args" if ctx.op == "BroadcastTo"
                                      else ""))
    return sigs + [Signature((P,) + rest, (P,)), Signature((B,) + rest, (B,))]


@register("Transpose")
def _transpose(ctx: OpContext) -> list[Signature]:
    perm = ctx.const(1)
    sigs = []
    if perm is not None:
        for out_axis, in_axis in enumerate(perm):
            sigs.append(Signature((S(in_axis), B), (S(out_axis),), divided=True))
    return sigs + [Signature((P, B), (P,)), Signature((B, B), (B,))]


@register("ConcatV2")
def _concat(ctx: OpContext) -> list[Signature]:
    """(values..., axis): every value split alike off the concat axis; all P stays P."""
    k = ctx.n_in - 1
    axis, rank = ctx.const(k), ctx.out_rank()
    sigs = []
    if axis is not None and len(axis) == 1 and rank is not None:
        cat = axis[0] % rank if rank else 0
        for a in range(rank):
            if a != cat:
                sigs.append(Signature((S(a),) * k + (B,), (S(a),), divided=True))
    return sigs + [Signature((P,) * k + (B,), (P,)), Signature((B,) * ctx.n_in, (B,))]
