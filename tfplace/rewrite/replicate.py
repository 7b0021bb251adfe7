"""The replication pass: R copies of the placed step, the global batch split between them, and
gradient-sync nodes between every marked gradient and the optimizer update that reads it.

    x (global) -> Split -> tfplace_r0/x ... grad -> [bucket: flatten+concat -> all-reduce -> split]
                        -> tfplace_r1/x ... grad -> [          same bucket, same bytes          ]
    outputs: r*/loss -> AddN / R -> loss     (mean-reduced losses average to the full batch)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from tfplace.errors import PlanError
from tfplace.rewrite.allreduce import REDUCERS
from tfplace.rewrite.nodes import FLOAT_TYPES, NodeBuilder

__all__ = ["ReplicationSpec", "apply", "replica_name", "device_map"]

SCOPE = "tfplace_sync"


@dataclass(frozen=True)
class ReplicationSpec:
    groups: tuple[tuple[str, ...], ...]       # devices of each replica; the graph is on groups[0]
    batch_inputs: tuple[str, ...]             # arg placeholders split along dim 0
    shared_inputs: tuple[str, ...] = ()       # arg placeholders every replica reads whole
    outputs: tuple[str, ...] = ()             # "node:0" tensors averaged (float) or taken from r0
    dense: tuple[tuple[str, ...], ...] = ()   # buckets of dense gradient marks, in sync order
    sparse: tuple[tuple[str, str], ...] = ()  # (values mark, indices mark) of IndexedSlices
    method: str = "ring"
    ps_targets: tuple[str, ...] = ()          # per dense bucket, for method "ps"


def replica_name(r: int, name: str) -> str:
    return f"tfplace_r{r}/{name}"


def device_map(groups: Sequence[Sequence[str]], r: int) -> dict[str, str]:
    return dict(zip(groups[0], groups[r]))


def _src(inp: str) -> tuple[str, str, str]:
    """'^a' -> ('^', 'a', ''); 'a:1' -> ('', 'a', ':1'); 'a' -> ('', 'a', '')."""
    ctrl = "^" if inp.startswith("^") else ""
    body = inp[1:] if ctrl else inp
    name, sep, idx = body.partition(":")
    return ctrl, name, (sep + idx if sep else "")


def apply(graph_def: Any, spec: ReplicationSpec) -> Any:
    """A new GraphDef with len(spec.groups) replicas; ``graph_def`` is not modified."""
    R = len(spec.groups)
    out = type(graph_def)()
    out.library.CopyFrom(graph_def.library)
    out.versions.CopyFrom(graph_def.versions)
    nodes = {n.name: n for n in graph_def.node}
    batch, shared = set(spec.batch_inputs), set(spec.shared_inputs)
    for name in batch | shared:
        if name not in nodes or nodes[name].op != "Placeholder":
            raise PlanError(f"input {name!r} is not a placeholder of this graph")
    for n in graph_def.node:                     # global placeholders stay once, unreplicated
        if n.name in batch or n.name in shared:
            g = out.node.add()
            g.CopyFrom(n)
            g.device = ""
            dims = g.attr["shape"].shape.dim
            if n.name in batch and dims and dims[0].size > 0:
                dims[0].size *= R
            if "_output_shapes" in g.attr:
                del g.attr["_output_shapes"]
    b = NodeBuilder(out, SCOPE)
    split_of = {}
    for name in spec.batch_inputs:
        dtype = nodes[name].attr["dtype"].type
        s = b.add(f"split_{name}", "Split", [b._axis0(""), name], "", num_split=R, T=dtype)
        split_of[name] = s
    for r in range(R):
        dmap = device_map(spec.groups, r)
        for n in graph_def.node:
            if n.name in shared:
                continue
            c = out.node.add()
            c.CopyFrom(n)
            c.name = replica_name(r, n.name)
            c.device = dmap.get(n.device, n.device)
            if n.name in batch:                  # the replica's shard of the global batch
                c.op = "Identity"
                del c.input[:]
                c.input.append(f"{split_of[n.name]}:{r}")
                t = c.attr["dtype"].type
                for key in list(c.attr):
                    if key not in ("_output_shapes",):
                        del c.attr[key]
                c.attr["T"].type = t
                continue
            del c.input[:]
            for inp in n.input:
                ctrl, src, idx = _src(inp)
                c.input.append(inp if src in shared else f"{ctrl}{replica_name(r, src)}{idx}")
            if "_class" in c.attr:
                vals = [v.decode() if isinstance(v, bytes) else v for v in c.attr["_class"].list.s]
                del c.attr["_class"].list.s[:]
                c.attr["_class"].list.s.extend(
                    (f"loc:@{replica_name(r, v[5:])}" if v.startswith("loc:@") else v).encode()
                    for v in vals)
    _sync_dense(out, b, nodes, spec, R)
    _sync_sparse(out, b, nodes, spec, R)
    _combine_outputs(out, b, nodes, spec, R)
    if spec.method == "ps":
        from tfplace.rewrite import ps
        out = ps.apply(out, spec)
    return out


def _by_name(gd: Any) -> dict[str, Any]:
    return {n.name: n for n in gd.node}


def _shape(node: Any) -> list[int]:
    shapes = node.attr["_output_shapes"].list.shape
    if not shapes or shapes[0].unknown_rank or any(d.size < 0 for d in shapes[0].dim):
        raise PlanError(f"gradient {node.name!r} has no static shape; data parallelism needs "
                        "static gradient shapes (trace with fixed input shapes)")
    return [int(d.size) for d in shapes[0].dim]


def _sync_dense(out: Any, b: NodeBuilder, nodes: dict[str, Any], spec: ReplicationSpec,
                R: int) -> None:
    reduce = REDUCERS[spec.method]
    current = _by_name(out)
    for k, bucket in enumerate(spec.dense):
        dtype = nodes[bucket[0]].attr["T"].type
        if dtype not in FLOAT_TYPES:
            raise PlanError(f"gradient {bucket[0]!r} has dtype enum {dtype}; gradient sync "
                            "supports float32 and float64")
        shapes = [_shape(nodes[m]) for m in bucket]
        sizes = [max(1, _prod(s)) for s in shapes]
        flats, devices = [], []
        for r in range(R):
            dev = current[replica_name(r, bucket[0])].device
            parts = [b.flatten(current[replica_name(r, m)].input[0], dtype, dev) for m in bucket]
            flats.append(b.concat(parts, dtype, dev))
            devices.append(dev)
        kwargs: dict[str, Any] = {}
        if spec.method == "ps" and spec.ps_targets:
            kwargs["target"] = spec.ps_targets[k]
        elif spec.method == "collective":
            kwargs["group_key"] = _stable_key("group", *devices)
            # the bucket's length and dtype too: TF keeps one shape per instance key in a
            # process, so two steps whose gradients have the same names but other shapes (a
            # model rebuilt wider) must not share keys
            kwargs["instance_key"] = _stable_key("instance", str(k), str(sum(sizes)),
                                                 str(dtype), *bucket, *devices)
        means = reduce(b, flats, devices, sum(sizes), dtype, 1.0 / R, **kwargs)
        for r in range(R):
            pieces = b.split(means[r], sizes, dtype, devices[r])
            for m, piece, shape in zip(bucket, pieces, shapes):
                mark = current[replica_name(r, m)]
                mark.input[0] = b.reshape(piece, shape, dtype, devices[r])


def _sync_sparse(out: Any, b: NodeBuilder, nodes: dict[str, Any], spec: ReplicationSpec,
                 R: int) -> None:
    """IndexedSlices: all-gather values (scaled by 1/R) and indices; never densified here."""
    current = _by_name(out)
    changed: list[str] = []
    for values, indices in spec.sparse:
        vt, it = nodes[values].attr["T"].type, nodes[indices].attr["T"].type
        v_in = [current[replica_name(r, values)].input[0] for r in range(R)]
        i_in = [current[replica_name(r, indices)].input[0] for r in range(R)]
        for r in range(R):
            vm, im = current[replica_name(r, values)], current[replica_name(r, indices)]
            dev = vm.device
            vm.input[0] = b.scale(b.concat(v_in, vt, dev), 1.0 / R, vt, dev)
            im.input[0] = b.concat(i_in, it, im.device)
            changed += [vm.name, im.name]
    # R times more rows flow downstream now: drop the shape hints the importer would check
    consumers: dict[str, list[Any]] = {}
    for n in out.node:
        for inp in n.input:
            consumers.setdefault(_src(inp)[1], []).append(n)
    seen, todo = set(changed), list(changed)
    while todo:
        node = current.get(todo.pop())
        if node is None:
            continue
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
        for c in consumers.get(node.name, ()):
            if c.name not in seen:
                seen.add(c.name)
                todo.append(c.name)


def _combine_outputs(out: Any, b: NodeBuilder, nodes: dict[str, Any], spec: ReplicationSpec,
                     R: int) -> None:
    for tensor in spec.outputs:
        name, _, idx = tensor.partition(":")
        if idx not in ("", "0"):
            raise PlanError(f"output {tensor!r}: only first outputs of nodes can be combined")
        src = nodes[name]
        dtype = src.attr["T"].type if "T" in src.attr else src.attr["dtype"].type
        n = out.node.add()
        n.name = name
        if dtype in FLOAT_TYPES:
            total = b.add("out_sum", "AddN", [replica_name(r, name) for r in range(R)], "",
                          N=R, T=dtype)
            n.op = "Mul"
            n.input.extend([total, b.const_scalar("out_scale", 1.0 / R, dtype, "")])
        else:
            n.op = "Identity"
            n.input.append(replica_name(0, name))
        n.attr["T"].type = dtype


def _stable_key(*parts: str) -> int:
    """A positive 31-bit key that depends only on ``parts`` (stable across processes)."""
    import hashlib
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (2**31 - 2)


def _prod(shape: Sequence[int]) -> int:
    p = 1
    for d in shape:
        p *= d
    return p
