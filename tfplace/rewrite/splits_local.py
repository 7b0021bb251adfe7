"""The per-shard work a split op needs beyond running on its shards (signatures.LOCAL_KINDS).

Each rewrite edits shard k's NodeDef in place (and may add nodes); the shard keeps its name so
that consumers find it:

    shard_shape_args  Reshape/BroadcastTo/conv-gradient shape inputs -> the shard's shape
    full_shape        Shape/Size/Rank of a split tensor -> a constant of the logical value
    global_count      Mean over a split axis -> local mean / n (partial sums of the mean)
    masked_lookup     gather rows of a row-split table: ids - first row, zero rows outside
    masked_segments   segment sum / scatter-add into a row-split table: ids - first row,
                      entries outside dropped
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from tfplace.errors import GraphError
from tfplace.rewrite.nodes import DT_FLOAT, DT_INT32, DT_INT64, NodeBuilder
from tfplace.splits.splitplan import SplitOp

__all__ = ["ShardContext", "LOCAL_REWRITES"]

DT_BOOL = 10

# the input that holds a shape, by op
_SHAPE_INPUT = {"Reshape": 1, "BroadcastTo": 1, "Conv2DBackpropInput": 0,
                "Conv2DBackpropFilter": 1, "AvgPoolGrad": 0}
_ADDITIVE_SCATTERS = ("ResourceScatterAdd", "ResourceScatterSub")


@dataclass
class ShardContext:
    split: Any            # the _SplitPass (shape(), dtype(), b, n, devices)
    node: Any             # the original NodeDef
    op: SplitOp
    shard: Any            # shard k's NodeDef, already in the output graph
    k: int

    @property
    def b(self) -> NodeBuilder:
        return self.split.b

    @property
    def device(self) -> str:
        return str(self.shard.device)

    def full_shape(self, tensor: str) -> list[int]:
        shape = self.split.shape(tensor)
        if shape is None or any(d < 0 for d in shape):
            raise GraphError(f"split op {self.node.name!r} ({self.node.op}) needs the static "
                             f"shape of {tensor!r} (got {shape}); trace with fixed shapes")
        return shape

    def input_tensor(self, i: int) -> str:
        inp = [x for x in self.node.input if not x.startswith("^")][i]
        name, _, idx = inp.partition(":")
        return f"{name}:{idx or 0}"

    def int_const(self, base: str, values: list[int], dtype: int, scalar: bool = False) -> str:
        name = self.b.add(base, "Const", [], self.device, dtype=dtype)
        t = self.b._node(name).attr["value"].tensor
        t.dtype = dtype
        if not scalar:
            t.tensor_shape.dim.add().size = len(values)
        (t.int64_val if dtype == DT_INT64 else t.int_val).extend(values)
        return name

    def rename_shard(self) -> str:
        """Move the shard's op to a fresh name and return it; the caller adds the node that
        takes over the shard's name."""
        old = self.shard.name
        self.shard.name = self.b.name(f"local_{self.k}")
        return old


def _shard_shape_args(ctx: ShardContext) -> None:
    i = _SHAPE_INPUT.get(ctx.node.op)
    if i is None:
        raise GraphError(f"no shape input known for {ctx.node.op} ({ctx.node.name!r})")
    full = ctx.full_shape(f"{ctx.node.name}:0")
    local = ctx.op.outputs[0].shard_shape(tuple(full), ctx.split.n)
    dtype = DT_INT32
    for key in ("Tshape", "Tidx"):
        if key in ctx.node.attr and ctx.node.attr[key].type:
            dtype = ctx.node.attr[key].type
    ctx.shard.input[i] = ctx.int_const("shard_shape", list(local), dtype)


def _full_shape(ctx: ShardContext) -> None:
    node, c = ctx.node, ctx.shard
    out_type = node.attr["out_type"].type if "out_type" in node.attr else DT_INT32
    if node.op in ("Shape", "VariableShape"):
        src = ctx.input_tensor(0)
        values = ctx.full_shape(src) if node.op == "Shape" else list(
            ctx.split.var_shape(src))
        scalar = False
    elif node.op == "Size":
        values, scalar = [math.prod(ctx.full_shape(ctx.input_tensor(0)))], True
    elif node.op == "Rank":
        values, scalar, out_type = [len(ctx.full_shape(ctx.input_tensor(0)))], True, DT_INT32
    elif node.op == "ShapeN":                  # one constant per input, then IdentityN
        consts = [ctx.int_const("full_shape", ctx.full_shape(ctx.input_tensor(i)), out_type)
                  for i in range(len([x for x in node.input if not x.startswith("^")]))]
        controls = [x for x in c.input if x.startswith("^")]
        c.op = "IdentityN"
        del c.input[:]
        c.input.extend(consts + controls)
        for key in list(c.attr):
            del c.attr[key]
        c.attr["T"].list.type.extend([out_type] * len(consts))
        return
    else:
        raise GraphError(f"{node.op} ({node.name!r}) of a split tensor is not supported yet")
    controls = [x for x in c.input if x.startswith("^")]
    c.op = "Const"
    del c.input[:]
    c.input.extend(controls)
    for key in list(c.attr):
        del c.attr[key]
    c.attr["dtype"].type = out_type
    t = c.attr["value"].tensor
    t.dtype = out_type
    if not scalar:
        t.tensor_shape.dim.add().size = len(values)
    (t.int64_val if out_type == DT_INT64 else t.int_val).extend(int(v) for v in values)


def _global_count(ctx: ShardContext) -> None:
    dtype = ctx.node.attr["T"].type
    final = ctx.rename_shard()
    n = ctx.split.n
    node = ctx.b.gd.node.add()
    node.name, node.op, node.device = final, "Mul", ctx.device
    node.input.extend([ctx.shard.name, ctx.b.const_scalar("inv_n", 1.0 / n, dtype, ctx.device)])
    node.attr["T"].type = dtype


def _in_range(ctx: ShardContext, ids: str, rows: int) -> tuple[str, str]:
    """(ids - first row of shard k, whether each id falls in the shard's rows)."""
    b, dev = ctx.b, ctx.device
    it = ctx.split.dtype(ctx.input_tensor(1))
    first = ctx.int_const("first_row", [ctx.k * rows], it, scalar=True)
    local = b.add("local_ids", "Sub", [ids, first], dev, T=it)
    lo = b.add("ids_ge", "GreaterEqual", [local, ctx.int_const("zero", [0], it, True)], dev,
               T=it)
    hi = b.add("ids_lt", "Less", [local, ctx.int_const("rows", [rows], it, True)], dev, T=it)
    return local, b.add("ids_in", "LogicalAnd", [lo, hi], dev)


def _masked_values(ctx: ShardContext, values: str, valid: str, dtype: int) -> str:
    """``values`` (ids' shape + row shape) with the rows of invalid ids zeroed."""
    b, dev = ctx.b, ctx.device
    mask = b.add("mask", "Cast", [valid], dev)
    node = b._node(mask)
    node.attr["SrcT"].type, node.attr["DstT"].type = DT_BOOL, dtype
    node.attr["Truncate"].b = False
    expanded = b.add("mask_rows", "ExpandDims", [mask, ctx.int_const("last", [-1], DT_INT32,
                                                                      True)], dev, T=dtype)
    b._node(expanded).attr["Tdim"].type = DT_INT32
    return b.add("masked", "Mul", [values, expanded], dev, T=dtype)


def _select_ids(ctx: ShardContext, valid: str, local: str, fill: int) -> str:
    it = ctx.split.dtype(ctx.input_tensor(1))
    return ctx.b.add("shard_ids", "SelectV2", [valid, local,
                                              ctx.int_const("fill", [fill], it, True)],
                     ctx.device, T=it)


def _masked_lookup(ctx: ShardContext) -> None:
    rows = ctx.full_shape(ctx.input_tensor(0))[0] // ctx.split.n if ctx.node.op == "GatherV2" \
        else ctx.split.var_shape(ctx.input_tensor(0))[0] // ctx.split.n
    local, valid = _in_range(ctx, ctx.shard.input[1], rows)
    ctx.shard.input[1] = _select_ids(ctx, valid, local, 0)
    dtype = ctx.split.dtype(f"{ctx.node.name}:0")
    final = ctx.rename_shard()
    out = _masked_values(ctx, ctx.shard.name, valid, dtype)
    ctx.b._node(out).name = final


def _masked_segments(ctx: ShardContext) -> None:
    n = ctx.split.n
    if ctx.node.op == "UnsortedSegmentSum":
        rows = ctx.full_shape(f"{ctx.node.name}:0")[0] // n
        local, valid = _in_range(ctx, ctx.shard.input[1], rows)
        ctx.shard.input[1] = _select_ids(ctx, valid, local, -1)     # negative ids are dropped
        nt = ctx.node.attr["Tnumsegments"].type or DT_INT32
        ctx.shard.input[2] = ctx.int_const("num_rows", [rows], nt, scalar=True)
    elif ctx.node.op in _ADDITIVE_SCATTERS:
        rows = ctx.split.var_shape(ctx.input_tensor(0))[0] // n
        local, valid = _in_range(ctx, ctx.shard.input[1], rows)
        ctx.shard.input[1] = _select_ids(ctx, valid, local, 0)
        dtype = ctx.node.attr["dtype"].type or DT_FLOAT
        ctx.shard.input[2] = _masked_values(ctx, ctx.shard.input[2], valid, dtype)
    else:
        raise GraphError(f"{ctx.node.op} ({ctx.node.name!r}) on a row-split table is not "
                         f"supported yet (only UnsortedSegmentSum and "
                         f"{', '.join(_ADDITIVE_SCATTERS)})")


LOCAL_REWRITES: dict[str, Callable[[ShardContext], None]] = {
    "shard_shape_args": _shard_shape_args,
    "full_shape": _full_shape,
    "global_count": _global_count,
    "masked_lookup": _masked_lookup,
    "masked_segments": _masked_segments,
}
