"""The pipelining queues: every tensor a stage hands to its neighbour goes through a bounded
channel on the receiving stage's device, with the capacity the plan gave that queue.

For queue (s -> s+1, forward) and micro-batch m (backward queues alike, s+1 -> s)::

    F(s, m) ops --data--> put_m  (channel device = stage s+1's)        put_m  after ^put_{m-1}
                          take_m --data--> F(s+1, m) ops (and B(s+1, m)'s uses of them)
    take_m is a root of its segment: it runs when stage s+1 reaches F(s+1, m) in its order
    done(F(s, m)) after ^take_{m - capacity}: the producer may be at most `capacity` items
    ahead of its consumer (the waits model: end(producer, i) waits on start(consumer, i - c))

One channel per tensor the two stages exchange (usually one: the activation, or its gradient),
an item per micro-batch. (A tuple of several would make its put wait for all of them, and the
peer may need one of them to produce another.)
Backends: ``"op"``, the C++ ``TfplaceChannel`` (custom_ops/channel.cc), or ``"fifo"``,
``FIFOQueueV2``. Both are unnamed, so each kernel instance has its own channel; the channels
outlive a step, and after a failed step (which may leave items queued) the executor traces the
step anew: new kernels, new empty channels.
Both put and take mark the handle read-only (``_read_only_resource_inputs``) so that
tf.function's automatic control dependencies do not chain them in import order.

With the op backend, each segment that puts something also waits for a ``TfplaceYield`` after
the put tensor's producer (``yields``): without it the segment's done NoOp, a cheap op, would
run inline right after that producer on the worker's one inter-op thread and start the next
segment, and the tensor's _Send would wait behind it (custom_ops/channel.cc, YieldOp).

Only neighbour queues are made (the ones the plan sized and the deadlock check saw); any other
cross-stage edge (labels to the last stage, tied weights) stays a plain TF edge.
"""
from __future__ import annotations

from typing import Any

from tfplace.errors import GraphError

__all__ = ["insert", "yields", "BACKENDS", "QUEUE_SCOPE", "YIELD_SCOPE", "channel_nodes"]

BACKENDS = ("op", "fifo")
QUEUE_SCOPE = "tfplace_pipeline/queue"
YIELD_SCOPE = "tfplace_pipeline/yield"
DT_RESOURCE = 20
_OPS = {"op": ("TfplaceChannel", "TfplaceChannelEnqueue", "TfplaceChannelDequeue"),
        "fifo": ("FIFOQueueV2", "QueueEnqueueV2", "QueueDequeueV2")}


def channel_nodes(graph_def: Any) -> list[str]:
    """Names of the queue resources in a rewritten GraphDef."""
    ops = {v[0] for v in _OPS.values()}
    return [n.name for n in graph_def.node if n.op in ops and n.name.startswith(QUEUE_SCOPE)]


def _tensor(inp: str) -> tuple[str, int]:
    name, _, k = inp.partition(":")
    return name, int(k or 0)


def _output_dtype(node: Any, index: int) -> int:
    """The DataType enum of output ``index`` of ``node``, from its registered OpDef."""
    from tensorflow.python.framework import op_def_registry
    op_def = op_def_registry.get(node.op)
    if op_def is None:
        raise GraphError(f"op {node.op!r} of node {node.name!r} is not registered; cannot "
                         "type the pipeline queue carrying its output")
    types: list[int] = []
    for arg in op_def.output_arg:
        if arg.type_list_attr:
            one = [int(t) for t in node.attr[arg.type_list_attr].list.type]
        else:
            t = int(arg.type) if arg.type else int(node.attr[arg.type_attr].type)
            one = [t] * (int(node.attr[arg.number_attr].i) if arg.number_attr else 1)
        types += one
    if index >= len(types):
        raise GraphError(f"node {node.name!r} ({node.op}) has {len(types)} outputs, "
                         f"not {index + 1}")
    return types[index]


def _base(name: str) -> str:
    return name.partition("/")[2]          # tfplace_r3/dense/MatMul -> dense/MatMul


def insert(graph_def: Any, segs: dict[tuple[int, str, int], list[str]], pipe: Any,
           backend: str) -> list[tuple[tuple[int, str, int], str]]:
    """Route the neighbour stages' tensors of ``graph_def`` (the unrolled pipeline, modified in
    place) through channels; the takes join their consumer segments in ``segs``. Returns the
    back-pressure edges to add once the segments' done NoOps exist: (producer segment, take)."""
    if backend not in BACKENDS:
        raise GraphError(f"unknown pipeline queue backend {backend!r} (use one of "
                         f"{', '.join(BACKENDS)})")
    nodes = {n.name: n for n in graph_def.node}
    seg_of = {name: key for key, names in segs.items() for name in names}
    orders = [{(op.kind, op.micro_batch): i for i, op in enumerate(order)}
              for order in pipe.orders()]
    capacity = {(q.src, q.dst): q.capacity for q in pipe.queues}
    # (src stage, dst stage) -> micro-batch -> tensor -> [(consumer, input index)]
    crossing: dict[tuple[int, int], dict[int, dict[str, list[tuple[str, int]]]]] = {}
    for n in graph_def.node:
        c = seg_of.get(n.name)
        if c is None:
            continue
        for idx, inp in enumerate(n.input):
            if inp.startswith("^"):
                continue
            src, k = _tensor(inp)
            p = seg_of.get(src)
            if p is None or p[0] == c[0] or p[2] != c[2]:
                continue
            step = 1 if p[1] == "F" else -1
            if c[0] != p[0] + step or _output_dtype(nodes[src], k) == DT_RESOURCE:
                continue
            crossing.setdefault((p[0], c[0]), {}).setdefault(p[2], {}).setdefault(
                f"{src}:{k}", []).append((n.name, idx))
    pressure: list[tuple[tuple[int, str, int], str]] = []
    for (a, b), items in sorted(crossing.items()):
        kind = "F" if b == a + 1 else "B"
        # one channel per tensor: a tuple would make its put wait for all of them, and one of
        # them may need (through the peer) what another one carries
        by_base: dict[str, dict[int, dict[str, list[tuple[str, int]]]]] = {}
        for m, tensors in items.items():
            for t, uses in tensors.items():
                by_base.setdefault(f"{_base(t.split(':')[0])}:{t.split(':')[1]}", {}) \
                    .setdefault(m, {})[t] = uses
        for j, base in enumerate(sorted(by_base)):
            pressure += _channel(graph_def, nodes, segs, orders, pipe, a, b, kind,
                                 by_base[base], capacity.get((a, b), 1), backend,
                                 f"{QUEUE_SCOPE}/{kind}{a}to{b}" + (f"_{j}" if j else ""))
    return pressure


def yields(graph_def: Any, segs: dict[tuple[int, str, int], list[str]]
           ) -> dict[tuple[int, str, int], list[str]]:
    """A ``TfplaceYield`` after every producer of a put tensor, on its device (``graph_def``
    modified in place). Returns segment -> the yields its done NoOp must also wait for."""
    seg_of = {name: key for key, names in segs.items() for name in names}
    nodes = {n.name: n for n in graph_def.node}
    producers = sorted({_tensor(inp)[0] for n in graph_def.node
                        if n.op == _OPS["op"][1] and n.name.startswith(QUEUE_SCOPE)
                        for inp in n.input[1:] if not inp.startswith("^")})
    out: dict[tuple[int, str, int], list[str]] = {}
    for i, src in enumerate(producers):
        key = seg_of.get(src)
        if key is None:
            continue
        y = graph_def.node.add()
        y.name, y.op, y.device = f"{YIELD_SCOPE}/{i}", "TfplaceYield", nodes[src].device
        y.input.append(f"^{src}")
        out.setdefault(key, []).append(y.name)
    return out


def _channel(graph_def: Any, nodes: dict[str, Any], segs: dict[tuple[int, str, int], list[str]],
             orders: list[dict[tuple[str, int], int]], pipe: Any, src: int, dst: int,
             kind: str, items: dict[int, dict[str, list[tuple[str, int]]]], capacity: int,
             backend: str, scope: str) -> list[tuple[tuple[int, str, int], str]]:
    make, put_op, take_op = _OPS[backend]
    seg_of = {name: key for key, names in segs.items() if key[0] == dst for name in names}
    by_order = sorted(items, key=lambda m: orders[src][(kind, m)])
    # every item is the same tuple: the micro-batch copies of the same tensors, in one order
    layout = [sorted(items[m], key=lambda t: (_base(t.split(":")[0]), t)) for m in by_order]
    signature = [tuple((_base(t.split(":")[0]), t.split(":")[1]) for t in tensors)
                 for tensors in layout]
    if any(s != signature[0] for s in signature):
        raise GraphError(f"the pipeline queue {kind} {src}->{dst} would carry different tensors "
                         f"for different micro-batches ({len(set(signature))} layouts); this is "
                         "a tfplace bug: report it with the step")
    dtypes = [_output_dtype(nodes[_tensor(t)[0]], _tensor(t)[1]) for t in layout[0]]
    device = pipe.stages[dst].devices[0]
    chan = graph_def.node.add()
    chan.name, chan.op, chan.device = scope, make, device
    chan.attr["component_types"].list.type.extend(dtypes)
    chan.attr["shapes"].list.SetInParent()
    chan.attr["capacity"].i = max(1, capacity)
    chan.attr["container"].s = b""
    chan.attr["shared_name"].s = b""
    pressure = []
    take_segs = []
    prev_put = prev_take = None
    for i, (m, tensors) in enumerate(zip(by_order, layout)):
        consumers = [c for t in tensors for c, _idx in items[m][t]]
        home = min({seg_of[c] for c in consumers}, key=lambda key: orders[dst][(key[1], key[2])])
        take_segs.append(orders[dst][(home[1], home[2])])
        put = graph_def.node.add()
        put.name, put.op, put.device = f"{scope}/put{m}", put_op, device
        put.input.append(f"{chan.name}:0")
        put.input.extend(tensors)
        if prev_put is not None:
            put.input.append(f"^{prev_put}")
        put.attr["Tcomponents"].list.type.extend(dtypes)
        take = graph_def.node.add()
        take.name, take.op, take.device = f"{scope}/take{m}", take_op, device
        take.input.append(f"{chan.name}:0")
        if prev_take is not None:
            take.input.append(f"^{prev_take}")
        take.attr["component_types"].list.type.extend(dtypes)
        if backend == "op":
            take.attr["shapes"].list.SetInParent()
        else:
            for node in (put, take):
                node.attr["timeout_ms"].i = -1
        for node in (put, take):
            node.attr["_read_only_resource_inputs"].list.i.append(0)
        for j, t in enumerate(tensors):
            for c, idx in items[m][t]:
                nodes[c].input[idx] = f"{take.name}:{j}"
        segs[home].append(take.name)
        nodes[put.name], nodes[take.name] = put, take
        prev_put, prev_take = put.name, take.name
        if i >= capacity:                      # a slot frees when take i - capacity starts
            pressure.append(((src, kind, m), f"{scope}/take{by_order[i - capacity]}"))
    if take_segs != sorted(take_segs):
        raise GraphError(f"stage {dst} takes from queue {kind} {src}->{dst} in another order "
                         f"than stage {src} puts into it; the schedule {pipe.schedule!r} is not "
                         "FIFO on this queue (a tfplace bug: report it)")
    return pressure



def run_abstractly(graph_def: Any, *, queues: bool = True) -> tuple[list[str], list[str]]:
    """Run ``graph_def`` abstractly: an op runs once its inputs (data and control) have; with
    ``queues``, a put only while its channel holds fewer than ``capacity`` items and a take
    only while it holds one. Returns (the ops that could never run, the queue ops among them
    left waiting on a full or empty channel); both empty when the step can finish."""
    chans = {n.name: int(n.attr["capacity"].i) for n in graph_def.node
             if queues and n.name.startswith(QUEUE_SCOPE)
             and n.op in ("TfplaceChannel", "FIFOQueueV2")}
    puts = {v[1] for v in _OPS.values()}
    takes = {v[2] for v in _OPS.values()}
    preds = {n.name: {i.lstrip("^").split(":")[0] for i in n.input} for n in graph_def.node}
    succ: dict[str, list[str]] = {}
    for name, ps in preds.items():
        for p in ps:
            succ.setdefault(p, []).append(name)
    kind = {n.name: ("put" if n.op in puts else "take" if n.op in takes else "")
            for n in graph_def.node}
    chan_of = {n.name: _tensor(n.input[0])[0] for n in graph_def.node if kind[n.name]}
    left = {name: len(ps) for name, ps in preds.items()}
    level = dict.fromkeys(chans, 0)
    waiting: dict[str, list[str]] = {c: [] for c in chans}
    ready = [name for name, k in left.items() if k == 0]
    done: set[str] = set()
    while ready:
        name = ready.pop()
        k, ch = kind[name], chan_of.get(name)
        if k and ch is not None and ch in chans:
            if (k == "put" and level[ch] >= chans[ch]) or (k == "take" and level[ch] == 0):
                waiting[ch].append(name)
                continue
            level[ch] += 1 if k == "put" else -1
            ready += waiting[ch]            # a state change may unblock the other side
            waiting[ch] = []
        done.add(name)
        for c in succ.get(name, ()):
            left[c] -= 1
            if left[c] == 0:
                ready.append(c)
    stuck = sorted(name for name in left if name not in done)
    return stuck, sorted(n for ws in waiting.values() for n in ws)


def check_completes(graph_def: Any) -> None:
    """GraphError naming the blocked queue ops if the step could not finish over its
    channels' capacities (``run_abstractly``): a deadlock found before anything runs."""
    stuck, blocked = run_abstractly(graph_def)
    if stuck:
        raise GraphError(f"the pipeline's queues would deadlock the step: {len(stuck)} "
                         f"ops could never run; blocked queue ops: {blocked[:6]}; this is a "
                         "tfplace bug (report it with the step and schedule), or raise the "
                         "queue capacities")
