"""Signatures of variable reads and updates, embedding lookups and their segment-sum gradients.

A variable's resource handle carries the variable's layout and never moves: reads return that
layout, and updates (assigns, ResourceApply*) need their value in it, so an optimizer step on a
split variable is local when its gradient and slots come out split the same way.
"""
from __future__ import annotations

from tfplace.costs import OPTIMIZER_UPDATES
from tfplace.splits.layout import B, P, Layout, S
from tfplace.splits.signatures import OpContext, Signature, register

__all__ = ["variable_layouts", "APPLY_OPS", "ASSIGN_OPS", "SCATTER_OPS"]

ASSIGN_OPS = ("AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp")
APPLY_OPS = tuple(sorted(op for op in OPTIMIZER_UPDATES if op.startswith("ResourceApply")))
SCATTER_OPS = ("ResourceScatterAdd", "ResourceScatterSub", "ResourceScatterUpdate",
               "ResourceScatterMul", "ResourceScatterDiv", "ResourceScatterMin",
               "ResourceScatterMax")


def variable_layouts(rank: int | None) -> list[Layout]:
    """The layouts a variable may take: each axis split, or whole on every device."""
    return [S(a) for a in range(rank or 0)] + [B]


@register("ReadVariableOp")
def _read(ctx: OpContext) -> list[Signature]:
    return [Signature((lay,), (lay,)) for lay in variable_layouts(ctx.out_rank())]


@register(*ASSIGN_OPS)
def _assign(ctx: OpContext) -> list[Signature]:
    return [Signature((lay, lay), (), divided=lay.is_split)
            for lay in variable_layouts(ctx.rank(1))]


@register(*APPLY_OPS)
def _apply(ctx: OpContext) -> list[Signature]:
    """ResourceApply*(var, slots..., scalars..., grad): handles, slots and grad share a layout."""
    ranks = [ctx.rank(i) for i in range(ctx.n_in)]
    rank = max((r for i, r in enumerate(ranks) if r is not None and not ctx.is_resource(i)),
               default=None)
    sigs = []
    for lay in variable_layouts(rank):
        ins = tuple(lay if ctx.is_resource(i) or (ranks[i] or 0) >= 1 else B
                    for i in range(ctx.n_in))
        sigs.append(Signature(ins, (), divided=lay.is_split))
    return sigs


def _gather(ctx: OpContext, extra: tuple[Layout, ...], resource: bool) -> list[Signature]:
    """params[indices] on axis 0: a row split gives P (each device looks up the ids in its row
    range and zero-fills the rest), a column split stays split, split ids split the result."""
    r_params = ctx.out_rank()
    r_idx = ctx.rank(1)
    sigs = [Signature((S(0), B) + extra, (P,), divided=True, local="masked_lookup")]
    if r_params is not None and r_idx is not None:
        for a in range(1, r_params - r_idx + 1):
            sigs.append(Signature((S(a), B) + extra, (S(a - 1 + r_idx),), divided=True))
        for k in range(r_idx):
            sigs.append(Signature((B, S(k)) + extra, (S(k),), divided=True))
    if not resource:
        sigs.append(Signature((P, B) + extra, (P,)))
    return sigs + [Signature((B, B) + extra, (B,))]


@register("GatherV2")
def _gather_v2(ctx: OpContext) -> list[Signature]:
    if ctx.const(2) != (0,) or int(ctx.attrs.get("batch_dims", 0) or 0) != 0:
        return [Signature((B, B, B), (B,))]
    return _gather(ctx, (B,), resource=False)


@register("ResourceGather")
def _resource_gather(ctx: OpContext) -> list[Signature]:
    if int(ctx.attrs.get("batch_dims", 0) or 0) != 0:
        return [Signature((B, B), (B,))]
    return _gather(ctx, (), resource=True)


@register("UnsortedSegmentSum")
def _segment_sum(ctx: OpContext) -> list[Signature]:
    """(data, ids, num) -> [num, ...]: the embedding gradient. Feature splits of data stay split;
    splitting the entries (data and ids alike) leaves partial sums; with all inputs whole, a
    device may sum only the segments of its row range (S(0), masked)."""
    rd, ri = ctx.rank(0), ctx.rank(1)
    sigs = []
    if rd is not None and ri is not None:
        for j in range(rd - ri):
            sigs.append(Signature((S(ri + j), B, B), (S(1 + j),), divided=True))
        for a in range(ri):
            sigs.append(Signature((S(a), S(a), B), (P,), divided=True))
    return sigs + [Signature((P, B, B), (P,)), Signature((B, B, B), (B,)),
                   Signature((B, B, B), (S(0),), divided=True, local="masked_segments")]


@register(*SCATTER_OPS)
def _scatter(ctx: OpContext) -> list[Signature]:
    """(var, indices, updates): sparse (IndexedSlices) updates of a table. Row-split, each device
    applies the rows in its range; a split of the row's other axes splits the updates alike."""
    r_idx, r_upd = ctx.rank(1), ctx.rank(2)
    sigs = [Signature((S(0), B, B), (), divided=True, local="masked_segments")]
    if r_idx is not None and r_upd is not None:
        for a in range(1, r_upd - r_idx + 1):
            sigs.append(Signature((S(a), B, S(r_idx + a - 1)), (), divided=True))
    return sigs + [Signature((B, B, B), ())]
