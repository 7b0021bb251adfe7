"""The Horovod pass: one replica per process (SPMD), Horovod's ops between gradients and updates.

Every process runs this same GraphDef; only Horovod's rank, read at run time, differs::

    x (GLOBAL batch) -> Reshape [N, B/N, ...] -> GatherV2(HorovodRank) -> the placed step
    bucket of dense grads -> flatten+concat -> HorovodAllreduce(Sum, postscale 1/N) -> split
    IndexedSlices         -> HorovodAllgather(values) * 1/N,  HorovodAllgather(indices)
    float output (loss)   -> HorovodAllreduce(Sum, postscale 1/N)  (the global-batch value)
    accumulator += delta  -> accumulator += HorovodAllreduce(Sum)(delta)   (Keras metrics)

Horovod matches a collective across processes by its node name; the pass is deterministic, so
the names agree in every process. The batch split is ``replicas.split_batch``'s: rank r reads
rows [r·B/N, (r+1)·B/N), as replica r of the "tf" backend does.
"""
from __future__ import annotations

from typing import Any, Sequence

from tfplace.errors import PlanError
from tfplace.rewrite.nodes import DT_INT32, FLOAT_TYPES, NodeBuilder

__all__ = ["apply", "SCOPE", "HOROVOD_OPS"]

SCOPE = "tfplace_hvd"
HOROVOD_OPS = ("HorovodAllreduce", "HorovodAllgather", "HorovodRank")
_REDUCE_SUM = 1          # horovod.common.basics ReduceOp: Average 0, Sum 1, Adasum 2, ...


def apply(graph_def: Any, spec: Any, *, summed: Sequence[str] = ()) -> Any:
    """A new GraphDef for one Horovod process of ``len(spec.groups)``; ``graph_def`` (one
    placed replica) is not modified. ``spec`` is the replication pass's ``ReplicationSpec``:
    its batch inputs, outputs, dense buckets and sparse (values, indices) marks. ``summed``:
    resource placeholders of accumulators (metric totals and counts) whose every increment is
    summed over the processes, so each process holds the global-batch totals."""
    size = len(spec.groups)
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    b = NodeBuilder(out, SCOPE)
    _shard_inputs(out, b, spec.batch_inputs, size)
    _sync_dense(out, b, spec.dense, size)
    _sync_sparse(out, b, spec.sparse, size)
    _sum_accumulators(out, b, summed)
    _average_outputs(out, b, spec.outputs, size)
    return out


def _by_name(gd: Any) -> dict[str, Any]:
    return {n.name: n for n in gd.node}


def _src(inp: str) -> str:
    return inp.lstrip("^").partition(":")[0]


def _redirect(gd: Any, old: str, new: str, *, skip: Sequence[str] = ()) -> None:
    """Every input that reads ``old`` (any output, or its control edge) reads ``new`` instead."""
    keep = set(skip)
    for n in gd.node:
        if n.name in keep:
            continue
        for i, inp in enumerate(n.input):
            if _src(inp) == old:
                ctrl = "^" if inp.startswith("^") else ""
                n.input[i] = ctrl + new + inp.lstrip("^")[len(old):]


def _horovod(b: NodeBuilder, base: str, op: str, x: str, dtype: int, device: str,
             postscale: float | None = None) -> str:
    """A HorovodAllreduce (Sum, then times ``postscale``) or HorovodAllgather NodeDef, with the
    attributes Horovod 0.28's op registration gives it."""
    name = b.add(base, op, [x], device, T=dtype)
    _horovod_attrs(b._node(name), postscale)
    return name


def _horovod_attrs(node: Any, postscale: float | None) -> None:
    node.attr["process_set_id"].i = 0
    node.attr["ignore_name_scope"].b = False
    if postscale is not None:
        node.attr["reduce_op"].i = _REDUCE_SUM
        node.attr["prescale_factor"].f = 1.0
        node.attr["postscale_factor"].f = postscale


def _rank(b: NodeBuilder, device: str) -> str:
    name = f"{SCOPE}/rank"
    if name not in b._names:
        b._names.add(name)
        node = b.gd.node.add()
        node.name, node.op, node.device = name, "HorovodRank", device
    return name


def _shard_inputs(out: Any, b: NodeBuilder, batch_inputs: Sequence[str], size: int) -> None:
    """The placeholder takes the global batch; the step reads this rank's rows of it."""
    nodes = _by_name(out)
    for name in batch_inputs:
        ph = nodes.get(name)
        if ph is None or ph.op != "Placeholder":
            raise PlanError(f"input {name!r} is not a placeholder of this graph")
        dims = ph.attr["shape"].shape.dim
        per = int(dims[0].size) if dims else 0        # -1: any batch that splits evenly
        rest = [int(d.size) for d in dims[1:]]
        if ph.attr["shape"].shape.unknown_rank or not dims or \
                sum(1 for d in (per, *rest) if d < 0) > 1:
            raise PlanError(f"input {name!r} has shape {[per, *rest] if dims else 'unknown'}; "
                            "the Horovod backend splits the batch by rank and needs every "
                            "dimension but the batch known (trace with fixed input shapes)")
        if per > 0:
            dims[0].size = per * size
        if "_output_shapes" in ph.attr:
            del ph.attr["_output_shapes"]
        dtype, dev = ph.attr["dtype"].type, ph.device
        grouped = b.add(f"ranks_{name}", "Reshape",
                        [name, b.const_ints("shape", [size, per, *rest], dev)], dev,
                        T=dtype, Tshape=DT_INT32)
        shard = b.add(f"shard_{name}", "GatherV2", [grouped, _rank(b, dev), b._axis0(dev)], dev)
        node = b._node(shard)
        node.attr["Tparams"].type = dtype
        node.attr["Tindices"].type = DT_INT32
        node.attr["Taxis"].type = DT_INT32
        node.attr["batch_dims"].i = 0
        _redirect(out, name, shard, skip=(grouped,))


def _shape(node: Any) -> list[int]:
    shapes = node.attr["_output_shapes"].list.shape
    if not shapes or shapes[0].unknown_rank or any(d.size < 0 for d in shapes[0].dim):
        raise PlanError(f"gradient {node.name!r} has no static shape; data parallelism needs "
                        "static gradient shapes (trace with fixed input shapes)")
    return [int(d.size) for d in shapes[0].dim]


def _sync_dense(out: Any, b: NodeBuilder, buckets: Sequence[Sequence[str]], size: int) -> None:
    """One HorovodAllreduce per planned bucket (the plan's fusion), mean = Sum times 1/N."""
    nodes = _by_name(out)
    for bucket in buckets:
        marks = [nodes[m] for m in bucket]
        dtype, dev = marks[0].attr["T"].type, marks[0].device
        if dtype not in FLOAT_TYPES:
            raise PlanError(f"gradient {bucket[0]!r} has dtype enum {dtype}; gradient sync "
                            "supports float32 and float64")
        shapes = [_shape(m) for m in marks]
        sizes = [max(1, _prod(s)) for s in shapes]
        flat = b.concat([b.flatten(m.input[0], dtype, dev) for m in marks], dtype, dev)
        mean = _horovod(b, "allreduce", "HorovodAllreduce", flat, dtype, dev, 1.0 / size)
        for mark, piece, shape in zip(marks, b.split(mean, sizes, dtype, dev), shapes):
            mark.input[0] = b.reshape(piece, shape, dtype, dev)


def _sync_sparse(out: Any, b: NodeBuilder, sparse: Sequence[tuple[str, str]], size: int) -> None:
    """IndexedSlices: every rank's values (scaled by 1/N) and indices, gathered; not densified."""
    nodes = _by_name(out)
    changed: list[str] = []
    for values, indices in sparse:
        vm, im = nodes[values], nodes[indices]
        vt, it = vm.attr["T"].type, im.attr["T"].type
        gathered = _horovod(b, "allgather_values", "HorovodAllgather", vm.input[0], vt,
                            vm.device)
        vm.input[0] = b.scale(gathered, 1.0 / size, vt, vm.device)
        im.input[0] = _horovod(b, "allgather_indices", "HorovodAllgather", im.input[0], it,
                               im.device)
        changed += [vm.name, im.name]
    # N times more rows flow downstream now: drop the shape hints the importer would check
    consumers: dict[str, list[str]] = {}
    for n in out.node:
        for inp in n.input:
            consumers.setdefault(_src(inp), []).append(n.name)
    seen, todo = set(changed), list(changed)
    while todo:
        node = nodes.get(todo.pop())
        if node is None:
            continue
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
        for c in consumers.get(node.name, ()):
            if c not in seen:
                seen.add(c)
                todo.append(c)


def _sum_accumulators(out: Any, b: NodeBuilder, summed: Sequence[str]) -> None:
    """``v.assign(v + delta)`` (Keras 3) or ``AssignAddVariableOp(v, delta)`` on an accumulator:
    the delta becomes its sum over the processes."""
    nodes, resources = _by_name(out), set(summed)
    for n in list(out.node):
        if n.op not in ("AssignVariableOp", "AssignAddVariableOp") or \
                _src(n.input[0]) not in resources:
            continue
        var = _src(n.input[0])
        if n.op == "AssignAddVariableOp":
            n.input[1] = _horovod(b, "sum_delta", "HorovodAllreduce", n.input[1],
                                  n.attr["dtype"].type, n.device, 1.0)
            continue
        add = nodes.get(_src(n.input[1]))
        reads = [i for i, inp in enumerate(add.input[:2]) if nodes[_src(inp)].op ==
                 "ReadVariableOp" and _src(nodes[_src(inp)].input[0]) == var] \
            if add is not None and add.op in ("Add", "AddV2") else []
        if add is None or not reads:
            raise PlanError(f"accumulator {var!r} is written by {n.name!r} in a way the Horovod "
                            "backend cannot sum over processes (it handles v.assign(v + x) and "
                            "v.assign_add(x))")
        k = 1 - reads[0]
        add.input[k] = _horovod(b, "sum_delta", "HorovodAllreduce", add.input[k],
                                add.attr["T"].type, add.device, 1.0)


def _average_outputs(out: Any, b: NodeBuilder, outputs: Sequence[str], size: int) -> None:
    """A float output keeps its name but becomes the mean over ranks of this rank's value;
    other outputs (step counters) stay this rank's."""
    done: set[str] = set()
    for tensor in outputs:
        name, _, idx = tensor.partition(":")
        if name in done:
            continue
        if idx not in ("", "0"):
            raise PlanError(f"output {tensor!r}: only first outputs of nodes can be averaged "
                            "across Horovod processes")
        src = _by_name(out)[name]
        dtype = src.attr["T"].type if "T" in src.attr else src.attr["dtype"].type
        if dtype not in FLOAT_TYPES:
            continue
        local = b.name(f"local/{name}")
        _redirect(out, name, local)
        for n in out.node:
            if "_class" in n.attr:
                refs = n.attr["_class"].list.s
                for i, ref in enumerate(refs):
                    if ref == f"loc:@{name}".encode():
                        refs[i] = f"loc:@{local}".encode()
        src.name = local
        mean = out.node.add()
        mean.name, mean.op, mean.device = name, "HorovodAllreduce", src.device
        mean.input.append(local)
        mean.attr["T"].type = dtype
        _horovod_attrs(mean, 1.0 / size)
        done.add(name)


def _prod(shape: Sequence[int]) -> int:
    p = 1
    for d in shape:
        p *= d
    return p
