"""The op DAG: a captured GraphDef as topologically ordered nodes with shapes, bytes and FLOPs."""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from tfplace import costs
from tfplace._perf import gc_paused
from tfplace.errors import GraphError

__all__ = ["OpNode", "OpDag", "analyse", "DTYPE_BYTES", "DT_RESOURCE", "DT_VARIANT",
           "FUNCTIONAL_OPS", "split_input"]

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


@dataclass(frozen=True)
class OpNode:
    name: str
    op: str
    inputs: tuple[str, ...] = ()                 # data tensors "node:idx"
    control_inputs: tuple[str, ...] = ()         # node names
    out_shapes: tuple[tuple[int, ...] | None, ...] = ()   # -1 unknown dim, None unknown rank
    out_dtypes: tuple[int, ...] = ()
    out_bytes: tuple[int, ...] = ()
    flops: float = 0.0
    param_bytes: int = 0
    colocate_with: tuple[str, ...] = ()
    device: str = ""


def split_input(ref: str) -> tuple[str, int]:
    """'node:2' -> ('node', 2); 'node' -> ('node', 0)."""
    name, sep, idx = ref.rpartition(":")
    if sep and idx.isdigit():
        return name, int(idx)
    return ref, 0


class OpDag:
    """Nodes in Kahn topological order (ties by given order) with int-indexed edges.

    preds/succs cover data and control edges, deduplicated. pred_bytes[i][j] is what crosses
    from preds[i][j] to node i if they sit on different devices (0 for control-only edges).
    tensor_consumers[i][k] lists the nodes reading output k of node i; in_tensors[i] lists the
    distinct (producer, output) pairs node i reads.
    """

    def __init__(self, nodes: Sequence[OpNode]) -> None:
        given = {n.name: i for i, n in enumerate(nodes)}
        if len(given) != len(nodes):
            dup = next(n.name for i, n in enumerate(nodes) if given[n.name] != i)
            raise GraphError(f"graph has two nodes named {dup!r}; node names must be unique")
        back = {i for i, n in enumerate(nodes) if n.op == "NextIteration"}
        data: list[list[tuple[int, int]]] = []      # deduplicated (producer, output) per node
        raw_preds: list[list[int]] = []
        for n in nodes:
            tensors: list[tuple[int, int]] = []
            for ref in n.inputs:
                src, _, k = ref.rpartition(":")
                j = given.get(src)
                if j is None or not k.isdigit():
                    src, kk = split_input(ref)
                    j = given.get(src)
                    if j is None:
                        raise GraphError(f"node {n.name!r} reads {ref!r} but the graph has no "
                                         f"node {src!r}; capture the whole function "
                                         "(a truncated GraphDef?)")
                else:
                    kk = int(k)
                if j not in back:                   # TF1 loop back-edge, not a dependency
                    tensors.append((j, kk))
            if len(tensors) > 1:
                tensors = list(dict.fromkeys(tensors))
            ps = [j for j, _ in tensors]
            for src in n.control_inputs:
                j = given.get(src)
                if j is None:
                    raise GraphError(f"node {n.name!r} has a control input '^{src}' but the graph "
                                     f"has no node {src!r}; capture the whole function")
                ps.append(j)
            data.append(tensors)
            raw_preds.append(ps)
        order = _kahn(nodes, raw_preds)
        new_of = [0] * len(nodes)
        for new, old in enumerate(order):
            new_of[old] = new
        self.nodes: list[OpNode] = [nodes[j] for j in order]
        self.index: dict[str, int] = {n.name: i for i, n in enumerate(self.nodes)}
        self.preds: list[list[int]] = []
        self.pred_bytes: list[list[int]] = []
        self.in_tensors: list[list[tuple[int, int]]] = []
        self.succs: list[list[int]] = [[] for _ in self.nodes]
        self.tensor_consumers: list[list[list[int]]] = [[[] for _ in n.out_bytes]
                                                        for n in self.nodes]
        out_bytes = [n.out_bytes for n in self.nodes]
        consumers, succs = self.tensor_consumers, self.succs
        preds_out, pbytes_out, ins_out = self.preds, self.pred_bytes, self.in_tensors
        for i, old in enumerate(order):
            ins = [(new_of[j], k) for j, k in data[old]]
            byts: dict[int, int] = {}
            for j, out in ins:
                ob = out_bytes[j]
                byts[j] = byts.get(j, 0) + (ob[out] if out < len(ob) else 0)
                cons = consumers[j]
                if out >= len(cons):
                    cons.extend([] for _ in range(out + 1 - len(cons)))
                cons[out].append(i)
            rp = raw_preds[old]
            if len(rp) != len(ins):                 # control inputs add byte-less edges
                for j in rp[len(ins):]:
                    byts.setdefault(new_of[j], 0)
            ps = sorted(byts)
            ins_out.append(ins)
            preds_out.append(ps)
            pbytes_out.append([byts[j] for j in ps])
            for j in ps:
                succs[j].append(i)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> "OpDag":
        """A synthetic DAG from plain records (tests, benchmarks).

        Each record has `name`, `op`, optional `inputs` ("node", "node:1" or "^ctrl"),
        `out_bytes` (int or sequence; default one 4-byte output), `out_dtypes`, `out_shapes`,
        `flops`, `param_bytes`, `colocate_with`, `device`.
        """
        with gc_paused():
            return cls(_record_nodes(records))

    # -- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> OpNode:
        return self.nodes[self.index[name]]

    def consumers(self, tensor: str) -> list[int]:
        """Indices of the nodes reading tensor 'node:idx'."""
        src, k = split_input(tensor)
        cons = self.tensor_consumers[self.index[src]]
        return list(cons[k]) if k < len(cons) else []

    @property
    def total_flops(self) -> float:
        return math.fsum(n.flops for n in self.nodes)

    @property
    def total_param_bytes(self) -> int:
        return sum(n.param_bytes for n in self.nodes)

    @property
    def num_edges(self) -> int:
        return sum(len(p) for p in self.preds)


def _record_nodes(records: Iterable[Mapping[str, Any]]) -> list[OpNode]:
    nodes = []
    for r in records:
        data, ctrl = _parse_inputs(r.get("inputs", ()))
        ob = r.get("out_bytes", 4)
        out_bytes = (int(ob),) if isinstance(ob, int) else tuple(int(b) for b in ob)
        dtypes = tuple(r.get("out_dtypes", (1,) * len(out_bytes)))
        shapes = tuple(r.get("out_shapes", (None,) * len(out_bytes)))
        nodes.append(OpNode(name=r["name"], op=r.get("op", "Identity"), inputs=data,
                            control_inputs=ctrl, out_shapes=shapes, out_dtypes=dtypes,
                            out_bytes=out_bytes, flops=float(r.get("flops", 0.0)),
                            param_bytes=int(r.get("param_bytes", 0)),
                            colocate_with=tuple(r.get("colocate_with", ())),
                            device=r.get("device", "")))

    return nodes


def _kahn(nodes: Sequence[OpNode], raw_preds: list[list[int]]) -> list[int]:
    if all(j < i for i, ps in enumerate(raw_preds) for j in ps):
        return list(range(len(nodes)))            # already topological: Kahn would keep it
    indeg = [len(p) for p in raw_preds]             # multi-edges count once per occurrence
    succs: list[list[int]] = [[] for _ in nodes]
    for i, ps in enumerate(raw_preds):
        for j in ps:
            succs[j].append(i)
    ready = [i for i, d in enumerate(indeg) if d == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        j = heapq.heappop(ready)
        order.append(j)
        for i in succs[j]:
            indeg[i] -= 1
            if indeg[i] == 0:
                heapq.heappush(ready, i)
    if len(order) != len(nodes):
        done = set(order)
        stuck = [i for i in range(len(nodes)) if i not in done]
        walk: dict[int, int] = {}                   # every stuck node waits on a stuck node
        cur = stuck[0]
        while cur not in walk:
            walk[cur] = len(walk)
            cur = next(j for j in raw_preds[cur] if j not in done)
        cycle = [nodes[j].name for j in list(walk)[walk[cur]:]]
        raise GraphError(f"graph has a cycle: node {cycle[0]!r} depends on itself through "
                         f"{' -> '.join(repr(c) for c in cycle[1:] + cycle[:1])}; tfplace needs "
                         "an acyclic function body (TF2 control flow, not TF1 loops)")
    return order


def _parse_inputs(refs: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    data: list[str] = []
    ctrl: list[str] = []
    for ref in refs:
        if ref.startswith("^"):
            ctrl.append(ref[1:])
        else:
            src, sep, k = ref.rpartition(":")
            data.append(ref if sep and k.isdigit() else ref + ":0")
    return tuple(data), tuple(ctrl)


# -- GraphDef reading (duck-typed protos) ---------------------------------------------------------
def _shape_of(sp: Any) -> tuple[int, ...] | None:
    if sp.unknown_rank:
        return None
    return tuple([d.size for d in sp.dim])


def _output_shapes(attr: Any) -> tuple[tuple[int, ...] | None, ...]:
    if "_output_shapes" not in attr:
        return ()
    return tuple([_shape_of(s) for s in attr["_output_shapes"].list.shape])


# Single-output ops name their output type in one of these, most specific first.
_SINGLE_TYPE_ATTRS = ("out_type", "output_type", "DstT", "dtype", "T", "Tout", "type")


def _out_dtypes(op: str, attr: Any, n_out: int) -> tuple[int, ...]:
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


def _resolve(shape: tuple[int, ...] | None, hint: int) -> tuple[int, ...] | None:
    if shape is None or not shape or min(shape) >= 0:
        return shape
    return tuple([d if d >= 0 else hint for d in shape])


def _nbytes(shape: tuple[int, ...] | None, dtype: int, hint: int) -> int:
    """Bytes of a tensor; `shape` must already be resolved (no unknown dims)."""
    size = DTYPE_BYTES.get(dtype % 100, DEFAULT_ELEMENT_BYTES)  # 101+ are TF1 ref types
    if size == 0:
        return 0
    return (hint if shape is None else math.prod(shape)) * size


def _cost_attrs(attr: Any) -> dict[str, Any]:
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


def _called_functions(attr: Any) -> list[str]:
    names: list[str] = []
    for key in sorted(attr.keys()):
        av = attr[key]
        kind = av.WhichOneof("value")
        if kind == "func":
            names.append(av.func.name)
        elif kind == "list":
            names.extend(f.name for f in av.list.func)
    return names


class _Flops:
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
            names = [op] if op in self.funcs else _called_functions(nd.attr)
            return math.fsum(self.function(n) for n in names)
        return costs.node_flops(op, _cost_attrs(nd.attr) if op in _ATTR_OPS else {},
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
            shapes[arg.name] = [_resolve(s, hint) for s in _output_shapes(aa)] or [None]
        for nd in fdef.node_def:
            shapes[nd.name] = [_resolve(s, hint) for s in _output_shapes(nd.attr)]
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


def _var_handle_bytes(attr: Any) -> int:
    shape = _shape_of(attr["shape"].shape) if "shape" in attr else ()
    dtype = int(attr["dtype"].type) if "dtype" in attr else 0
    return _nbytes(_resolve(shape, 1) or (), dtype if DTYPE_BYTES.get(dtype % 100) else 1, 1)


def analyse(graph_def: Any, variables: Sequence[Any] = (), *,
            batch_size_hint: int = 1) -> OpDag:
    """The op DAG of a GraphDef captured with add_shapes=True.

    variables: objects with `.node` (the resource Placeholder's name) and `.nbytes`.
    Unknown dimensions count as batch_size_hint; functional ops stay whole and cost the
    FLOPs of their function bodies.
    """
    if batch_size_hint < 1:
        from tfplace.errors import PlanError
        raise PlanError(f"batch_size_hint must be >= 1 (got {batch_size_hint})")
    with gc_paused():
        return _analyse(graph_def, variables, batch_size_hint)


def _analyse(graph_def: Any, variables: Sequence[Any], batch_size_hint: int) -> OpDag:
    hint = batch_size_hint
    var_bytes = {v.node: int(v.nbytes) for v in variables}
    flops = _Flops(getattr(graph_def, "library", None), hint)
    node_defs = list(graph_def.node)
    resolved: dict[str, list[tuple[int, ...] | None]] = {}
    raw_shapes: list[tuple[tuple[int, ...] | None, ...]] = []
    for nd in node_defs:
        shp = _output_shapes(nd.attr)
        raw_shapes.append(shp)
        resolved[nd.name] = [_resolve(s, hint) for s in shp]
    nodes: list[OpNode] = []
    for nd, shp in zip(node_defs, raw_shapes):
        attr = nd.attr
        op = nd.op
        data, ctrl = _parse_inputs(nd.input)
        dtypes = _out_dtypes(op, attr, len(shp))
        res = resolved[nd.name]
        out_bytes = tuple([_nbytes(s, t, hint) for s, t in zip(res, dtypes)])
        in_shapes: list[tuple[int, ...] | None] = []
        for ref in data:
            src, _, k = ref.rpartition(":")
            outs = resolved.get(src, ())
            ki = int(k)
            in_shapes.append(outs[ki] if ki < len(outs) else None)
        if op in ("VarHandleOp", "VarHandleOpV2"):
            param = var_bytes.get(nd.name, _var_handle_bytes(attr))
        else:
            param = var_bytes.get(nd.name, 0)
        coloc: tuple[str, ...] = ()
        if "_class" in attr:
            coloc = tuple(v.decode()[5:] if isinstance(v, bytes) else str(v)[5:]
                          for v in attr["_class"].list.s
                          if (v.decode() if isinstance(v, bytes) else str(v)).startswith("loc:@"))
        nodes.append(OpNode(name=nd.name, op=op, inputs=data, control_inputs=ctrl,
                            out_shapes=shp, out_dtypes=dtypes, out_bytes=out_bytes,
                            flops=float(flops.node(nd, in_shapes, res)),
                            param_bytes=param, colocate_with=coloc, device=nd.device))
    return OpDag(nodes)
