"""Pipeline units: the layers a stage partition cuts between, with their costs, from an OpDag.

A unit is a contiguous piece of the forward order that stays on one stage: for a Keras model,
one top-level layer. Each unit carries figures for one step on the captured (global) batch;
the planner divides FLOPs and activation bytes by the number of micro-batches.

How ops of a captured Keras step are grouped (``mlp_1`` is the model's name scope, ``dense_1_2``
the scope of its second Dense layer, ``mean_squared_error`` the loss)::

    mlp_1/dense_1_2/MatMul                        -> unit dense_1_2 (forward)
    gradient_tape/mlp_1/dense_1_2/MatMul/MatMul   -> unit dense_1_2 (its backward)
    mean_squared_error/Square, gradient_tape/...  -> unit mean_squared_error (after the layers)
    mlp_1/Add (a residual add: an op, no scope)   -> the latest unit among its inputs
    x, adam/..., tfplace_grad_3                   -> by their neighbours (below)

Ops outside any unit take a unit from the graph, in three passes: in topological order, the
latest unit among their inputs (the earliest for backward ops, and IdentityN passes each input's
unit to the same-numbered output, so an optimizer's per-variable chain follows its gradient);
then in reverse order the earliest unit among their consumers (inputs, slot variables, learning
rate and step counter); then the latest among their inputs, else the first unit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from tfplace.analysis import DT_RESOURCE, DT_VARIANT, OpDag, split_input
from tfplace.errors import GraphError
from tfplace.memory import ALIASING_OPS

__all__ = ["Unit", "GRADIENT_SCOPE", "units_from_dag", "unit_of_ops", "layer_names_of"]

GRADIENT_SCOPE = "gradient_tape/"


@dataclass(frozen=True)
class Unit:
    """One layer (or block) of the forward order, costed for a whole step on the global batch."""

    name: str
    flops: float = 0.0            # forward + backward (+ its optimizer update)
    param_bytes: int = 0          # its variables, including optimizer slots when from a DAG
    out_bytes: int = 0            # activations crossing forward from this and earlier units
    grad_bytes: int = 0           # gradients crossing back into this and earlier units
    stash_bytes: int = 0          # forward activations its backward reads (kept until B)
    ops: tuple[str, ...] = ()


def _scopes(dag: OpDag, model_scope: str | None) -> tuple[list[str | None], list[bool]]:
    """Per node, its unit key from name scopes (None when none), and whether it is backward."""
    paths, grads = [], []
    for n in dag.nodes:
        grad = n.name.startswith(GRADIENT_SCOPE)
        grads.append(grad)
        paths.append((n.name[len(GRADIENT_SCOPE):] if grad else n.name).split("/"))
    differentiated = {p[0] for p, g in zip(paths, grads) if g and len(p) >= 2}
    layers: dict[str, set[str]] = {}
    held: dict[str, int] = {}
    for p, g, n in zip(paths, grads, dag.nodes):
        if not g and len(p) >= 3:
            layers.setdefault(p[0], set()).add(p[1])
            held[p[0]] = held.get(p[0], 0) + n.param_bytes
    if model_scope is not None:
        models = {model_scope}
    else:
        models = {t for t in differentiated if layers.get(t) and held.get(t, 0) > 0}
    keys: list[str | None] = []
    for p, g in zip(paths, grads):
        top = p[0]
        if top in models:
            key = (p[1] if len(models) == 1 else f"{top}/{p[1]}") \
                if len(p) >= 3 and p[1] in layers.get(top, ()) else None
        elif top in differentiated and (len(p) >= 2 or not g):
            key = top
        else:
            key = None
        keys.append(key)
    return keys, grads


def _propagate(dag: OpDag, unit: list[int], grads: list[bool]) -> dict[int, list[int]]:
    """Give every node without a unit one from its neighbours (module docstring), in place;
    returns the IdentityN nodes' per-output units (output k carries input k's unit)."""
    per_output: dict[int, list[int]] = {}

    def of(j: int, k: int) -> int:
        outs = per_output.get(j)
        return outs[k] if outs is not None and k < len(outs) else unit[j]

    for i, n in enumerate(dag.nodes):
        if unit[i] >= 0:
            continue
        if n.op == "IdentityN":
            seen = [of(j, k) for j, k in _inputs(dag, i)]
            per_output[i] = seen
        else:
            seen = [of(j, k) for j, k in dag.in_tensors[i]]
        known = [u for u in seen if u >= 0]
        if known:
            unit[i] = min(known) if grads[i] or n.op == "IdentityN" else max(known)
    for i in reversed(range(len(dag.nodes))):
        if unit[i] < 0:
            known = [unit[j] for j in dag.succs[i] if unit[j] >= 0]
            if known:
                unit[i] = min(known)
    for i in range(len(dag.nodes)):
        if unit[i] < 0:
            unit[i] = max([unit[j] for j in dag.preds[i] if unit[j] >= 0], default=0)
    for i, outs in per_output.items():
        per_output[i] = [unit[i] if u < 0 else u for u in outs]
    return per_output


def layer_names_of(scopes: Sequence[str], layers: Sequence[str]) -> list[str]:
    """Name scopes -> Keras layer names, matching in order.

    Keras 3 traces layer `dense` under the scope `dense_1`, `dense_1` under `dense_1_2`: a
    scope is its layer's name, or that name plus `_<n>`. Scopes and layers are both in forward
    order, so each scope takes the next layer that matches it; a scope no layer matches (the
    loss) keeps its name.
    """
    out, at = [], 0
    for scope in scopes:
        for k in range(at, len(layers)):
            name = layers[k]
            if scope == name or re.fullmatch(re.escape(name) + r"_\d+", scope):
                out.append(name)
                at = k + 1
                break
        else:
            out.append(scope)
    if len(set(out)) != len(out):
        return list(scopes)             # an ambiguous match: keep the scopes
    return out


def unit_of_ops(dag: OpDag, *, model_scope: str | None = None,
                layer_names: Sequence[str] | None = None,
                ) -> tuple[list[str], list[int], dict[int, list[int]]]:
    """(unit names in forward order, unit index of every node in dag order, and for IdentityN
    nodes, which pass many gradients at once, the unit of each output/input pair).

    layer_names: the model's layer names in order (``[l.name for l in model.layers]``), to name
    units after layers rather than their trace-time scopes."""
    keys, grads = _scopes(dag, model_scope)
    first: dict[str, int] = {}
    for i, (key, grad) in enumerate(zip(keys, grads)):
        if key is not None and not grad and key not in first:
            first[key] = i
    if not first:
        where = f"model scope {model_scope!r}" if model_scope else "any name scope"
        raise GraphError(f"no layer units found under {where} in a graph of {len(dag)} ops "
                         "(is it a training step with a GradientTape?); pass units explicitly "
                         "or the model's name scope as model_scope=")
    names = sorted(first, key=first.__getitem__)
    index = {k: u for u, k in enumerate(names)}
    unit = [index.get(k, -1) if k is not None else -1 for k in keys]
    per_output = _propagate(dag, unit, grads)
    if layer_names is not None:
        names = layer_names_of(names, layer_names)
    return names, unit, per_output


def _inputs(dag: OpDag, i: int) -> list[tuple[int, int]]:
    """Node i's data inputs in order, repeats kept (OpDag.in_tensors drops them)."""
    return [(dag.index[src], k) for src, k in map(split_input, dag.nodes[i].inputs)]


def _input_index(dag: OpDag, consumer: int, producer: int, k: int) -> int:
    return _inputs(dag, consumer).index((producer, k))


def units_from_dag(dag: OpDag, *, model_scope: str | None = None,
                   layer_names: Sequence[str] | None = None) -> tuple[Unit, ...]:
    """The units of a captured training step, in forward order, with their costs.

    model_scope: the model's top-level name scope (e.g. "mlp_1"); by default the differentiated
    scope whose layers hold parameters. layer_names: see ``unit_of_ops``.
    """
    names, unit, per_output = unit_of_ops(dag, model_scope=model_scope, layer_names=layer_names)
    n_units = len(names)
    flops = [0.0] * n_units
    params = [0] * n_units
    stash = [0] * n_units
    ops: list[list[str]] = [[] for _ in names]
    fwd = [0] * (n_units + 1)                  # difference arrays over boundaries
    bwd = [0] * (n_units + 1)
    grads = [n.name.startswith(GRADIENT_SCOPE) for n in dag.nodes]
    stashed: set[tuple[int, int, int]] = set()
    for i, n in enumerate(dag.nodes):
        u = unit[i]
        flops[u] += n.flops
        params[u] += n.param_bytes
        ops[u].append(n.name)
        for k, consumers in enumerate(dag.tensor_consumers[i]):
            size = n.out_bytes[k] if k < len(n.out_bytes) else 0
            if not consumers or size == 0:
                continue
            if i in per_output:
                u = per_output[i][k]
            cu = [per_output[c][_input_index(dag, c, i, k)] if c in per_output else unit[c]
                  for c in consumers]
            if max(cu) > u:                    # crosses boundaries u .. max-1 forward
                fwd[u] += size
                fwd[max(cu)] -= size
            if min(cu) < u:                    # crosses boundaries min .. u-1 backward
                bwd[min(cu)] += size
                bwd[u] -= size
            if grads[i] or n.op in ALIASING_OPS or (
                    k < len(n.out_dtypes) and n.out_dtypes[k] in (DT_RESOURCE, DT_VARIANT)):
                continue
            for c, cuu in zip(consumers, cu):
                if grads[c] and (cuu, i, k) not in stashed:
                    stashed.add((cuu, i, k))
                    stash[cuu] += size
    units = []
    run_f = run_b = 0
    for u, name in enumerate(names):
        run_f += fwd[u]
        run_b += bwd[u]
        units.append(Unit(name=name, flops=flops[u], param_bytes=params[u], out_bytes=run_f,
                          grad_bytes=run_b, stash_bytes=stash[u], ops=tuple(ops[u])))
    return tuple(units)
