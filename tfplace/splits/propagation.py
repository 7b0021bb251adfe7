"""Layout propagation: the layouts of every tensor of a step from its variables' requested splits.

One pass over the op DAG in topological order, forward and backward ops alike:

    variables (requested S, tied slots)      B for every other source (inputs, constants)
        -> each op with a non-B input weighs its signatures:
           cost = compute share x FLOPs / flops_per_second
                + bytes of boxing its inputs (a conversion already made is free) / bytes_per_second
        -> the cheapest wins (ties: the rule's order); its input conversions become boxing steps
        -> a P output read by several ops is all-reduced once, right away (one sync, not one
           per reader)
    then slices move upstream into whole ops that can produce the slice themselves (an
    embedding gradient's masked segment sum), and fetched outputs are boxed to B.

Ops whose inputs are all B stay whole (B). A non-B input is either taken as it is or made whole
(B): whole inputs may be sliced or zero-filled locally, but activations are not re-split
(P->S reduce-scatter, S(i)->S(j) all-to-all) unless reshard=True, which weighs every
conversion. Without it a row-parallel layer's P is all-reduced as in Megatron, rather than
reduce-scattered into a batch split that would turn the next unsplit weight's gradient into
partial sums to all-reduce. Resource handles carry their variable's layout and
are never boxed, so the optimizer update of a split variable is local exactly when its gradient
reaches it in the variable's layout.
"""
from __future__ import annotations

import heapq
from typing import Any, Mapping, Protocol, Sequence

from tfplace.analysis import OpDag, OpNode, split_input
from tfplace.errors import PlanError, bullets
from tfplace.splits.boxing import choose_boxing
from tfplace.splits.layout import B, Layout, parse_layout
from tfplace.splits.signatures import (DT_RESOURCE, OpContext, Signature, fits, format_signature,
                                       signatures)
from tfplace.splits.slots import tied_variables
from tfplace.splits.splitplan import BoxingStep, SplitOp, SplitPlan, VariableShard

__all__ = ["VariableLike", "propagate", "FLOPS_PER_SECOND", "BYTES_PER_SECOND"]

FLOPS_PER_SECOND = 1e10           # one core's order of magnitude
BYTES_PER_SECOND = 1e9            # a loopback / 10 GbE link's order of magnitude
FETCH = ""                        # consumer name of a fetched output's boxing step


class VariableLike(Protocol):
    """What propagation needs of a variable (tfplace.capture.CapturedVariable fits)."""

    @property
    def node(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...


def propagate(dag: OpDag, splits: Mapping[str, Layout | str], *, devices: Sequence[str],
              variables: Sequence[VariableLike],
              attrs: Mapping[str, Mapping[str, Any]] | None = None,
              outputs: Sequence[str] = (),
              flops_per_second: float = FLOPS_PER_SECOND,
              bytes_per_second: float = BYTES_PER_SECOND,
              reshard: bool = False, fence: frozenset[str] = frozenset()) -> SplitPlan:
    """The SplitPlan of `dag` on the device group `devices`.

    splits: {variable name or resource node: layout}, e.g. from resolve_splits(). attrs:
    {node name: {attr: value}} as node_attrs(graph_def) returns (transposes, equations, data
    formats, constant axes); without it MatMuls count as untransposed and reductions over
    unknown axes stay whole. outputs: the step's fetched tensors ("node:0"), boxed to B.
    reshard: also weigh re-splitting conversions of activations (see the module docstring).
    fence: ops that stay whole whatever their inputs (other pipeline stages' ops, split on
    their own groups): their non-B inputs are boxed to B.
    """
    group = tuple(devices)
    n = len(group)
    if n < 1 or len(set(group)) != n:
        raise PlanError(f"a split needs a group of distinct devices (got {list(group)})")
    layouts = _variable_layouts(dag, splits, variables, n)
    prop = _Propagation(dag, layouts, n, attrs or {}, flops_per_second, bytes_per_second,
                        reshard)
    prop.fence = fence
    return prop.run(group, variables, outputs)


def _variable_layouts(dag: OpDag, splits: Mapping[str, Layout | str],
                      variables: Sequence[VariableLike], n: int) -> dict[str, Layout]:
    """{resource node: layout} for the requested variables and the slots tied to them."""
    by_key = {v.name: v for v in variables} | {v.node: v for v in variables}
    problems, chosen = [], {}
    for key, raw in splits.items():
        var = by_key.get(key)
        if var is None:
            problems.append(f"{key!r} is not a variable of this step (variables: "
                            f"{', '.join(sorted(v.name for v in variables)[:10]) or 'none'})")
            continue
        lay = parse_layout(raw)
        try:
            lay.shard_shape(tuple(var.shape), n)
        except PlanError as e:
            problems.append(f"{var.name!r}: {e}")
            continue
        chosen[var.node] = lay
    shapes = {v.node: tuple(v.shape) for v in variables}
    names = {v.node: v.name for v in variables}
    for group in tied_variables(dag, [v.node for v in variables if v.node in dag.index]):
        requested = [v for v in group if v in chosen]
        asked = {chosen[v] for v in requested}
        if len(asked) > 1:
            problems.append(f"variables {', '.join(repr(names[v]) for v in group)} are updated "
                            f"together but asked for different layouts "
                            f"({', '.join(sorted(map(str, asked)))}); give them one layout")
        elif asked:
            lay = asked.pop()
            for v in group:                 # slots of the requested variable's shape follow it
                if v not in chosen and shapes[v] == shapes[requested[0]]:
                    chosen[v] = lay
    if problems:
        raise PlanError(bullets("cannot split these variables:", problems))
    return chosen


class _Propagation:
    def __init__(self, dag: OpDag, var_layouts: dict[str, Layout], n: int,
                 attrs: Mapping[str, Mapping[str, Any]], fps: float, bps: float,
                 reshard: bool) -> None:
        self.dag, self.var_layouts, self.n, self.attrs = dag, var_layouts, n, attrs
        self.fps, self.bps, self.reshard = fps, bps, reshard
        self.layout: dict[tuple[int, int], Layout] = {}
        self.boxing: dict[tuple[str, Layout], BoxingStep] = {}
        self.ops: list[SplitOp] = []
        self.fence: frozenset[str] = frozenset()

    def run(self, group: tuple[str, ...], variables: Sequence[VariableLike],
            outputs: Sequence[str]) -> SplitPlan:
        for i, node in enumerate(self.dag.nodes):
            self._visit(i, node)
        fetched = {f"{name}:{k}" for name, k in map(split_input, outputs)}
        self._hoist_slices(fetched)
        for ref in outputs:
            name, k = split_input(ref)
            if name not in self.dag.index:
                raise PlanError(f"fetched output {ref!r} is not in the graph")
            self._box(f"{name}:{k}", self.dag.index[name], k, B, FETCH)
        shards = tuple(VariableShard(v.name, v.node, lay, group,
                                     (lay.shard_shape(tuple(v.shape), self.n),) * self.n)
                       for v in sorted(variables, key=lambda v: v.name)
                       if (lay := self.var_layouts.get(v.node, B)) != B)
        ops = sorted(self.ops, key=lambda o: self.dag.index[o.name])
        return SplitPlan(devices=group, ops=tuple(ops), boxing=tuple(self.boxing.values()),
                         variables=shards)

    # -- slices move upstream ------------------------------------------------------------------
    def _hoist_slices(self, fetched: set[str]) -> None:
        """Run a whole op split instead of slicing its output, when every reader wants the
        slice and the op has a signature giving it from whole or sliced inputs (an embedding
        gradient's segment sum, a conv's input gradient): 1/n of the work and memory, no bytes.
        New slices of its inputs are tried in turn, latest producer first."""
        heap = [-self.dag.index[t.rsplit(":", 1)[0]] for (t, _), st in self.boxing.items()
                if st.collective == "slice"]
        heapq.heapify(heap)
        done: set[int] = set()
        while heap:
            i = -heapq.heappop(heap)
            if i in done:
                continue
            done.add(i)
            for j in self._hoist(i, fetched):
                heapq.heappush(heap, -j)

    def _hoist(self, i: int, fetched: set[str]) -> list[int]:
        node = self.dag.nodes[i]
        tensor = f"{node.name}:0"
        steps = [key for key in self.boxing if key[0] == tensor]
        if len(node.out_bytes) != 1 or len(steps) != 1 or tensor in fetched \
                or self.layout.get((i, 0), B) != B or node.name in self.var_layouts \
                or node.name in self.fence:
            return []
        step = self.boxing[steps[0]]
        readers = {self.dag.nodes[c].name for c in self.dag.tensor_consumers[i][0]}
        if step.collective != "slice" or set(step.consumers) != readers:
            return []
        refs = [split_input(r) for r in node.inputs]
        srcs = [(self.dag.index[name], k) for name, k in refs]
        cur = tuple(self.layout.get(s, B) for s in srcs)
        if any(lay != B for lay in cur):
            return []
        ctx = self._context(node, srcs, cur, 1)
        handles = {j for j in range(ctx.n_in) if ctx.is_resource(j)}
        sig = next((s for s in signatures(ctx) if s.outputs == (step.dst,) and fits(s, ctx, self.n)
                    and len(s.inputs) == ctx.n_in
                    and all(not lay.is_partial and (lay == B or j not in handles)
                            for j, lay in enumerate(s.inputs))), None)
        if sig is None:
            return []
        del self.boxing[steps[0]]
        self.layout[(i, 0)] = step.dst
        self.ops.append(SplitOp(node.name, node.op, sig.inputs, sig.outputs, sig.local))
        moved = []
        for (name, k), (j, _), want in zip(refs, srcs, sig.inputs):
            if want != B:
                self._box(f"{name}:{k}", j, k, want, node.name)
                moved.append(j)
        return moved

    # -- one op -------------------------------------------------------------------------------
    def _visit(self, i: int, node: OpNode) -> None:
        n_out = len(node.out_bytes)
        if node.name in self.var_layouts:
            self._set(i, (self.var_layouts[node.name],) * n_out)
            return
        refs = [split_input(r) for r in node.inputs]
        srcs = [(self.dag.index[name], k) for name, k in refs]
        cur = tuple(self.layout.get(s, B) for s in srcs)
        if all(lay == B for lay in cur):
            self._set(i, (B,) * n_out)
            return
        if node.name in self.fence:             # another group's op: whole inputs, whole op
            for (name, k), (j, _), have in zip(refs, srcs, cur):
                if have != B:
                    self._box(f"{name}:{k}", j, k, B, node.name)
            self._set(i, (B,) * n_out)
            return
        ctx = self._context(node, srcs, cur, n_out)
        sig = self._choose(node, ctx, srcs, cur)
        for (name, k), (j, _), have, want in zip(refs, srcs, cur, sig.inputs):
            if have != want:
                self._box(f"{name}:{k}", j, k, want, node.name)
        self.ops.append(SplitOp(node.name, node.op, sig.inputs, sig.outputs, sig.local))
        self._set(i, sig.outputs)
        for k in self._shared_partials(i, sig):
            readers = tuple(self.dag.nodes[c].name for c in self.dag.tensor_consumers[i][k])
            for reader in readers:
                self._box(f"{node.name}:{k}", i, k, B, reader)
            self.layout.pop((i, k), None)          # its readers see the reduced, whole tensor

    def _shared_partials(self, i: int, sig: Signature) -> list[int]:
        cons = self.dag.tensor_consumers[i]
        return [k for k, lay in enumerate(sig.outputs)
                if lay.is_partial and k < len(cons) and len(cons[k]) > 1]

    def _set(self, i: int, outs: tuple[Layout, ...]) -> None:
        for k, lay in enumerate(outs):
            if lay != B:
                self.layout[(i, k)] = lay

    def _context(self, node: OpNode, srcs: list[tuple[int, int]], cur: tuple[Layout, ...],
                 n_out: int) -> OpContext:
        nodes = self.dag.nodes
        in_shapes, dtypes, consts = [], [], []
        for j, k in srcs:
            src = nodes[j]
            in_shapes.append(src.out_shapes[k] if k < len(src.out_shapes) else None)
            resource = src.name in self.var_layouts or (
                k < len(src.out_dtypes) and src.out_dtypes[k] % 100 == DT_RESOURCE)
            dtypes.append(DT_RESOURCE if resource else
                          (src.out_dtypes[k] if k < len(src.out_dtypes) else 0))
            consts.append(self.attrs.get(src.name, {}).get("value") if src.op == "Const"
                          else None)
        out_shapes = tuple(node.out_shapes[:n_out]) + (None,) * (n_out - len(node.out_shapes))
        return OpContext(node.name, node.op, tuple(in_shapes), out_shapes,
                         self.attrs.get(node.name, {}), tuple(consts), tuple(dtypes), cur,
                         tuple(nodes[j].op for j, _ in srcs))

    def _choose(self, node: OpNode, ctx: OpContext, srcs: list[tuple[int, int]],
                cur: tuple[Layout, ...]) -> Signature:
        handles = [i for i in range(ctx.n_in) if ctx.is_resource(i)]
        legal = [s for s in signatures(ctx) if fits(s, ctx, self.n)
                 and len(s.inputs) == ctx.n_in and len(s.outputs) == ctx.n_out
                 and all(s.inputs[i] == cur[i] for i in handles)
                 and (self.reshard or all(w in (h, B) for h, w in zip(cur, s.inputs)
                                          if h != B))]
        if not legal:
            supported = "; ".join(format_signature(node.op, s) for s in signatures(ctx)
                                  if fits(s, ctx, self.n)) or "none"
            raise PlanError(f"op {node.name!r} ({node.op}) has no signature for inputs "
                            f"({', '.join(map(str, cur))}) on {self.n} devices; it supports: "
                            f"{supported}. Split the variables it reads another way, or leave "
                            "them unsplit")
        best, best_key = legal[0], (float("inf"), 0)
        i = self.dag.index[node.name]
        for s in legal:
            cost = s.compute_share(self.n) * node.flops / self.fps
            made: set[tuple[str, Layout]] = set()
            for (j, k), have, want in zip(srcs, cur, s.inputs):
                key = (f"{self.dag.nodes[j].name}:{k}", want)
                if have != want and key not in self.boxing and key not in made:
                    made.add(key)
                    cost += choose_boxing(have, want, self.n, self._bytes(j, k)).bytes / self.bps
            for k in self._shared_partials(i, s):
                cost += choose_boxing(s.outputs[k], B, self.n, self._bytes(i, k)).bytes / self.bps
            # on a tie, fewer partial outputs: they only defer a reduction
            rank = (cost, sum(lay.is_partial for lay in s.outputs))
            if rank < best_key:
                best, best_key = s, rank
        return best

    def _bytes(self, j: int, k: int) -> int:
        ob = self.dag.nodes[j].out_bytes
        return ob[k] if k < len(ob) else 0

    def _box(self, tensor: str, j: int, k: int, want: Layout, consumer: str) -> None:
        have = self.layout.get((j, k), B)
        if have == want:
            return
        step = self.boxing.get((tensor, want))
        if step is None:
            box = choose_boxing(have, want, self.n, self._bytes(j, k))
            step = BoxingStep(tensor, have, want, box.collective, box.bytes, self._bytes(j, k),
                              ())
        if consumer not in step.consumers:
            self.boxing[(tensor, want)] = BoxingStep(
                step.tensor, step.src, step.dst, step.collective, step.bytes, step.tensor_bytes,
                step.consumers + (consumer,))
