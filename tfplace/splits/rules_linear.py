"""Signatures of contractions: MatMul, BatchMatMul, Einsum and Conv2D with its two gradients.

Every contraction is read as an einsum: splitting an index kept in the output splits the output
along it, splitting a contracted index on every operand that has it leaves partial sums (P),
and, each operand entering linearly, one P operand with the others B gives P.
"""
from __future__ import annotations

import string
from typing import Sequence

from tfplace.splits.layout import B, P, Layout, S
from tfplace.splits.signatures import OpContext, Shape, Signature, register

__all__ = ["einsum_signatures", "parse_equation", "matmul_labels", "conv_labels"]


def einsum_signatures(operands: Sequence[str], output: str,
                      shapes: Sequence[Shape | None] = ()) -> list[Signature]:
    """Signatures of `operands -> output` (one letter per axis, no ellipsis).

    An operand axis of size 1 under an output axis of another size is broadcast, so that operand
    stays B when the index is split.
    """
    sigs: list[Signature] = []
    letters = list(dict.fromkeys(output + "".join(operands)))
    for ch in letters:
        if any(labels.count(ch) > 1 for labels in operands) or output.count(ch) > 1:
            continue                                        # traces and diagonals: not split
        ins: list[Layout] = []
        for i, labels in enumerate(operands):
            pos = labels.find(ch)
            shape = shapes[i] if i < len(shapes) else None
            broadcast = (pos >= 0 and shape is not None and pos < len(shape)
                         and shape[pos] == 1)
            ins.append(S(pos) if pos >= 0 and not broadcast else B)
        if all(lay is B for lay in ins):
            continue
        out = S(output.index(ch)) if ch in output else P
        sigs.append(Signature(tuple(ins), (out,), divided=True))
    for i in range(len(operands)):
        sigs.append(Signature(tuple(P if j == i else B for j in range(len(operands))), (P,)))
    sigs.append(Signature((B,) * len(operands), (B,)))
    return sigs


def parse_equation(equation: str, ranks: Sequence[int | None]) -> tuple[list[str], str] | None:
    """'bij,bjk->bik' -> (['bij', 'bjk'], 'bik'); '...' becomes fresh letters (None if unknown)."""
    eq = equation.replace(" ", "")
    if "->" not in eq:
        return None
    lhs, out = eq.split("->")
    operands = lhs.split(",")
    if len(operands) != len(ranks):
        return None
    spare = [c for c in string.ascii_letters if c not in eq]
    n_ell = 0
    for labels, rank in zip(operands, ranks):
        if "..." in labels:
            if rank is None:
                return None
            n_ell = max(n_ell, rank - len(labels) + 3)
    ell = "".join(spare[:n_ell])

    def expand(labels: str, rank: int | None) -> str:
        if "..." not in labels:
            return labels
        k = (rank or 0) - len(labels) + 3
        return labels.replace("...", ell[n_ell - k:] if k > 0 else "")

    operands = [expand(lab, r) for lab, r in zip(operands, ranks)]
    if "..." in out:
        out = out.replace("...", ell)
    return operands, out


@register("Einsum")
def _einsum(ctx: OpContext) -> list[Signature]:
    parsed = parse_equation(str(ctx.attrs.get("equation", "")),
                            [ctx.rank(i) for i in range(ctx.n_in)])
    if parsed is None:
        return [Signature((B,) * ctx.n_in, (B,)), *_linear_only(ctx.n_in)]
    operands, out = parsed
    return einsum_signatures(operands, out, ctx.in_shapes)


def _linear_only(n_in: int) -> list[Signature]:
    return [Signature(tuple(P if j == i else B for j in range(n_in)), (P,)) for i in range(n_in)]


def matmul_labels(rank_a: int, rank_b: int, adj_a: bool, adj_b: bool) -> tuple[list[str], str]:
    """Einsum labels of a (batch) matmul: a=[...,i,j], b=[...,j,k] -> [...,i,k], after adjoints."""
    n_batch = max(rank_a, rank_b) - 2
    batch = "abcdefgh"[:n_batch]
    a = batch[n_batch - (rank_a - 2):] + ("ji" if adj_a else "ij")
    b = batch[n_batch - (rank_b - 2):] + ("kj" if adj_b else "jk")
    return [a, b], batch + "ik"


@register("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
def _matmul(ctx: OpContext) -> list[Signature]:
    ra, rb = ctx.rank(0), ctx.rank(1)
    if ra is None or rb is None or ra < 2 or rb < 2:
        return [Signature((B, B), (B,)), *_linear_only(2)]
    if ctx.op == "MatMul":
        adj_a, adj_b = bool(ctx.attrs.get("transpose_a")), bool(ctx.attrs.get("transpose_b"))
    else:
        adj_a, adj_b = bool(ctx.attrs.get("adj_x")), bool(ctx.attrs.get("adj_y"))
    operands, out = matmul_labels(ra, rb, adj_a, adj_b)
    return einsum_signatures(operands, out, ctx.in_shapes)


def conv_labels(op: str, data_format: str) -> tuple[list[str], str, tuple[int, ...]]:
    """Einsum-like labels of a 2-D convolution (n batch, h/w spatial, c in, o out channels).

    Spatial axes are never split (that would need halo exchange); the returned tuple lists the
    input positions of operands that are shape vectors (always B).
    """
    act_in = "nchw" if data_format.startswith("NC") else "nhwc"
    act_out = act_in.replace("c", "o")
    filt = "xyco"                                         # kh, kw, in, out
    if op == "Conv2D":
        return [act_in, filt], act_out, ()
    if op == "Conv2DBackpropInput":                       # (input_sizes, filter, dy) -> dx
        return ["", filt, act_out], act_in, (0,)
    return [act_in, "", act_out], filt, (1,)              # BackpropFilter: (x, sizes, dy) -> dW


@register("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")
def _conv(ctx: OpContext) -> list[Signature]:
    fmt = str(ctx.attrs.get("data_format", "NHWC"))
    operands, out, shape_inputs = conv_labels(ctx.op, fmt)
    keep = [i for i in range(len(operands)) if i not in shape_inputs]
    sigs = einsum_signatures([operands[i] for i in keep], out,
                             [ctx.in_shapes[i] if i < ctx.n_in else None for i in keep])
    spatial = {out.find(c) for c in "hwxy" if c in out}
    full: list[Signature] = []
    for s in sigs:
        if any(lay.is_split and lay.axis in spatial for lay in s.outputs):
            continue
        if any(lay.is_split and operands[i][lay.axis] in "hwxy"
               for i, lay in zip(keep, s.inputs)):
            continue
        ins = [B] * len(operands)
        for i, lay in zip(keep, s.inputs):
            ins[i] = lay
        sized = bool(shape_inputs) and any(lay.is_split for lay in s.outputs)
        full.append(Signature(tuple(ins), s.outputs, s.divided,
                              local="shard_shape_args" if sized else ""))
    return full
