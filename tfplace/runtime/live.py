"""The live part of a rewritten GraphDef: the nodes a tf.function built from it would keep.

A rewrite leaves stateless nodes that nothing uses (the update arithmetic of micro-batch copies
and replicas that lost their writes, their gradients' sync chains, shape computations). TF
prunes them when it instantiates the function (``PruneFunctionBody`` keeps what the outputs
and control outputs need, plus every stateful and control-flow node); dropping them before the
import saves the import, the automatic control dependencies and the instantiation their cost.

What stays (``live``) is what reaches, by data, control or colocation edges, one of:

    the names asked for (arguments, outputs, ops the executor returns), every Placeholder
    (fed through ``input_map``), every stateful, unregistered (a library function) or
    control-flow op, every op with a resource input (the automatic control dependencies
    order those), and every consumer of a variable read (a read with a consumer is one of
    the function's control outputs).

The importer creates nodes in GraphDef order as their inputs are ready, and no dropped node is
an input of a kept one: the kept nodes are created in the same order as without the dropped
ones, so the automatic control dependencies are the same: the function's FunctionDef is the
one without the dropped nodes, node for node (checked on pipeline and data-parallel steps).
"""
from __future__ import annotations

from typing import Any, Iterable

from tfplace.graphdef_attrs import DT_RESOURCE

__all__ = ["live"]

_READS = frozenset({"ReadVariableOp", "ResourceGather", "ResourceGatherNd"})
_CONTROL_FLOW = frozenset({"Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond",
                           "RefSwitch", "RefMerge", "RefEnter", "RefExit", "RefNextIteration",
                           "ControlTrigger", "_SwitchN"})


def _name(inp: str) -> str:
    return inp.lstrip("^").split(":")[0]


def _makes_resource(node: Any, op_def: Any) -> bool:
    """Whether ``node`` may output a resource handle (over-approximated: any resource type)."""
    if op_def is None:
        return True
    if any(arg.type == DT_RESOURCE for arg in op_def.output_arg):
        return True
    for value in node.attr.values():
        if value.type == DT_RESOURCE or DT_RESOURCE in value.list.type:
            return True
    return False


def live(graph_def: Any, keep: Iterable[str]) -> Any:
    """``graph_def`` without the nodes TF would prune (a new GraphDef; the input is not
    modified), or ``graph_def`` itself when there are none. ``keep``: node names that must
    stay (the import's return elements and input_map keys)."""
    from tensorflow.python.framework import op_def_registry
    nodes = {n.name: n for n in graph_def.node}
    defs = {op: op_def_registry.get(op) for op in {n.op for n in graph_def.node}}
    resources = {n.name for n in graph_def.node if _makes_resource(n, defs[n.op])}
    reads = {n.name for n in graph_def.node if n.op in _READS}
    roots = [name for name in keep if name in nodes]
    for n in graph_def.node:
        op_def = defs[n.op]
        if n.op == "Placeholder" or op_def is None or op_def.is_stateful or \
                n.op in _CONTROL_FLOW or \
                any(_name(i) in resources or _name(i) in reads for i in n.input
                    if not i.startswith("^")):
            roots.append(n.name)
    seen = set(roots)
    todo = list(seen)
    while todo:
        node = nodes[todo.pop()]
        ins = [_name(i) for i in node.input]
        if "_class" in node.attr:              # colocation targets: the importer looks them up
            ins += [v.decode()[5:] for v in node.attr["_class"].list.s
                    if v.startswith(b"loc:@")]
        for name in ins:
            if name not in seen and name in nodes:
                seen.add(name)
                todo.append(name)
    if len(seen) == len(nodes):
        return graph_def
    out = type(graph_def)()
    out.library.CopyFrom(graph_def.library)
    out.versions.CopyFrom(graph_def.versions)
    out.node.extend(n for n in graph_def.node if n.name in seen)
    return out
