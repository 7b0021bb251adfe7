"""The parameter-server pass: after replication, each trained variable lives once, on its PS shard.

    replica 0 (the PS side)                         replica r > 0 (a worker)
    ps(v) : v   read -> forward ... -> grad_r0 ─┐     read_r := Identity(read of v on ps(v))
            ^                                   ├─ sum / R on ps(v) (the ``central`` reducer)
            └── optimizer update (Adam, ...) <──┘     forward ... -> grad_r  ──> pushed to ps(v)
                                                        (no copy of v, no update of its own)

A variable is "trained" when one of its writes depends on a synced gradient (the weights and
their optimizer slots); its PS shard is the aggregation device of that gradient's bucket, so
variables are sharded across the replicas' leader devices balanced by gradient bytes. Every op
that touches such a variable moves to its shard (TF runs resource ops where the resource is),
and so does the update arithmetic that only feeds its writes. Replicas r > 0 lose their copy of
the variable and every write to it: their reads become copies of replica 0's reads of the same
value (taken before the update, as on one device), and their now-unused update arithmetic is
pruned by TF. Other variables (an iteration counter, metric totals) stay per replica.
"""
from __future__ import annotations

from typing import Any, Iterable

from tfplace.errors import PlanError

__all__ = ["apply", "READ_OPS"]

READ_OPS = frozenset({"ReadVariableOp"})
_DT_RESOURCE = 20


def _src(inp: str) -> str:
    return inp.lstrip("^").split(":")[0]


def _closure(start: Iterable[str], edges: dict[str, list[str]],
             within: set[str] | None = None) -> set[str]:
    """``start`` and what ``edges`` reach from it; with ``within``, through those nodes only."""
    seen = set(start)
    todo = list(seen)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen and (within is None or nxt in within):
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _reach_new(start: str, edges: dict[str, list[str]], seen: set[str]) -> set[str]:
    """What ``edges`` reach from ``start`` (itself included) that is not in ``seen`` yet;
    ``seen`` gains it. A node in ``seen`` is not entered: all it reaches is in ``seen`` too."""
    if start in seen:
        return set()
    new = {start}
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen and nxt not in new:
                new.add(nxt)
                todo.append(nxt)
    seen |= new
    return new


def _bytes(node: Any) -> int:
    if "_output_shapes" not in node.attr:        # (reading a missing map key would add it)
        return 0
    shapes = node.attr["_output_shapes"].list.shape
    n = 4
    for d in shapes[0].dim if shapes else ():
        n *= max(int(d.size), 1)
    return n


def homes(graph_def: Any, spec: Any, flow: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Base placeholder name -> PS shard device, for every trained resource variable."""
    nodes = {n.name: n for n in graph_def.node}
    consumers = _flow(graph_def) if flow is None else flow
    mark_home: dict[str, str] = {}
    load = {t: 0 for t in spec.ps_targets} or {spec.groups[0][0]: 0}
    for bucket, target in zip(spec.dense, spec.ps_targets):
        for m in bucket:
            mark_home[m] = target
            load[target] += _bytes(nodes[f"tfplace_r0/{m}"])
    for values, indices in spec.sparse:        # sparse gradients: to the least-loaded shard
        dev = min(load, key=lambda d: (load[d], d))
        load[dev] += _bytes(nodes[f"tfplace_r0/{values}"])
        mark_home[values] = mark_home[indices] = dev
    out: dict[str, str] = {}
    # a variable's home is that of the first mark (sorted) reaching one of its writes; each
    # node is visited once, by the first mark that reaches it (was a full walk per mark)
    reached: set[str] = set()
    for mark in sorted(mark_home):
        for name in sorted(_reach_new(f"tfplace_r0/{mark}", consumers, reached)):
            node = nodes[name]
            if node.op in READ_OPS or not node.input:
                continue
            var = nodes.get(_src(node.input[0]))
            if var is not None and var.op == "Placeholder" and \
                    var.attr["dtype"].type == _DT_RESOURCE:
                base = var.name.partition("/")[2]
                out.setdefault(base, mark_home[mark])
    return out


def apply(graph_def: Any, spec: Any) -> Any:
    """A new GraphDef where every trained variable of ``graph_def`` (the output of the
    replication pass with method "ps") lives only on its PS shard; the input is not modified."""
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    _split_identity_n(out)
    consumers, producers = _edges(out)
    flow = _flow(out, consumers)
    home = homes(out, spec, flow)
    nodes = {n.name: n for n in out.node}
    marks = {f"tfplace_r0/{m}" for b in spec.dense for m in b} | \
            {f"tfplace_r0/{m}" for pair in spec.sparse for m in pair}
    downstream = _closure(marks, flow)
    before = {m: nodes[m].device for m in marks}
    shard_of: dict[str, set[str]] = {}         # update arithmetic -> shards it feeds
    removed: set[str] = set()
    for base, dev in sorted(home.items()):
        ph0 = nodes[f"tfplace_r0/{base}"]
        ph0.device = dev
        users = consumers.get(ph0.name, [])
        for u in users:                         # resource ops run where the resource is
            nodes[u].device = dev
        writes = [u for u in users if nodes[u].op not in READ_OPS]
        # (``downstream`` is closed under data consumers: no node outside it has an
        # ancestor inside it, so the walk up from the writes may stay inside)
        for name in _closure([w for w in writes if w in downstream], producers, downstream):
            shard_of.setdefault(name, set()).add(dev)
        for r in range(1, len(spec.groups)):
            ph = f"tfplace_r{r}/{base}"
            removed.add(ph)
            for u in consumers.get(ph, []):
                if nodes[u].op in READ_OPS:
                    _become_copy(nodes[u], "tfplace_r0/" + u.partition("/")[2])
                else:
                    removed.add(u)
    for name, devs in shard_of.items():
        if len(devs) == 1:
            nodes[name].device = next(iter(devs))
    for mark in marks:
        _pull_sync_chain(nodes, mark, before[mark], producers)
    consumers, _ = _edges(out)
    for name in sorted(removed):
        users = [c for c in consumers.get(name, []) if c not in removed]
        if users:
            raise PlanError(f"parameter-server sync cannot drop {name!r} from the replicas: "
                            f"{users[0]!r} uses its output; use sync='ring' for this step")
    _drop(out, removed)
    return out


def _split_identity_n(gd: Any) -> None:
    """Keras passes all gradients through one IdentityN; give each its own Identity so that a
    gradient's path to its variable's update does not run through every other gradient."""
    used = {_src(i) for n in gd.node for i in n.input if not i.startswith("^")}
    # (one split before, e.g. a pipeline's micro-batches, leaves an unused IdentityN behind)
    multi = {n.name: n for n in gd.node if n.op == "IdentityN" and n.name in used}
    if not multi:
        return
    for n in gd.node:
        for k, inp in enumerate(n.input):
            if inp.startswith("^"):
                continue
            name, _, idx = inp.partition(":")
            if name in multi:
                n.input[k] = f"{name}/tfplace_part_{int(idx or 0)}"
    for name, node in multi.items():
        types = list(node.attr["T"].list.type)
        for i, inp in enumerate(i for i in node.input if not i.startswith("^")):
            part = gd.node.add()
            part.name, part.op, part.device = f"{name}/tfplace_part_{i}", "Identity", node.device
            part.input.append(inp)
            part.input.extend(c for c in node.input if c.startswith("^"))
            part.attr["T"].type = types[i]


def _edges(gd: Any) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    consumers: dict[str, list[str]] = {}
    producers: dict[str, list[str]] = {}
    for n in gd.node:
        for inp in n.input:
            if not inp.startswith("^"):
                consumers.setdefault(_src(inp), []).append(n.name)
                producers.setdefault(n.name, []).append(_src(inp))
    return consumers, producers


def _flow(gd: Any, data: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Data edges (``data``: consumers from ``_edges``, not modified), plus read-after-write
    control edges on the same variable: an optimizer reads a slot it has just assigned (Adam's
    m and v) through a control dependency."""
    nodes = {n.name: n for n in gd.node}
    consumers = {k: list(v) for k, v in (_edges(gd)[0] if data is None else data).items()}
    for n in gd.node:
        if n.op in READ_OPS:
            for inp in n.input:
                w = nodes.get(_src(inp))
                if inp.startswith("^") and w is not None and w.op not in READ_OPS and \
                        w.input and n.input and _src(w.input[0]) == _src(n.input[0]):
                    consumers.setdefault(_src(inp), []).append(n.name)
    return consumers


def _pull_sync_chain(nodes: dict[str, Any], mark: str, old: str,
                     producers: dict[str, list[str]]) -> None:
    """Replica 0's copy of the mean gradient (reshape <- split <- read for a bucket, scale <-
    concat for IndexedSlices) is built where the mark now is, not on replica 0's own device and
    sent back again."""
    dev = nodes[mark].device
    todo = [mark]
    while todo:
        for p in producers.get(todo.pop(), []):
            if p.startswith("tfplace_sync/") and nodes[p].device == old != dev:
                nodes[p].device = dev
                todo.append(p)


def _drop(gd: Any, removed: set[str]) -> None:
    kept = [n for n in gd.node if n.name not in removed]
    del gd.node[:]
    gd.node.extend(kept)
    for n in gd.node:
        if any(i.startswith("^") and _src(i) in removed for i in n.input):
            inputs = [i for i in n.input if not (i.startswith("^") and _src(i) in removed)]
            del n.input[:]
            n.input.extend(inputs)
        if "_class" in n.attr:
            vals = [v for v in n.attr["_class"].list.s
                    if (v.decode() if isinstance(v, bytes) else v)[5:] not in removed]
            del n.attr["_class"].list.s[:]
            n.attr["_class"].list.s.extend(vals)
            if not vals:
                del n.attr["_class"]


def _become_copy(node: Any, source: str) -> None:
    """A replica's read of a PS variable -> a copy of replica 0's read of the same value."""
    dtype = node.attr["dtype"].type
    shapes = None
    if "_output_shapes" in node.attr:
        shapes = type(node.attr["_output_shapes"])()
        shapes.CopyFrom(node.attr["_output_shapes"])
    controls = [i for i in node.input if i.startswith("^")]
    node.op = "Identity"
    del node.input[:]
    node.input.append(source)
    node.input.extend(controls)
    for key in list(node.attr):
        del node.attr[key]
    node.attr["T"].type = dtype
    if shapes is not None:
        node.attr["_output_shapes"].CopyFrom(shapes)
