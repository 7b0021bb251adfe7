"""Transpose each weight once per step for the micro-batches' backward MatMuls.

A Dense layer's input gradient is ``MatMul(dy, W, transpose_b=True)``. Unrolled over M
micro-batches, the M copies share copy 0's read of W, and each of them transposes (packs) W again: on one core, 8 of them at 256 rows cost about 1.45x the same product on 2048 rows, and they are
on the pipeline's critical path (the previous stage waits for dx). This pass gives those MatMuls
one explicit ``Transpose(W)`` per step and ``transpose_b=False``:

    tfplace_r{m}/.../MatMul(dy_m, W_read, transpose_b=True)    (m = 0 .. M-1; copy m's read
      -> tfplace_pipeline/transposed/<W_read>  = Transpose(W_read, perm)   is an Identity of
         tfplace_r{m}/.../MatMul(dy_m, <that>, transpose_b=False)           copy 0's)

The permutation [1, 0] is a placeholder the executor feeds (``_tfplace_value``): as a Const,
grappler's arithmetic optimizer would fold the Transpose back into each MatMul. The product
is the same arithmetic: equality with one device is tested with the pipeline's.
"""
from __future__ import annotations

from typing import Any

__all__ = ["apply", "defer", "PERM", "VALUE_ATTR", "SCOPE"]

SCOPE = "tfplace_pipeline/transposed/"

PERM = "tfplace_pipeline/perm_1_0"
VALUE_ATTR = "_tfplace_value"
DT_INT32 = 3


def _is_copy(name: str) -> bool:
    head = name.partition("/")[0]
    return head.startswith("tfplace_r") and head[9:].isdigit()


def apply(graph_def: Any, *, min_uses: int = 2) -> int:
    """Rewrite ``graph_def`` in place; returns how many weights are now transposed once."""
    nodes = {n.name: n for n in graph_def.node}
    groups: dict[str, list[Any]] = {}
    for n in graph_def.node:
        if n.op != "MatMul" or not _is_copy(n.name) or "gradient_tape/" not in n.name:
            continue
        if not n.attr["transpose_b"].b or n.attr["transpose_a"].b or len(n.input) < 2:
            continue
        src = nodes.get(n.input[1].split(":")[0])
        while src is not None and src.op == "Identity" and src.input:   # copy m's read is an
            src = nodes.get(src.input[0].split(":")[0])                  # Identity of copy 0's
        if src is None or src.op != "ReadVariableOp":
            continue
        groups.setdefault(src.name, []).append(n)
    done = 0
    for read, users in sorted(groups.items()):
        if len(users) < min_uses or len({u.device for u in users}) != 1:
            continue
        tensor = read
        if done == 0:
            perm = graph_def.node.add()
            perm.name, perm.op = PERM, "Placeholder"
            perm.attr["dtype"].type = DT_INT32
            perm.attr["shape"].shape.dim.add().size = 2
            value = perm.attr[VALUE_ATTR].tensor
            value.dtype = DT_INT32
            value.tensor_shape.dim.add().size = 2
            value.int_val.extend([1, 0])
        t = graph_def.node.add()
        t.name = f"{SCOPE}{tensor.split(':')[0]}"
        t.op, t.device = "Transpose", users[0].device
        t.input.extend([tensor, PERM])
        t.attr["T"].CopyFrom(users[0].attr["T"])
        t.attr["Tperm"].type = DT_INT32
        for u in users:
            u.input[1] = t.name
            u.attr["transpose_b"].b = False
        done += 1
    return done


def defer(graph_def: Any, devices: Any, after: str) -> int:
    """Make the transposes on ``devices`` wait for the NoOp ``after``; how many.

    The first stage is never idle before its first backward: its forwards run back to back
    from the step's start, and the transposes, ready at once, ran between its first and second
    forward, holding back every later stage's forward (4 ms a step in the pipeline benchmark).
    It waits for its first gradient after the last forward before it, which is where they go.
    The other stages wait for their first activation at the start, so theirs stay there."""
    count = 0
    for n in graph_def.node:
        if n.op == "Transpose" and n.name.startswith(SCOPE) and n.device in devices:
            n.input.append(f"^{after}")
            count += 1
    return count
