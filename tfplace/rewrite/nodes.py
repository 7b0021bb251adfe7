"""NodeDef builders for the passes: plain protobuf edits, no TF graph construction."""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["NodeBuilder", "DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT64", "DT_RESOURCE"]

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64, DT_RESOURCE = 1, 2, 3, 9, 20
FLOAT_TYPES = (DT_FLOAT, DT_DOUBLE)


class NodeBuilder:
    """Appends nodes to ``graph_def`` with unique names under ``scope``."""

    def __init__(self, graph_def: Any, scope: str) -> None:
        self.gd, self.scope = graph_def, scope
        self._names = {n.name for n in graph_def.node}
        self._next: dict[str, int] = {}      # base -> the first suffix not yet tried

    def name(self, base: str) -> str:
        """``scope/base``, else ``scope/base_i`` with the smallest free i. The search for a base
        resumes where the last one stopped: every smaller i is taken."""
        i = self._next.get(base, 0)
        name = f"{self.scope}/{base}" if i == 0 else f"{self.scope}/{base}_{i}"
        while name in self._names:
            i += 1
            name = f"{self.scope}/{base}_{i}"
        self._next[base] = i + 1
        self._names.add(name)
        return name

    def add(self, base: str, op: str, inputs: Sequence[str], device: str, **attrs: Any) -> str:
        n = self.gd.node.add()
        n.name, n.op, n.device = self.name(base), op, device
        n.input.extend(inputs)
        for key, value in attrs.items():
            if key in ("T", "Tidx", "Tlen", "Tshape", "dtype", "Tindices", "Tnumsegments"):
                n.attr[key].type = value
            else:
                n.attr[key].i = int(value)
        return n.name

    def const_ints(self, base: str, values: Sequence[int], device: str) -> str:
        name = self.add(base, "Const", [], device, dtype=DT_INT32)
        t = self._node(name).attr["value"].tensor
        t.dtype = DT_INT32
        t.tensor_shape.dim.add().size = len(values)
        t.int_val.extend(int(v) for v in values)
        return name

    def const_scalar(self, base: str, value: float, dtype: int, device: str) -> str:
        name = self.add(base, "Const", [], device, dtype=dtype)
        t = self._node(name).attr["value"].tensor
        t.dtype = dtype
        if dtype == DT_DOUBLE:
            t.double_val.append(value)
        elif dtype == DT_INT32:
            t.int_val.append(int(value))
        else:
            t.float_val.append(value)
        return name

    def _node(self, name: str) -> Any:
        return self.gd.node[len(self.gd.node) - 1] if self.gd.node[-1].name == name else \
            next(n for n in self.gd.node if n.name == name)

    # -- common ops ---------------------------------------------------------------------------
    def flatten(self, x: str, dtype: int, device: str) -> str:
        return self.add("flat", "Reshape", [x, self.const_ints("minus1", [-1], device)], device,
                        T=dtype, Tshape=DT_INT32)

    def reshape(self, x: str, shape: Sequence[int], dtype: int, device: str) -> str:
        return self.add("shaped", "Reshape", [x, self.const_ints("shape", shape, device)],
                        device, T=dtype, Tshape=DT_INT32)

    def concat(self, xs: Sequence[str], dtype: int, device: str) -> str:
        if len(xs) == 1:
            return self.add("concat", "Identity", [xs[0]], device, T=dtype)
        axis = self._axis0(device)
        return self.add("concat", "ConcatV2", [*xs, axis], device, N=len(xs), T=dtype,
                        Tidx=DT_INT32)

    def split(self, x: str, sizes: Sequence[int], dtype: int, device: str) -> list[str]:
        if len(sizes) == 1:
            return [self.add("split", "Identity", [x], device, T=dtype)]
        name = self.add("split", "SplitV", [x, self.const_ints("sizes", sizes, device),
                                             self._axis0(device)],
                        device, num_split=len(sizes), T=dtype, Tlen=DT_INT32)
        return [f"{name}:{i}" for i in range(len(sizes))]

    def scale(self, x: str, factor: float, dtype: int, device: str) -> str:
        return self.add("scaled", "Mul", [x, self.const_scalar("factor", factor, dtype, device)],
                        device, T=dtype)

    def _axis0(self, device: str) -> str:
        name = self.add("axis", "Const", [], device, dtype=DT_INT32)
        t = self._node(name).attr["value"].tensor
        t.dtype = DT_INT32
        t.int_val.append(0)
        return name
