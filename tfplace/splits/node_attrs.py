"""The few NodeDef attributes layout rules read, and small integer constants (axes, perms)."""
from __future__ import annotations

import array
import sys
from typing import Any

__all__ = ["RULE_ATTRS", "node_attrs", "int_constant"]

RULE_ATTRS = ("transpose_a", "transpose_b", "adj_x", "adj_y", "equation", "data_format",
              "keep_dims", "batch_dims")
_INT_TYPES = {3: "i", 9: "q"}                 # DT_INT32, DT_INT64 -> array typecodes
MAX_CONST_ELEMENTS = 64


def node_attrs(graph_def: Any) -> dict[str, dict[str, Any]]:
    """{node name: {attr: plain value}} for RULE_ATTRS, plus "value" for small int Consts."""
    out: dict[str, dict[str, Any]] = {}
    for nd in graph_def.node:
        attrs: dict[str, Any] = {}
        for key in RULE_ATTRS:
            if key in nd.attr:
                av = nd.attr[key]
                kind = av.WhichOneof("value")
                if kind == "b":
                    attrs[key] = bool(av.b)
                elif kind == "s":
                    attrs[key] = av.s.decode() if isinstance(av.s, bytes) else str(av.s)
                elif kind == "i":
                    attrs[key] = int(av.i)
        if nd.op == "Const" and "value" in nd.attr:
            value = int_constant(nd.attr["value"].tensor)
            if value is not None:
                attrs["value"] = value
        if attrs:
            out[nd.name] = attrs
    return out


def int_constant(tensor: Any) -> tuple[int, ...] | None:
    """The flat values of an int32/int64 TensorProto of at most MAX_CONST_ELEMENTS, else None."""
    code = _INT_TYPES.get(int(tensor.dtype))
    if code is None:
        return None
    count = 1
    for d in tensor.tensor_shape.dim:
        count *= int(d.size)
    if count > MAX_CONST_ELEMENTS:
        return None
    if tensor.tensor_content:
        arr = array.array(code)
        arr.frombytes(bytes(tensor.tensor_content))
        if sys.byteorder != "little":
            arr.byteswap()
        return tuple(int(v) for v in arr)
    vals = list(tensor.int_val if code == "i" else tensor.int64_val)
    if len(vals) == count:
        return tuple(int(v) for v in vals)
    if len(vals) == 1:                        # one value repeated to fill the shape
        return (int(vals[0]),) * count
    return () if count == 0 else None
