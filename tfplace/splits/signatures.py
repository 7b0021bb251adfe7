"""The signature registry: op type -> the legal (input layouts -> output layouts) of one op.

A rule sees an OpContext (shapes, attrs, constant inputs) and lists every local signature it
supports, best first; all signatures here move no bytes themselves (comm_bytes 0): data moves
only in boxing. Ops without a rule run replicated: all inputs B -> all outputs B.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from tfplace.errors import PlanError
from tfplace.splits.layout import B, Layout

__all__ = ["Shape", "LOCAL_KINDS", "OpContext", "Signature", "Rule", "RULES", "register",
           "signatures", "find_signature", "fits", "format_signature"]

Shape = tuple[int, ...]
DT_RESOURCE = 20

# What a signature asks of the rewrite beyond running the same op on the local shards.
LOCAL_KINDS: dict[str, str] = {
    "masked_lookup": "ids minus the shard's first row; ids outside the shard give zero rows",
    "masked_segments": "segment (or scatter) ids minus the shard's first row; ids outside it "
                       "are dropped",
    "global_count": "a Mean over a split axis divides the local sum by the full count",
    "full_shape": "the output describes the logical tensor: emit its full static shape",
    "shard_shape_args": "shape-valued inputs (Reshape shape, BroadcastTo shape, input_sizes, "
                        "filter_sizes) give the local shard's shape",
}


@dataclass(frozen=True)
class OpContext:
    """What a rule may look at: one node's shapes, dtypes, attrs and constant integer inputs.

    in_layouts is set only for the few ops whose signatures mirror their inputs (Identity,
    IdentityN): the producers' current layouts. in_ops names the producers' op types.
    """

    name: str
    op: str
    in_shapes: tuple[Shape | None, ...] = ()
    out_shapes: tuple[Shape | None, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)
    consts: tuple[tuple[int, ...] | None, ...] = ()
    in_dtypes: tuple[int, ...] = ()
    in_layouts: tuple[Layout, ...] | None = None
    in_ops: tuple[str, ...] = ()              # the producers' op types

    def in_shape(self, i: int = 0) -> Shape | None:
        return self.in_shapes[i] if i < len(self.in_shapes) else None

    def out_shape(self, k: int = 0) -> Shape | None:
        return self.out_shapes[k] if k < len(self.out_shapes) else None

    def rank(self, i: int) -> int | None:
        s = self.in_shapes[i] if i < len(self.in_shapes) else None
        return None if s is None else len(s)

    def out_rank(self, k: int = 0) -> int | None:
        s = self.out_shapes[k] if k < len(self.out_shapes) else None
        return None if s is None else len(s)

    def const(self, i: int) -> tuple[int, ...] | None:
        return self.consts[i] if i < len(self.consts) else None

    def is_resource(self, i: int) -> bool:
        return i < len(self.in_dtypes) and self.in_dtypes[i] % 100 == DT_RESOURCE

    @property
    def n_in(self) -> int:
        return len(self.in_shapes)

    @property
    def n_out(self) -> int:
        return len(self.out_shapes)


@dataclass(frozen=True)
class Signature:
    """inputs -> outputs; divided: each device runs 1/n of the op's FLOPs (else all of them).

    local names what the rewrite must do beyond running the op on its shards (LOCAL_KINDS);
    "" means the unchanged op on the local tensors.
    """

    inputs: tuple[Layout, ...]
    outputs: tuple[Layout, ...]
    divided: bool = False
    comm_bytes: int = 0
    local: str = ""

    def compute_share(self, n: int) -> float:
        return 1.0 / n if self.divided else 1.0


Rule = Callable[[OpContext], Sequence[Signature]]
RULES: dict[str, Rule] = {}


def register(*ops: str) -> Callable[[Rule], Rule]:
    """Decorator adding a rule under each op type in `ops`."""
    def deco(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn
    return deco


def replicated(ctx: OpContext) -> Signature:
    return Signature((B,) * ctx.n_in, (B,) * ctx.n_out)


def signatures(ctx: OpContext) -> tuple[Signature, ...]:
    """Every legal signature of the op, deduplicated, in the rule's order of preference."""
    rule = RULES.get(ctx.op)
    found = list(rule(ctx)) if rule is not None else [replicated(ctx)]
    return tuple(dict.fromkeys(found))


def fits(sig: Signature, ctx: OpContext, n: int) -> bool:
    """Whether every split in `sig` divides its axis into n equal shards (unknown dims pass;
    resource handles are skipped: their variable was checked when it was split)."""
    handles = [ctx.is_resource(i) for i in range(ctx.n_in)]
    for layouts, shapes, skip in ((sig.inputs, ctx.in_shapes, handles),
                                  (sig.outputs, ctx.out_shapes, [False] * ctx.n_out)):
        for lay, shape, handle in zip(layouts, shapes, skip):
            if lay.is_split and not handle:
                if shape is None or lay.axis >= len(shape):
                    return False
                dim = shape[lay.axis]
                if dim >= 0 and dim % n:
                    return False
    return True


def format_signature(op: str, sig: Signature) -> str:
    """'MatMul(B, S(1)) -> S(1)'; several outputs in parentheses; a local kind in brackets."""
    outs = ", ".join(map(str, sig.outputs))
    text = f"{op}({', '.join(map(str, sig.inputs))}) -> "
    text += outs if len(sig.outputs) == 1 else f"({outs})"
    return text + (f" [{sig.local}]" if sig.local else "")


def find_signature(ctx: OpContext, inputs: Sequence[Layout | str],
                   n: int | None = None) -> Signature:
    """The signature taking exactly `inputs`; PlanError naming the op and what it supports."""
    from tfplace.splits.layout import parse_layout
    want = tuple(parse_layout(x) for x in inputs)
    sigs = [s for s in signatures(ctx) if n is None or fits(s, ctx, n)]
    for s in sigs:
        if s.inputs == want:
            return s
    supported = "; ".join(format_signature(ctx.op, s) for s in sigs) or "none"
    raise PlanError(f"op {ctx.name!r} ({ctx.op}) has no signature for inputs "
                    f"({', '.join(map(str, want))}); it supports: {supported}. Split its inputs "
                    "another way, or leave them unsplit (B)")


# the rule modules register themselves
from tfplace.splits import (rules_linear, rules_pointwise, rules_shape,  # noqa: E402,F401
                            rules_state)
