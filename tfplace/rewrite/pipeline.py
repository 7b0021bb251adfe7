"""The pipeline pass: M micro-batch copies of the placed step on the stages' devices, gradients
accumulated on each variable's stage, one optimizer update per step, and every stage's work
serialised in its schedule order by control edges.

    x (global) -> Split(M) -> tfplace_r0/... (micro-batch 0) ... tfplace_r{M-1}/...
    grad mark m: r0 .. r{M-1} -> AddN x 1/M on the variable's stage device -> optimizer (once)
    reads of copy r > 0 -> copies of copy 0's reads (every micro-batch sees the same weights)

Stage s runs the segments of its schedule order one after the other (1F1B, K=2, M=2)::

    stage 0:  F0 -> F1 -> B0 -> B1          segment = the ops of one micro-batch copy on the
    stage 1:  F0 -> B0 -> F1 -> B1          stage, forward (F) or backward (B)

    [ops of F0] --^--> NoOp tfplace_pipeline/stage1/F0 --^--> [first ops of B0] ...

No loop dispatches micro-batches: each device runs its own part as TF dataflow, in that order.
The optimizer updates (the flush) and everything downstream of a gradient mark are in no
segment: they run once every micro-batch's gradient has arrived.
"""
from __future__ import annotations

from typing import Any, Iterable

from tfplace.errors import GraphError
from tfplace.rewrite import pipeline_queues, replicate

__all__ = ["apply", "segments", "SCOPE", "GRADIENT_SCOPE", "done_name"]

SCOPE = "tfplace_pipeline"
GRADIENT_SCOPE = "gradient_tape/"


def done_name(stage: int, op: Any) -> str:
    """The NoOp that completes segment ``op`` (e.g. ("F", 2)) of ``stage``."""
    return f"{SCOPE}/stage{stage}/{op[0]}{op[1]}"


def _src(inp: str) -> str:
    return inp.lstrip("^").split(":")[0]


def _closure(start: Iterable[str], succ: dict[str, list[str]]) -> set[str]:
    seen = set(start)
    todo = list(seen)
    while todo:
        for nxt in succ.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def segments(graph_def: Any, spec: Any, pipe: Any) -> dict[tuple[int, str, int], list[str]]:
    """(stage, "F"|"B", micro-batch) -> names of that segment's ops in ``graph_def`` (the
    unrolled graph). Backward = ``gradient_tape/`` ops and what depends on them; ops at or
    after a gradient mark (the sync and the update) are in no segment."""
    succ: dict[str, list[str]] = {}
    for n in graph_def.node:
        for inp in n.input:
            succ.setdefault(_src(inp), []).append(n.name)
    names = {n.name for n in graph_def.node}
    marks = [replicate.replica_name(r, m) for r in range(len(spec.groups))
             for m in [*(x for b in spec.dense for x in b), *(x for p in spec.sparse for x in p)]]
    flush = _closure([m for m in marks if m in names], succ)
    backward = _closure([n.name for n in graph_def.node
                         if n.name.partition("/")[2].startswith(GRADIENT_SCOPE)], succ)
    # a forward segment holds only what the micro-batch's backward or the step's outputs need:
    # other ops (the optimizer's reads in copies r > 0) join no segment, so no stage waits on
    # them between its forward and backward
    # (an output waits, by control edges, for every side effect of its copy: so only the
    # data that feeds it, and not the output itself)
    pred = {n.name: [_src(i) for i in n.input] for n in graph_def.node}
    data_pred = {n.name: [_src(i) for i in n.input if not i.startswith("^")]
                 for n in graph_def.node}
    outs = [replicate.replica_name(r, _src(o)) for r in range(len(spec.groups))
            for o in spec.outputs]
    needed = _closure(backward - flush, pred) | \
        _closure([p for o in outs if o in names for p in data_pred[o]], data_pred)
    stage_of = {d: s.index for s in pipe.stages for d in s.devices}   # splits: a group
    out: dict[tuple[int, str, int], list[str]] = {}
    for n in graph_def.node:
        head, _, _ = n.name.partition("/")
        if not head.startswith("tfplace_r") or not head[9:].isdigit() or n.name in flush \
                or n.op == "Placeholder":          # fed by the runtime: must not be run
            continue
        s = stage_of.get(n.device)
        if s is None:
            continue
        if n.name not in needed:
            continue
        kind = "B" if n.name in backward else "F"
        out.setdefault((s, kind, int(head[9:])), []).append(n.name)
    return out


def apply(graph_def: Any, spec: Any, pipe: Any, *, queues: str | None = None) -> Any:
    """The unrolled, schedule-ordered GraphDef; ``graph_def`` (placed) is not modified.
    ``queues``: "op" or "fifo" routes the neighbour stages' tensors through bounded channels
    (``pipeline_queues``); None leaves them plain TF edges."""
    out = replicate.apply(graph_def, spec)
    # the global batch is cut into micro-batches where the plan put the input (the first
    # stage), not on the client: a batch prefetched onto that device stays there
    home = {n.name: n.device for n in graph_def.node if n.name in spec.batch_inputs}
    for n in out.node:
        if n.op == "Split" and len(n.input) == 2 and _src(n.input[1]) in home:
            n.device = home[_src(n.input[1])]
    from tfplace.rewrite import pipeline_transpose
    pipeline_transpose.apply(out)            # each weight transposed once for all dx MatMuls
    segs = segments(out, spec, pipe)
    pressure = []
    after: dict[tuple[int, str, int], list[str]] = {}
    if queues is not None:
        pressure = pipeline_queues.insert(out, segs, pipe, queues)
        if queues == "op":                   # hand-offs go out before the next segment starts
            after = pipeline_queues.yields(out, segs)
    held = _hold_writes(out, segs)
    nodes = {n.name: n for n in out.node}
    for s, order in enumerate(pipe.orders()):
        device = pipe.stages[s].devices[0]
        prev: str | None = None
        for op in order:
            ops = segs.get((s, op.kind, op.micro_batch), [])
            if not ops:
                continue
            if prev is not None:
                members = set(ops)
                for name in ops:
                    node = nodes[name]
                    if not any(_src(i) in members for i in node.input):   # a segment root
                        node.input.append(f"^{prev}")
            done = out.node.add()
            done.name, done.op, done.device = done_name(s, op), "NoOp", device
            waits = ops + after.get((s, op.kind, op.micro_batch), [])
            done.input.extend(f"^{name}" for name in waits)
            nodes[done.name] = done
            prev = done.name
    _writes_after_all_stages(out, segs, pipe, held)
    order = pipe.orders()[0] if pipe.stages else []
    first_b = next((i for i, op in enumerate(order) if op.kind == "B"), 0)
    anchor = done_name(0, order[first_b - 1]) if first_b else ""
    if anchor in nodes:                        # the first stage's last forward before a backward
        pipeline_transpose.defer(out, pipe.stages[0].devices, anchor)
    for (s, kind, m), take in pressure:        # at most `capacity` items ahead of the taker
        done = nodes.get(done_name(s, (kind, m)))
        if done is not None:
            done.input.append(f"^{take}")
    if queues is None:
        _check_acyclic(out)
    else:
        try:                                   # one abstract run when all is well
            pipeline_queues.check_completes(out)
        except GraphError:
            _check_acyclic(out)                # a plain cycle gets its own message
            raise
    return out


_WRITES = ("Assign", "ResourceApply", "ResourceSparseApply", "ResourceScatter")


def _hold_writes(graph_def: Any, segs: dict[tuple[int, str, int], list[str]]) -> set[str]:
    """The variable writes that no segment op waits for (the flush's optimizer updates, the
    optimizer's step counter, a BatchNorm's moving averages), taken out of their segments.
    A write that a segment reads back (a Keras metric's total, read for the step's output)
    stays where it is."""
    pred = {n.name: [_src(i) for i in n.input] for n in graph_def.node}
    inside = {name for names in segs.values() for name in names}
    waited_for = _closure({p for m in inside for p in pred[m]}, pred)
    held = {n.name for n in graph_def.node
            if n.op.startswith(_WRITES) and n.name not in waited_for}
    for key, names in segs.items():
        segs[key] = [name for name in names if name not in held]
    return held


def _writes_after_all_stages(graph_def: Any, segs: dict[tuple[int, str, int], list[str]],
                             pipe: Any, held: set[str]) -> None:
    """Every held write waits for the last segment of every stage. A step that fails anywhere
    in its micro-batches then writes nothing of them: the variables keep the last good
    step's values."""
    last = [done_name(s, order[-1]) for s, order in enumerate(pipe.orders())
            if order and segs.get((s, order[-1].kind, order[-1].micro_batch))]
    for n in graph_def.node:
        if n.name in held:
            have = set(n.input)
            n.input.extend(f"^{d}" for d in last if f"^{d}" not in have)


def _check_acyclic(graph_def: Any) -> None:
    """GraphError naming a few nodes on a cycle if the order edges made one (a planning bug:
    the schedule disagrees with the step's dataflow)."""
    stuck, _ = pipeline_queues.run_abstractly(graph_def, queues=False)
    if stuck:
        raise GraphError(f"the pipeline schedule order makes a cycle with the step's dataflow "
                         f"({len(stuck)} ops stuck, e.g. {stuck[:4]}); this is a tfplace bug: "
                         "report it with the step and schedule")
