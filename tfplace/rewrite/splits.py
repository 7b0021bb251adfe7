"""The split pass: each op of a SplitPlan becomes one shard op per device of the group.

    whole op (not listed,   stays once, where the placement put it; a non-B input is made whole
      or all B)             on its device (all-gather / reduce): n copies of an update of a
                            whole variable would apply it n times
    split op (S or P)       n copies, copy k on group device k, reading each input in the
                            layout the plan gives it (boxing where the producer's differs)
    split variable          n resource placeholders, shard k on device k, tagged with the
                            SHARD_* attrs so the executor creates each from its slice

A tensor in a non-B layout exists only as its n per-device names; the fetched outputs are made
whole again under their own names.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Sequence

from tfplace.errors import GraphError
from tfplace.rewrite.nodes import DT_INT32, NodeBuilder
from tfplace.rewrite.splits_boxing import Boxer
from tfplace.rewrite.splits_local import LOCAL_REWRITES, ShardContext
from tfplace.splits.layout import B, Layout
from tfplace.splits.splitplan import SplitOp, SplitPlan

__all__ = ["apply", "SCOPE", "SHARD_OF", "SHARD_AXIS", "SHARD_INDEX", "SHARD_COUNT",
           "shard_name"]

SCOPE = "tfplace_split"
# attrs of a shard's resource placeholder: which captured variable node, along which axis,
# which of how many
SHARD_OF, SHARD_AXIS, SHARD_INDEX, SHARD_COUNT = ("_tfplace_shard_of", "_tfplace_shard_axis",
                                                  "_tfplace_shard_index", "_tfplace_shard_count")


def shard_name(k: int, name: str) -> str:
    return f"{SCOPE}/s{k}/{name}"


def _ref(inp: str) -> tuple[bool, str, int]:
    ctrl = inp.startswith("^")
    name, _, idx = inp.lstrip("^").partition(":")
    return ctrl, name, int(idx or 0)


def _tensor(name: str, k: int) -> str:
    return name if k == 0 else f"{name}:{k}"


def apply(graph_def: Any, plan: SplitPlan, *, outputs: Sequence[str] = (),
          collective: Callable[..., list[str]] | None = None) -> Any:
    """A new GraphDef running ``plan``'s split ops on its device group; ``graph_def`` (placed)
    is not modified. ``outputs``: the fetched tensors ("node:k"), whole under their names."""
    return _SplitPass(graph_def, plan, collective).run(outputs)


class _SplitPass:
    def __init__(self, graph_def: Any, plan: SplitPlan,
                 collective: Callable[..., list[str]] | None) -> None:
        self.src, self.plan = graph_def, plan
        self.nodes = {n.name: n for n in graph_def.node}
        self.devices, self.n = plan.devices, len(plan.devices)
        self.ops: dict[str, SplitOp] = {o.name: o for o in plan.ops}
        self.vars = {v.node: v for v in plan.variables}
        missing = [x for x in list(self.ops) + list(self.vars) if x not in self.nodes]
        if missing:
            raise GraphError(f"the split plan names nodes that are not in the graph "
                             f"({', '.join(missing[:5])}); re-plan the splits for this step")
        self.out = type(graph_def)()
        self.out.library.CopyFrom(graph_def.library)
        self.out.versions.CopyFrom(graph_def.versions)
        self.b = NodeBuilder(self.out, SCOPE)
        self.b._names |= set(self.nodes)
        self.boxer = Boxer(self.b, self.devices, collective)
        # "node:k" -> (layout, n names) for tensors that live on the group
        self.rep: dict[str, tuple[Layout, list[str]]] = {}
        self.converted: dict[tuple[str, Layout], list[str]] = {}
        self.whole: dict[tuple[str, str], str] = {}
        self.sharded: set[str] = set()            # original nodes replaced by shards
        self.replaced = set(self.vars) | {o.name for o in plan.ops if not _all_whole(o)}

    # -- driver -------------------------------------------------------------------------------
    def run(self, outputs: Sequence[str]) -> Any:
        for node in _topological(self.src):
            if node.name in self.vars:
                self._split_variable(node)
            elif node.name in self.ops and not _all_whole(self.ops[node.name]):
                self._split_op(node, self.ops[node.name])
            else:
                self._whole_op(node)
        for ref in outputs:
            _, name, _k = _ref(ref)
            if name in self.sharded:
                self._fetch(name)
        return self.out

    # -- the three kinds of node --------------------------------------------------------------
    def _split_variable(self, node: Any) -> None:
        v = self.vars[node.name]
        if v.layout.kind != "S" or tuple(v.devices) != self.devices:
            raise GraphError(f"variable {v.variable!r}: only S(axis) shards on the plan's group "
                             f"are supported (got {v.layout})")
        names = []
        for k, dev in enumerate(self.devices):
            ph = self.out.node.add()
            ph.CopyFrom(node)
            ph.name, ph.device = shard_name(k, node.name), dev
            for key in ("_class", "_output_shapes"):
                if key in ph.attr:
                    del ph.attr[key]
            ph.attr[SHARD_OF].s = node.name.encode()
            ph.attr[SHARD_AXIS].i = v.layout.axis
            ph.attr[SHARD_INDEX].i = k
            ph.attr[SHARD_COUNT].i = self.n
            names.append(ph.name)
        self.rep[f"{node.name}:0"] = (v.layout, names)
        self.sharded.add(node.name)

    def _split_op(self, node: Any, op: SplitOp) -> None:
        data = [i for i in node.input if not i.startswith("^")]
        if len(data) != len(op.inputs):
            raise GraphError(f"split op {node.name!r} has {len(data)} inputs but the plan gives "
                             f"{len(op.inputs)} layouts; re-plan the splits for this step")
        local = LOCAL_REWRITES.get(op.local) if op.local else None
        if op.local and local is None:
            raise GraphError(f"split op {node.name!r} ({node.op}) needs local work "
                             f"{op.local!r} that the rewrite does not implement yet")
        for k, dev in enumerate(self.devices):
            c = self.out.node.add()
            c.CopyFrom(node)
            c.name, c.device = shard_name(k, node.name), dev
            for key in ("_class", "_output_shapes"):
                if key in c.attr:
                    del c.attr[key]
            del c.input[:]
            for inp, want in zip(data, op.inputs):
                _, name, idx = _ref(inp)
                c.input.append(self._read(f"{name}:{idx}", want, k))
            c.input.extend(self._controls(node, k))
            if local is not None:
                local(ShardContext(self, node, op, c, k))
        for i, lay in enumerate(op.outputs):
            self.rep[f"{node.name}:{i}"] = (lay, [_tensor(shard_name(k, node.name), i)
                                                  for k in range(self.n)])
        self.sharded.add(node.name)

    def _whole_op(self, node: Any) -> None:
        c = self.out.node.add()
        c.CopyFrom(node)
        del c.input[:]
        for inp in node.input:
            ctrl, name, idx = _ref(inp)
            if ctrl:
                continue
            t = f"{name}:{idx}"
            c.input.append(self._whole_on(t, node.device) if t in self.rep else inp)
        c.input.extend(self._controls(node, None))
        if "_class" in c.attr:
            keep = [v for v in c.attr["_class"].list.s
                    if (v.decode() if isinstance(v, bytes) else v)[5:] not in self.replaced]
            del c.attr["_class"].list.s[:]
            c.attr["_class"].list.s.extend(keep)
            if not keep:
                del c.attr["_class"]

    def _controls(self, node: Any, k: int | None) -> list[str]:
        """Control inputs; one on a split op waits for its shard on device k (all shards for a
        whole op)."""
        out: list[str] = []
        for inp in node.input:
            ctrl, name, _ = _ref(inp)
            if not ctrl:
                continue
            if name in self.sharded:
                ks = range(self.n) if k is None else (k,)
                out += [f"^{shard_name(j, name)}" for j in ks]
            else:
                out.append(inp)
        return list(dict.fromkeys(out))

    def _fetch(self, name: str) -> None:
        node = self.nodes[name]
        n_out = sum(1 for t in self.rep if t.rsplit(":", 1)[0] == name)
        wholes = [self._whole_on(f"{name}:{i}", node.device) for i in range(n_out)]
        c = self.out.node.add()
        c.name, c.device = name, node.device
        c.input.extend(wholes)
        c.op = "IdentityN" if n_out > 1 else "Identity"
        if n_out > 1:
            c.attr["T"].list.type.extend(self.dtype(f"{name}:{i}") for i in range(n_out))
        else:
            c.attr["T"].type = self.dtype(f"{name}:0")

    # -- tensors ------------------------------------------------------------------------------
    def _read(self, t: str, want: Layout, k: int) -> str:
        """Shard k of tensor t in layout ``want``."""
        if t not in self.rep:
            if want == B:
                return _tensor(*_split_ref(t))
            names = [_tensor(*_split_ref(t))] * self.n
            have = B
        else:
            have, names = self.rep[t]
        if have == want:
            return names[k]
        key = (t, want)
        if key not in self.converted:
            if self.dtype(t) == 20:
                raise GraphError(f"resource {t!r} would need boxing from {have} to {want}")
            self.converted[key] = self.boxer.convert(names, have, want, self.dtype(t),
                                                     self.shape(t))
        return self.converted[key][k]

    def _whole_on(self, t: str, device: str) -> str:
        """The whole value of a group tensor for an op on ``device``."""
        have, names = self.rep[t]
        if have.is_broadcast:
            return names[self.devices.index(device)] if device in self.devices else names[0]
        if (t, B) in self.converted:                    # already all-reduced / gathered
            names = self.converted[(t, B)]
            return names[self.devices.index(device)] if device in self.devices else names[0]
        if self.dtype(t) == 20:
            raise GraphError(f"op on {device} reads split variable handle {t!r} whole")
        if have.is_partial and self.boxer.collective is not None:   # one all-reduce, shared
            names = [self._read(t, B, k) for k in range(self.n)]
            return names[self.devices.index(device)] if device in self.devices else names[0]
        key = (t, device)
        if key not in self.whole:
            if have.is_split:
                self.whole[key] = self.boxer.gather(names, have.axis, self.dtype(t), device)
            else:
                self.whole[key] = self.b.add("all_reduce", "AddN", list(names), device,
                                             N=self.n, T=self.dtype(t))
        return self.whole[key]

    # -- static facts of the original tensors -------------------------------------------------
    def dtype(self, t: str) -> int:
        name, k = _split_ref(t)
        return _dtype(self.nodes[name], k)

    def var_shape(self, t: str) -> tuple[int, ...]:
        """The whole shape of the split variable whose handle is ``t``."""
        v = self.vars[_split_ref(t)[0]]
        shape = list(v.shapes[0])
        shape[v.layout.axis] *= self.n
        return tuple(shape)

    def shape(self, t: str) -> list[int] | None:
        name, k = _split_ref(t)
        shapes = self.nodes[name].attr["_output_shapes"].list.shape
        if k >= len(shapes) or shapes[k].unknown_rank:
            return None
        return [int(d.size) for d in shapes[k].dim]


def _all_whole(op: SplitOp) -> bool:
    """An op listed with only B layouts runs once, as a whole op: n copies of an update of a
    whole variable would apply it n times."""
    return not op.local and all(lay == B for lay in op.inputs + op.outputs)


def _split_ref(t: str) -> tuple[str, int]:
    name, _, k = t.rpartition(":")
    return name, int(k)


def _dtype(node: Any, k: int) -> int:
    for key in ("T", "dtype", "Tparams", "out_type", "DstT", "Tout", "output_type"):
        if key in node.attr:
            attr = node.attr[key]
            if attr.list.type:
                return int(attr.list.type[k])
            if attr.type:
                return int(attr.type)
    if node.op in ("Shape", "Size") or "Tidx" in node.attr:
        return DT_INT32
    raise GraphError(f"cannot tell the dtype of output {k} of {node.name!r} ({node.op})")


def _topological(gd: Any) -> list[Any]:
    """The nodes, producers before consumers (data and control edges)."""
    nodes = {n.name: n for n in gd.node}
    indeg = {n.name: 0 for n in gd.node}
    users: dict[str, list[str]] = {}
    for n in gd.node:
        for inp in set(_ref(i)[1] for i in n.input):
            if inp in nodes:
                indeg[n.name] += 1
                users.setdefault(inp, []).append(n.name)
    ready = deque(n.name for n in gd.node if indeg[n.name] == 0)
    order = []
    while ready:
        name = ready.popleft()
        order.append(nodes[name])
        for u in users.get(name, ()):
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        raise GraphError("the graph has a cycle; the split pass needs an acyclic step")
    return order

