"""FLOPs of a node, including functional ops whose bodies live in the GraphDef's library."""
from __future__ import annotations

import math
from typing import Any, Sequence

from tfplace import costs
from tfplace.graphdef_attrs import (FUNCTIONAL_OPS, called_functions, cost_attrs, output_shapes,
                                    resolve)

__all__ = ["FlopCounter"]


class FlopCounter:
    """FLOPs of nodes, including functional ops whose bodies live in graph_def.library."""

    def __init__(self, library: Any, hint: int) -> None:
        self.hint = hint
        self.funcs = {f.signature.name: f for f in library.function} if library else {}
        self.memo: dict[str, float] = {}
        self.active: set[str] = set()

    def node(self, nd: Any, in_shapes: list[tuple[int, ...] | None],
             out_shapes: Sequence[tuple[int, ...] | None]) -> float:
        op = nd.op
        if op in FUNCTIONAL_OPS or op in self.funcs:
            names = [op] if op in self.funcs else called_functions(nd.attr)
            return math.fsum(self.function(n) for n in names)
        return costs.node_flops(op, cost_attrs(nd.attr) if op in _ATTR_OPS else {},
                                in_shapes, out_shapes)

    def function(self, name: str) -> float:
        if name in self.memo:
            return self.memo[name]
        fdef = self.funcs.get(name)
        if fdef is None or name in self.active:          # unknown or recursive: count nothing
            return 0.0
        self.active.add(name)
        hint = self.hint
        shapes: dict[str, list[tuple[int, ...] | None]] = {}
        for i, arg in enumerate(fdef.signature.input_arg):
            aa = fdef.arg_attr[i].attr if i in fdef.arg_attr else {}
            shapes[arg.name] = [resolve(s, hint) for s in output_shapes(aa)] or [None]
        for nd in fdef.node_def:
            shapes[nd.name] = [resolve(s, hint) for s in output_shapes(nd.attr)]
        total = 0.0
        for nd in fdef.node_def:
            ins: list[tuple[int, ...] | None] = []
            for ref in nd.input:
                if ref.startswith("^"):
                    continue
                parts = ref.split(":")
                k = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 0
                outs = shapes.get(parts[0], [])
                ins.append(outs[k] if k < len(outs) else None)
            total += self.node(nd, ins, shapes[nd.name])
        self.active.discard(name)
        self.memo[name] = total
        return total


_ATTR_OPS = frozenset(("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum",
                       "MaxPool", "AvgPool", "MaxPoolGrad", "AvgPoolGrad"))
