"""The op DAG: a captured GraphDef as topologically ordered nodes with shapes, bytes and FLOPs."""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from tfplace._perf import gc_paused
from tfplace.errors import GraphError
from tfplace.function_flops import FlopCounter
from tfplace.graphdef_attrs import (DT_RESOURCE, DT_VARIANT, DTYPE_BYTES, FUNCTIONAL_OPS,
                                    nbytes, out_dtypes, output_shapes, resolve, var_handle_bytes)

__all__ = ["OpNode", "OpDag", "analyse", "DTYPE_BYTES", "DT_RESOURCE", "DT_VARIANT",
           "FUNCTIONAL_OPS", "split_input"]



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
    flops = FlopCounter(getattr(graph_def, "library", None), hint)
    node_defs = list(graph_def.node)
    resolved: dict[str, list[tuple[int, ...] | None]] = {}
    raw_shapes: list[tuple[tuple[int, ...] | None, ...]] = []
    for nd in node_defs:
        shp = output_shapes(nd.attr)
        raw_shapes.append(shp)
        resolved[nd.name] = [resolve(s, hint) for s in shp]
    nodes: list[OpNode] = []
    for nd, shp in zip(node_defs, raw_shapes):
        attr = nd.attr
        op = nd.op
        data, ctrl = _parse_inputs(nd.input)
        dtypes = out_dtypes(op, attr, len(shp))
        res = resolved[nd.name]
        out_bytes = tuple([nbytes(s, t, hint) for s, t in zip(res, dtypes)])
        in_shapes: list[tuple[int, ...] | None] = []
        for ref in data:
            src, _, k = ref.rpartition(":")
            outs = resolved.get(src, ())
            ki = int(k)
            in_shapes.append(outs[ki] if ki < len(outs) else None)
        if op in ("VarHandleOp", "VarHandleOpV2"):
            param = var_bytes.get(nd.name, var_handle_bytes(attr))
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
