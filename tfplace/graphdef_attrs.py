"""Reading NodeDef attributes (duck-typed protos): output shapes, dtypes, bytes, cost attrs."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["DT_RESOURCE", "DT_VARIANT", "DT_BOOL", "DTYPE_BYTES", "DEFAULT_ELEMENT_BYTES",
           "FUNCTIONAL_OPS", "COMPARISONS", "shape_of", "output_shapes", "out_dtypes", "resolve",
           "nbytes", "cost_attrs", "called_functions", "var_handle_bytes"]

DT_RESOURCE = 20
DT_VARIANT = 21
DT_BOOL = 10
# Bytes per element of each TF DataType enum; handles and variants hold no activation memory.
DTYPE_BYTES: dict[int, int] = {
    1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 7: 8, 8: 8, 9: 8, 10: 1, 11: 1, 12: 1, 13: 4, 14: 2,
    15: 2, 16: 2, 17: 2, 18: 16, 19: 2, 20: 0, 21: 0, 22: 4, 23: 8,
}
DEFAULT_ELEMENT_BYTES = 4
FUNCTIONAL_OPS = frozenset(("StatefulPartitionedCall", "PartitionedCall", "If", "StatelessIf",
                            "While", "StatelessWhile", "Case", "StatelessCase"))
COMPARISONS = frozenset(("Greater", "GreaterEqual", "Less", "LessEqual", "Equal", "NotEqual",
                         "IsFinite", "IsNan", "IsInf", "LogicalAnd", "LogicalOr", "LogicalNot"))
_LIST_TYPE_ATTRS = ("Tout", "output_types", "out_types", "T", "Toutput_types", "dtypes")
_TYPE_ATTRS = ("dtype", "DstT", "out_type", "output_type", "Tout", "T", "type", "out_idx")
_COST_ATTRS = ("transpose_a", "transpose_b", "adj_x", "adj_y", "equation", "ksize")


def shape_of(sp: Any) -> tuple[int, ...] | None:
    if sp.unknown_rank:
        return None
    return tuple([d.size for d in sp.dim])


def output_shapes(attr: Any) -> tuple[tuple[int, ...] | None, ...]:
    if "_output_shapes" not in attr:
        return ()
    return tuple([shape_of(s) for s in attr["_output_shapes"].list.shape])


# Single-output ops name their output type in one of these, most specific first.
_SINGLE_TYPE_ATTRS = ("out_type", "output_type", "DstT", "dtype", "T", "Tout", "type")


def out_dtypes(op: str, attr: Any, n_out: int) -> tuple[int, ...]:
    if n_out == 0:
        return ()
    if op in ("VarHandleOp", "VarHandleOpV2"):
        return (DT_RESOURCE,) * n_out
    if op in COMPARISONS:
        return (DT_BOOL,) * n_out
    if n_out == 1:
        for key in _SINGLE_TYPE_ATTRS:
            if key in attr:
                av = attr[key]
                if av.type:                                  # 0 (DT_INVALID) if it is a list
                    return (av.type,)
                types = av.list.type
                if len(types) == 1:
                    return (types[0],)
        return (0,)
    for key in _LIST_TYPE_ATTRS:
        if key in attr:
            types = list(attr[key].list.type)
            if len(types) == n_out:
                return tuple(int(t) for t in types)
    for key in _TYPE_ATTRS:
        if key in attr and attr[key].WhichOneof("value") == "type":
            first = int(attr[key].type)
            if "U" in attr:                                  # FusedBatchNorm: y is T, stats U
                return (first,) + (int(attr["U"].type),) * (n_out - 1)
            return (first,) * n_out
    return (0,) * n_out


def resolve(shape: tuple[int, ...] | None, hint: int) -> tuple[int, ...] | None:
    if shape is None or not shape or min(shape) >= 0:
        return shape
    return tuple([d if d >= 0 else hint for d in shape])


def nbytes(shape: tuple[int, ...] | None, dtype: int, hint: int) -> int:
    """Bytes of a tensor; `shape` must already be resolved (no unknown dims)."""
    size = DTYPE_BYTES.get(dtype % 100, DEFAULT_ELEMENT_BYTES)  # 101+ are TF1 ref types
    if size == 0:
        return 0
    return (hint if shape is None else math.prod(shape)) * size


def cost_attrs(attr: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _COST_ATTRS:
        if key in attr:
            av = attr[key]
            kind = av.WhichOneof("value")
            if kind == "b":
                out[key] = bool(av.b)
            elif kind == "s":
                out[key] = av.s.decode() if isinstance(av.s, bytes) else str(av.s)
            elif kind == "list":
                out[key] = tuple(int(i) for i in av.list.i)
    return out


def called_functions(attr: Any) -> list[str]:
    names: list[str] = []
    for key in sorted(attr.keys()):
        av = attr[key]
        kind = av.WhichOneof("value")
        if kind == "func":
            names.append(av.func.name)
        elif kind == "list":
            names.extend(f.name for f in av.list.func)
    return names


def var_handle_bytes(attr: Any) -> int:
    shape = shape_of(attr["shape"].shape) if "shape" in attr else ()
    dtype = int(attr["dtype"].type) if "dtype" in attr else 0
    return nbytes(resolve(shape, 1) or (), dtype if DTYPE_BYTES.get(dtype % 100) else 1, 1)
