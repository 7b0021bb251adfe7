"""The analytical cost model: FLOPs per op from shapes, and op/transfer seconds on a cluster."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from tfplace.analysis import OpNode
    from tfplace.cluster import Cluster, Device

__all__ = ["Shape", "Calibration", "FAMILIES", "family", "node_flops", "op_seconds",
           "transfer_seconds", "ELEMENTWISE", "REDUCTIONS", "OPTIMIZER_UPDATES"]

Shape = tuple[int, ...]            # resolved: unknown dims already replaced by the batch hint

FAMILIES = ("matmul", "conv", "elementwise", "reduction", "norm", "pool", "optimizer", "other")

# FLOPs per output element.
ELEMENTWISE: dict[str, float] = {op: 1.0 for op in (
    "Add", "AddV2", "Sub", "Mul", "RealDiv", "Div", "DivNoNan", "FloorDiv", "FloorMod", "Mod",
    "Neg", "Abs", "Sign", "Floor", "Ceil", "Round", "Reciprocal", "ReciprocalGrad",
    "Relu", "Relu6", "ReluGrad", "Relu6Grad", "Elu", "EluGrad", "Selu", "SeluGrad",
    "LeakyRelu", "LeakyReluGrad", "Sigmoid", "SigmoidGrad", "Tanh", "TanhGrad", "Softplus",
    "SoftplusGrad", "Exp", "Expm1", "Log", "Log1p", "Sqrt", "SqrtGrad", "Rsqrt", "RsqrtGrad",
    "Square", "SquaredDifference", "Pow", "Maximum", "Minimum", "Erf", "Sin", "Cos",
    "BiasAdd", "Select", "SelectV2", "Greater", "GreaterEqual", "Less", "LessEqual", "Equal",
    "NotEqual", "LogicalAnd", "LogicalOr", "LogicalNot", "ClipByValue")}
ELEMENTWISE.update({"Softmax": 5.0, "LogSoftmax": 5.0, "Gelu": 8.0})

# FLOPs per element of the first input.
INPUT_ELEMENTWISE: dict[str, float] = {
    "BiasAddGrad": 1.0, "L2Loss": 2.0,
    "SoftmaxCrossEntropyWithLogits": 5.0, "SparseSoftmaxCrossEntropyWithLogits": 5.0,
}
REDUCTIONS = frozenset(("Sum", "Mean", "Max", "Min", "Prod", "ArgMax", "ArgMin", "All", "Any",
                        "EuclideanNorm"))
NORMS: dict[str, float] = {op: 10.0 for op in (
    "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3",
    "FusedBatchNormGrad", "FusedBatchNormGradV2", "FusedBatchNormGradV3")}
# FLOPs per parameter element of one update.
OPTIMIZER_UPDATES: dict[str, float] = {
    "AssignVariableOp": 1.0, "AssignAddVariableOp": 1.0, "AssignSubVariableOp": 1.0,
    "ResourceApplyGradientDescent": 2.0, "ResourceApplyMomentum": 4.0,
    "ResourceApplyKerasMomentum": 4.0, "ResourceApplyAdam": 10.0,
    "ResourceApplyAdamWithAmsgrad": 11.0, "ResourceApplyAdaMax": 8.0,
    "ResourceApplyRMSProp": 8.0, "ResourceApplyCenteredRMSProp": 10.0,
    "ResourceApplyAdagrad": 5.0, "ResourceApplyAdagradV2": 5.0,
    "ResourceApplyAdadelta": 10.0, "ResourceApplyFtrl": 12.0, "ResourceApplyFtrlV2": 12.0,
}
MATMULS = frozenset(("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"))
CONVS = frozenset(("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
                   "DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropInput",
                   "DepthwiseConv2dNativeBackpropFilter"))
POOLS = frozenset(("MaxPool", "AvgPool", "MaxPoolGrad", "AvgPoolGrad", "MaxPoolV2",
                   "MaxPoolGradV2"))


def family(op: str) -> str:
    """The family whose calibration scale applies to `op`."""
    if op in MATMULS:
        return "matmul"
    if op in CONVS:
        return "conv"
    if op in ELEMENTWISE or op in INPUT_ELEMENTWISE or op == "AddN":
        return "elementwise"
    if op in REDUCTIONS:
        return "reduction"
    if op in NORMS:
        return "norm"
    if op in POOLS:
        return "pool"
    if op in OPTIMIZER_UPDATES:
        return "optimizer"
    return "other"


def _elems(shape: Shape | None) -> int:
    return math.prod(shape) if shape is not None else 0


def _at(shapes: Sequence[Shape | None], i: int) -> Shape | None:
    return shapes[i] if i < len(shapes) else None


def _matmul(op: str, attrs: Mapping[str, Any], ins: Sequence[Shape | None],
            outs: Sequence[Shape | None]) -> float:
    a, out = _at(ins, 0), _at(outs, 0)
    if a is None or out is None or len(a) < 2:
        return 0.0
    if op == "MatMul":
        k = a[0] if attrs.get("transpose_a") else a[1]
    else:
        k = a[-2] if attrs.get("adj_x") else a[-1]
    return 2.0 * _elems(out) * k


def _einsum(attrs: Mapping[str, Any], ins: Sequence[Shape | None]) -> float:
    eq = str(attrs.get("equation", "")).replace(" ", "")
    if "->" not in eq or any(s is None for s in ins):
        return 0.0
    operands = eq.split("->")[0].split(",")
    sizes: dict[str, int] = {}
    ellipsis = 1
    for labels, shape in zip(operands, ins):
        assert shape is not None
        if "..." in labels:
            head, tail = labels.split("...")
            n_ell = len(shape) - len(head) - len(tail)
            ellipsis = max(ellipsis, math.prod(shape[len(head):len(head) + n_ell]))
            labels = head + "." * n_ell + tail
        for ch, dim in zip(labels, shape):
            if ch != ".":
                sizes[ch] = max(sizes.get(ch, 1), dim)
    work = math.prod(sizes.values()) * ellipsis
    return float(2 * work if len(operands) > 1 else work)


def _conv(op: str, ins: Sequence[Shape | None], outs: Sequence[Shape | None]) -> float:
    # Backprops cost what the forward conv of the matching shapes costs: 2 * out * kh*kw*cin.
    if op in ("Conv2D", "DepthwiseConv2dNative"):
        out, filt = _at(outs, 0), _at(ins, 1)
    elif op.endswith("BackpropInput"):
        out, filt = _at(ins, 2), _at(ins, 1)
    else:                                           # *BackpropFilter: the filter is the output
        out, filt = _at(ins, 2), _at(outs, 0)
    if out is None or filt is None or len(filt) != 4:
        return 0.0
    kh, kw, cin = filt[0], filt[1], filt[2]
    if op.startswith("Depthwise"):
        return 2.0 * _elems(out) * kh * kw          # each output channel sees one input channel
    return 2.0 * _elems(out) * kh * kw * cin


def _pool(op: str, attrs: Mapping[str, Any], ins: Sequence[Shape | None],
          outs: Sequence[Shape | None]) -> float:
    ksize = attrs.get("ksize") or (1,)
    window = math.prod(int(k) for k in ksize)
    if op in ("MaxPoolGrad", "MaxPoolGradV2", "AvgPoolGrad"):
        out = _at(ins, 1)                           # the forward output (or its gradient)
    else:
        out = _at(outs, 0)
    return float(_elems(out) * window)


def node_flops(op: str, attrs: Mapping[str, Any], in_shapes: Sequence[Shape | None],
               out_shapes: Sequence[Shape | None]) -> float:
    """FLOPs of one op from its (resolved) input and output shapes; unknown ops cost 0.

    `attrs` holds plain Python values of the few attributes that matter (transpose_a/b,
    adj_x/adj_y, equation, ksize).
    """
    if op in ELEMENTWISE:
        return ELEMENTWISE[op] * _elems(_at(out_shapes, 0))
    if op in MATMULS:
        return _einsum(attrs, in_shapes) if op == "Einsum" else _matmul(op, attrs, in_shapes,
                                                                        out_shapes)
    if op in CONVS:
        return _conv(op, in_shapes, out_shapes)
    if op in INPUT_ELEMENTWISE:
        return INPUT_ELEMENTWISE[op] * _elems(_at(in_shapes, 0))
    if op in REDUCTIONS:
        return float(_elems(_at(in_shapes, 0)))
    if op in NORMS:
        return NORMS[op] * _elems(_at(in_shapes, 0))
    if op in POOLS:
        return _pool(op, attrs, in_shapes, out_shapes)
    if op in OPTIMIZER_UPDATES:
        return OPTIMIZER_UPDATES[op] * max((_elems(s) for s in in_shapes), default=0)
    if op == "AddN":
        return float(max(len(in_shapes) - 1, 0) * _elems(_at(out_shapes, 0)))
    return 0.0


@dataclass(frozen=True)
class Calibration:
    """Measured corrections to the analytical model (`tfplace profile` fills it in).

    flops_per_second_scale maps an op family (see FAMILIES) to the fraction of the device's
    peak FLOP/s that family reaches; a mapping is accepted and stored as sorted pairs.
    """

    flops_per_second_scale: tuple[tuple[str, float], ...] = ()
    overhead_seconds: float = 5e-6
    _scales: dict[str, float] = field(default_factory=dict, init=False, compare=False,
                                      repr=False, hash=False)

    def __post_init__(self) -> None:
        raw: Any = self.flops_per_second_scale
        pairs = tuple(sorted((str(k), float(v)) for k, v in
                             (raw.items() if isinstance(raw, Mapping) else raw)))
        from tfplace.errors import PlanError
        bad = [f"{k}={v}" for k, v in pairs if v <= 0 or k not in FAMILIES]
        if bad:
            raise PlanError(f"calibration scales must be > 0 for known families "
                            f"(got {', '.join(bad)}; families: {', '.join(FAMILIES)})")
        object.__setattr__(self, "flops_per_second_scale", pairs)
        object.__setattr__(self, "_scales", dict(pairs))

    def scale(self, fam: str) -> float:
        return self._scales.get(fam, 1.0)


def op_seconds(node: "OpNode", device: "Device", calibration: Calibration) -> float:
    """Predicted run time of one op on one device: per-op overhead plus FLOPs at the scaled rate."""
    if node.flops <= 0:
        return calibration.overhead_seconds
    return calibration.overhead_seconds + node.flops / (device.flops *
                                                        calibration.scale(family(node.op)))


def transfer_seconds(cluster: "Cluster", src: str, dst: str, nbytes: int) -> float:
    """Seconds to move nbytes from src to dst (0 on the same device)."""
    return cluster.transfer_seconds(src, dst, nbytes)
