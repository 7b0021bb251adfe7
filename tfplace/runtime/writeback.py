"""Copies between the user's variables and the placed ones (``Executor``'s write-back and
refresh). ``pairs``: (placeholder, user's variable, placed variable); ``shards``: id(user's
variable) -> (variable, axis, its shard placeholders in order); ``sums``: id of each accumulator
(Keras metric totals and counts) -> (variable, replicas); ``primary(node)``: whether a
placeholder is replica 0's."""
from __future__ import annotations

from typing import Any, Callable, Sequence

__all__ = ["copy_back", "refresh"]


def copy_back(pairs: Sequence[tuple[str, Any, Any]], shards: dict[int, tuple[Any, int, list[str]]],
              sums: dict[int, Any], primary: Callable[[str], bool],
              deps: dict[str, list[Any]] | None = None) -> list[Any]:
    """Assign ops copying the placed values into the user's variables; in a step, after
    ``deps[node]`` (the ops on that variable). Plain copies are packed per (source device,
    destination device, dtype) into one flat tensor: one transfer per device pair and step
    instead of one per variable and optimizer slot (each costs the client CPU time)."""
    import tensorflow as tf
    deps = deps or {}
    ops = []
    packs: dict[tuple[str, str, Any], list[tuple[str, Any, Any]]] = {}
    placed_of = {node: placed for node, _o, placed in pairs}
    for orig, axis, nodes in shards.values():     # the whole value, gathered
        with tf.control_dependencies([d for n in nodes for d in deps.get(n, [])]):
            whole = tf.concat([placed_of[n].read_value() for n in nodes], axis)
        ops.append(orig.assign(whole, read_value=False))
    sharded = {n for _o, _a, nodes in shards.values() for n in nodes}
    for node, orig, placed in pairs:
        if placed is orig or not primary(node) or node in sharded:
            continue
        if id(orig) in sums:
            reps = [(n, p) for n, o, p in pairs if o is orig]
            with tf.control_dependencies([d for n, _p in reps for d in deps.get(n, [])]):
                total = tf.add_n([p.read_value() for _n, p in reps])
            ops.append(orig.assign(total, read_value=False))
        else:
            packs.setdefault((placed.device, orig.device, orig.dtype), []).append(
                (node, orig, placed))
    for (src, dst, _dtype), group in packs.items():
        with tf.control_dependencies([d for n, _o, _p in group for d in deps.get(n, [])]):
            if len(group) == 1 or not all(o.shape.is_fully_defined() for _n, o, _p in group):
                ops += [o.assign(p.read_value(), read_value=False) for _n, o, p in group]
                continue
            with tf.device(src):
                flat = tf.concat([tf.reshape(p.read_value(), [-1]) for _n, _o, p in group], 0)
        with tf.device(dst):
            pieces = tf.split(flat, [int(o.shape.num_elements()) for _n, o, _p in group])
            for (_n, orig, _p), piece in zip(group, pieces):
                ops.append(orig.assign(tf.reshape(piece, orig.shape), read_value=False))
    return ops


def refresh(pairs: Sequence[tuple[str, Any, Any]], shards: dict[int, tuple[Any, int, list[str]]],
            shard_copies: Sequence[tuple[str, Any, int, int, int]], sums: dict[int, Any],
            primary: Callable[[str], bool]) -> None:
    """Copy the user's variables into the placed ones (after the user assigned to them): a
    split variable re-sliced, an accumulator's value to replica 0 and zero to the others."""
    import tensorflow as tf
    placed_of = {node: placed for node, _o, placed in pairs}
    for orig, axis, nodes in shards.values():     # re-sliced
        for n, piece in zip(nodes, tf.split(orig.read_value(), len(nodes), axis)):
            placed_of[n].assign(piece)
    for n, orig, axis, index, count in shard_copies:
        placed_of[n].assign(tf.split(orig.read_value(), count, axis)[index])
    for node, orig, placed in pairs:
        if placed is orig or id(orig) in shards:
            continue
        if id(orig) in sums and not primary(node):
            placed.assign(tf.zeros_like(placed))
        else:
            placed.assign(orig.read_value())
