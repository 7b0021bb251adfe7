"""Copies of a rewritten step for running several steps in one call (``steps_per_execution``).

The runtime imports copy 0, 1, ... K-1 of the step into one function, one after another;
automatic control dependencies order each copy's variable reads after the previous copy's
updates, so the K copies are K sequential steps. What must differ between copies is the key
that matches a TF collective across devices: two collectives of one call with the same
``instance_key`` would be taken for the same one. Copy k > 0 gets every Const that feeds an
``instance_key`` input replaced by a key derived from (old key, k), the same in every process.
Horovod matches by node name, and the import scope already makes those differ per copy.
"""
from __future__ import annotations

import hashlib
from typing import Any

from tfplace.errors import GraphError

__all__ = ["step_copy", "instance_key_consts"]

def _arg_index(op: str, arg: str) -> int | None:
    """Input position of argument ``arg`` of op type ``op`` (its OpDef), or None."""
    from tensorflow.python.framework import op_def_registry
    op_def = op_def_registry.get(op)
    if op_def is None:
        return None
    for i, a in enumerate(op_def.input_arg):
        if a.name == arg:
            return i
    return None


def instance_key_consts(graph_def: Any) -> list[str]:
    """The Const nodes feeding the ``instance_key`` input of the graph's collective ops."""
    nodes = {n.name: n for n in graph_def.node}
    found: list[str] = []
    for n in graph_def.node:
        if not n.op.startswith("Collective"):
            continue
        i = _arg_index(n.op, "instance_key")
        if i is None:                            # V1 collectives keep the key in an attr
            if "instance_key" in n.attr:
                raise GraphError(f"collective {n.name!r} ({n.op}) keeps its instance key in an "
                                 "attribute; several steps per call need the V2 ops")
            continue
        src = n.input[i].split(":")[0].lstrip("^")
        if nodes.get(src) is None or nodes[src].op != "Const":
            raise GraphError(f"the instance key of collective {n.name!r} comes from {src!r}, "
                             "not a constant; it cannot be re-keyed for several steps per call")
        if src not in found:
            found.append(src)
    return found


def _key(old: int, copy: int) -> int:
    digest = hashlib.sha256(f"{old}\x00{copy}".encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (2**31 - 2)


def step_copy(graph_def: Any, copy: int) -> Any:
    """``graph_def`` for copy ``copy`` of the step within one call: copy 0 is the graph itself,
    the others a new GraphDef with new collective instance keys (the input is not modified)."""
    if copy == 0:
        return graph_def
    consts = set(instance_key_consts(graph_def))
    if not consts:
        return graph_def
    from tensorflow.python.framework import tensor_util
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    for n in out.node:
        if n.name not in consts:
            continue
        value = tensor_util.MakeNdarray(n.attr["value"].tensor)
        if value.shape != () or value.dtype.kind not in "iu":
            raise GraphError(f"instance key constant {n.name!r} is not a scalar int "
                             f"(shape {value.shape}, dtype {value.dtype})")
        n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(
            value.dtype.type(_key(int(value), copy))))
    return out
