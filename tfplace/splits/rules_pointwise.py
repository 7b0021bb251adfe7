"""Signatures of element-wise ops, bias add and its gradient, reductions, softmax and pooling.

Element-wise ops keep any split of their (broadcast) output; the ops linear in some inputs also
carry partial sums through those inputs (LINEAR_IN), e.g. Mul(P, B) -> P, ReluGrad(P, B) -> P.
"""
from __future__ import annotations

from tfplace.splits.layout import B, P, Layout, S
from tfplace.splits.signatures import OpContext, Signature, register

__all__ = ["ELEMENTWISE_OPS", "LINEAR_IN", "broadcast_signatures"]

# For each linear op: the groups of inputs that may be P together (the others B).
LINEAR_IN: dict[str, tuple[tuple[int, ...], ...]] = {
    "Add": ((0, 1),), "AddV2": ((0, 1),), "Sub": ((0, 1),), "Neg": ((0,),),
    "Mul": ((0,), (1,)), "RealDiv": ((0,),), "Div": ((0,),), "DivNoNan": ((0,),),
    "Select": ((1, 2),), "SelectV2": ((1, 2),),
    # gradients linear in the incoming gradient: (gradients, features) or (y, dy)
    "ReluGrad": ((0,),), "Relu6Grad": ((0,),), "EluGrad": ((0,),), "SeluGrad": ((0,),),
    "LeakyReluGrad": ((0,),), "SoftplusGrad": ((0,),),
    "TanhGrad": ((1,),), "SigmoidGrad": ((1,),), "RsqrtGrad": ((1,),), "SqrtGrad": ((1,),),
    "ReciprocalGrad": ((1,),),
}
ELEMENTWISE_OPS = frozenset(LINEAR_IN) | frozenset((
    "Abs", "Sign", "Floor", "Ceil", "Round", "Reciprocal", "Relu", "Relu6", "Elu", "Selu",
    "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Softsign", "Exp", "Expm1", "Log", "Log1p",
    "Sqrt", "Rsqrt", "Square", "SquaredDifference", "Pow", "Maximum", "Minimum", "Erf", "Erfc",
    "Sin", "Cos", "FloorDiv", "FloorMod", "Mod", "Cast", "ClipByValue", "Greater",
    "GreaterEqual", "Less", "LessEqual", "Equal", "NotEqual", "LogicalAnd", "LogicalOr",
    "LogicalNot", "IsFinite", "IsNan", "IsInf", "ZerosLike", "OnesLike", "Gelu", "Mish"))


def broadcast_signatures(ctx: OpContext,
                         linear: tuple[tuple[int, ...], ...] = ()) -> list[Signature]:
    """Split signatures per output axis (broadcast inputs stay B), the linear P ones, then B."""
    n_in, out = ctx.n_in, ctx.out_shapes[0] if ctx.out_shapes else None
    sigs: list[Signature] = []
    shapes = ctx.in_shapes
    if out is not None and all(s is not None for s in shapes):
        for a in range(len(out)):
            ins: list[Layout] = []
            for s in shapes:
                assert s is not None
                p = a - (len(out) - len(s))
                ins.append(S(p) if p >= 0 and not (s[p] == 1 and out[a] != 1) else B)
            if any(lay.is_split for lay in ins):
                sigs.append(Signature(tuple(ins), (S(a),) * ctx.n_out, divided=True))
    for group in linear:
        if max(group) < n_in:
            sigs.append(Signature(tuple(P if i in group else B for i in range(n_in)),
                                  (P,) * ctx.n_out))
    sigs.append(Signature((B,) * n_in, (B,) * ctx.n_out))
    return sigs


@register(*sorted(ELEMENTWISE_OPS))
def _elementwise(ctx: OpContext) -> list[Signature]:
    return broadcast_signatures(ctx, LINEAR_IN.get(ctx.op, ()))


@register("AddN")
def _add_n(ctx: OpContext) -> list[Signature]:
    return broadcast_signatures(ctx, (tuple(range(ctx.n_in)),))


def _channel_axis(ctx: OpContext, rank: int) -> int:
    return 1 if str(ctx.attrs.get("data_format", "NHWC")).startswith("NC") else rank - 1


@register("BiasAdd", "BiasAddV1")
def _bias_add(ctx: OpContext) -> list[Signature]:
    """x + b along the channel axis: S(c) takes the bias S(0); other splits keep it B."""
    rank = ctx.rank(0)
    sigs = []
    if rank is not None:
        c = _channel_axis(ctx, rank)
        for a in range(rank):
            sigs.append(Signature((S(a), S(0) if a == c else B), (S(a),), divided=True))
    return sigs + [Signature((P, P), (P,)), Signature((B, B), (B,))]


@register("BiasAddGrad")
def _bias_add_grad(ctx: OpContext) -> list[Signature]:
    """Sum over all but the channel axis: a channel split gives S(0), any other split P."""
    rank = ctx.rank(0)
    sigs = []
    if rank is not None:
        c = _channel_axis(ctx, rank)
        for a in range(rank):
            sigs.append(Signature((S(a),), (S(0) if a == c else P,), divided=True))
    return sigs + [Signature((P,), (P,)), Signature((B,), (B,))]


_REDUCTIONS = ("Sum", "Mean", "Max", "Min", "Prod", "All", "Any", "EuclideanNorm")
_LINEAR_REDUCTIONS = ("Sum", "Mean")


@register(*_REDUCTIONS)
def _reduction(ctx: OpContext) -> list[Signature]:
    """Over a split axis Sum/Mean give P (the rewrite divides a Mean by the full count); a split
    of a kept axis stays split (shifted left by the axes removed before it)."""
    rank, axes = ctx.rank(0), _reduced_axes(ctx)
    linear = ctx.op in _LINEAR_REDUCTIONS
    sigs = []
    if rank is not None and axes is not None:
        reduced = {a % rank for a in axes} if rank else set()
        keep = bool(ctx.attrs.get("keep_dims"))
        for a in range(rank):
            if a in reduced:
                if linear:
                    sigs.append(Signature((S(a), B), (P,), divided=True,
                                          local="global_count" if ctx.op == "Mean" else ""))
            else:
                shift = 0 if keep else sum(1 for r in reduced if r < a)
                sigs.append(Signature((S(a), B), (S(a - shift),), divided=True))
    if linear:
        sigs.append(Signature((P, B), (P,)))
    return sigs + [Signature((B, B), (B,))]


def _reduced_axes(ctx: OpContext) -> tuple[int, ...] | None:
    """The constant axes, or those a gradient's broadcast reduction removes: nothing when the
    shape is unchanged, the leading axes when the output is the input's trailing dims."""
    axes = ctx.const(1)
    if axes is not None:
        return axes
    src, dst = ctx.in_shape(), ctx.out_shape()
    if src is None or dst is None or bool(ctx.attrs.get("keep_dims")):
        return None
    if tuple(src) == tuple(dst):
        return ()
    lead = len(src) - len(dst)
    from_broadcast = ctx.in_ops[1:2] == ("BroadcastGradientArgs",)
    if from_broadcast and lead > 0 and tuple(src[lead:]) == tuple(dst):
        return tuple(range(lead))
    return None


@register("Softmax", "LogSoftmax")
def _softmax(ctx: OpContext) -> list[Signature]:
    rank = ctx.rank(0)
    sigs = [Signature((S(a),), (S(a),), divided=True) for a in range((rank or 1) - 1)]
    return sigs + [Signature((B,), (B,))]


@register("SoftmaxCrossEntropyWithLogits", "SparseSoftmaxCrossEntropyWithLogits")
def _softmax_xent(ctx: OpContext) -> list[Signature]:
    """(logits [N, C], labels) -> (loss [N], backprop [N, C]): only the batch axis splits."""
    return [Signature((S(0), S(0)), (S(0), S(0)), divided=True),
            Signature((B, B), (B, B))]


@register("MaxPool", "AvgPool", "MaxPoolGrad", "AvgPoolGrad")
def _pool(ctx: OpContext) -> list[Signature]:
    """Pooling windows lie inside one image and one channel: batch and channel splits stay."""
    rank = ctx.out_rank() or 4
    c = _channel_axis(ctx, rank)
    tensor_in = [i for i in range(ctx.n_in) if not (ctx.op == "AvgPoolGrad" and i == 0)]
    sigs = []
    for a in (0, c):
        ins = tuple(S(a) if i in tensor_in else B for i in range(ctx.n_in))
        sigs.append(Signature(ins, (S(a),), divided=True,   # AvgPoolGrad's input-shape argument
                              local="shard_shape_args" if ctx.op == "AvgPoolGrad" else ""))
    if ctx.op in ("AvgPool", "AvgPoolGrad"):
        sigs.append(Signature(tuple(P if i == tensor_in[-1] else B for i in range(ctx.n_in)),
                              (P,)))
    return sigs + [Signature((B,) * ctx.n_in, (B,))]
