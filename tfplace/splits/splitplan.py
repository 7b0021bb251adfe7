"""The split plan value: each split op's layouts, every boxing step, each variable's shards.

Mirrored by protos/splits.proto. Tensors, ops and variables the plan does not list are whole
(B) on every device of the group.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from tfplace.splits.auto import AutoChoice
from tfplace.splits.layout import Layout, parse_layout

__all__ = ["SplitOp", "BoxingStep", "VariableShard", "SplitPlan"]


@dataclass(frozen=True)
class SplitOp:
    """An op that reads or writes a non-B tensor, with the layouts it runs on (after boxing)."""

    name: str
    op: str
    inputs: tuple[Layout, ...]    # one per data input, in NodeDef order
    outputs: tuple[Layout, ...]   # one per output
    local: str = ""               # a key of signatures.LOCAL_KINDS, "" for the op unchanged


@dataclass(frozen=True)
class BoxingStep:
    """A conversion inserted once for a tensor and shared by every consumer that needs it.

    src is the layout the tensor has for these consumers before the step: a partial sum read by
    several ops is all-reduced once (P -> B), and a later step of the same tensor starts from B.
    """

    tensor: str                   # "node:index"
    src: Layout
    dst: Layout
    collective: str               # a name in tfplace.splits.boxing.COLLECTIVES
    bytes: int                    # sent per device
    tensor_bytes: int             # the whole logical tensor
    consumers: tuple[str, ...]    # op names; "" for a fetched step output


@dataclass(frozen=True)
class VariableShard:
    variable: str                 # the variable's own name
    node: str                     # its resource placeholder in the GraphDef
    layout: Layout
    devices: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]   # the shard each device holds, in device order


@dataclass(frozen=True)
class SplitPlan:
    devices: tuple[str, ...]
    ops: tuple[SplitOp, ...] = ()
    boxing: tuple[BoxingStep, ...] = ()
    variables: tuple[VariableShard, ...] = ()
    auto: tuple[AutoChoice, ...] = ()     # splits="auto": what it weighed and chose
    # split variables in several pipeline stages: one plan per stage (its own group), applied
    # one after the other; the fields above then hold all parts' ops, boxing and variables
    parts: tuple["SplitPlan", ...] = ()

    @classmethod
    def of_parts(cls, parts: tuple["SplitPlan", ...]) -> "SplitPlan":
        """One plan holding ``parts`` (each on its own device group)."""
        devices = tuple(dict.fromkeys(d for p in parts for d in p.devices))
        return cls(devices=devices, ops=tuple(o for p in parts for o in p.ops),
                   boxing=tuple(b for p in parts for b in p.boxing),
                   variables=tuple(v for p in parts for v in p.variables), parts=parts)

    def part_of(self, op: str) -> "SplitPlan":
        """The part whose ops include ``op`` (the plan itself when it has no parts)."""
        for p in self.parts:
            if any(o.name == op for o in p.ops):
                return p
        return self

    @property
    def is_empty(self) -> bool:
        """No op or variable split (splits="auto" that chose nothing): the rewrite skips it."""
        return not self.ops and not self.variables

    # -- queries ------------------------------------------------------------------------------
    @property
    def boxing_bytes(self) -> int:
        """Bytes each device sends per step for all boxing."""
        return sum(b.bytes for b in self.boxing)

    def collectives(self) -> dict[str, int]:
        """How many boxing steps use each collective, by name."""
        counts: dict[str, int] = {}
        for b in self.boxing:
            counts[b.collective] = counts.get(b.collective, 0) + 1
        return dict(sorted(counts.items()))

    def tensor_layouts(self) -> dict[str, Layout]:
        """{"node:index": layout} of every non-B output of a split op."""
        return {f"{o.name}:{k}": lay for o in self.ops for k, lay in enumerate(o.outputs)
                if not lay.is_broadcast}

    def op(self, name: str) -> SplitOp:
        for o in self.ops:
            if o.name == name:
                return o
        raise KeyError(name)

    # -- proto --------------------------------------------------------------------------------
    def to_proto(self) -> Any:
        pb = _pb()
        p = pb.SplitPlan(devices=list(self.devices))
        p.ops.extend(pb.SplitOp(name=o.name, op=o.op, inputs=[str(x) for x in o.inputs],
                                outputs=[str(x) for x in o.outputs], local=o.local)
                     for o in self.ops)
        p.boxing.extend(pb.BoxingStep(tensor=b.tensor, src=str(b.src), dst=str(b.dst),
                                      collective=b.collective, bytes=b.bytes,
                                      tensor_bytes=b.tensor_bytes, consumers=list(b.consumers))
                        for b in self.boxing)
        p.variables.extend(pb.VariableShard(variable=v.variable, node=v.node,
                                            layout=str(v.layout), devices=list(v.devices),
                                            shapes=[pb.ShardShape(dims=list(s)) for s in v.shapes])
                           for v in self.variables)
        p.auto.extend(pb.AutoChoice(variable=a.variable, layout=str(a.layout), ways=a.ways,
                                    reason=a.reason, saved_seconds=a.saved_seconds,
                                    boxing_seconds=a.boxing_seconds, chosen=a.chosen)
                      for a in self.auto)
        p.parts.extend(part.to_proto() for part in self.parts)
        return p

    @classmethod
    def from_proto(cls, p: Any) -> "SplitPlan":
        """The plan a proto holds; a malformed layout string is a PlanError naming the forms."""
        lay = parse_layout
        if p.parts:
            return cls.of_parts(tuple(cls.from_proto(part) for part in p.parts))
        return cls(devices=tuple(p.devices),
                   ops=tuple(SplitOp(o.name, o.op, tuple(lay(x) for x in o.inputs),
                                     tuple(lay(x) for x in o.outputs), o.local) for o in p.ops),
                   boxing=tuple(BoxingStep(b.tensor, lay(b.src), lay(b.dst), b.collective,
                                           int(b.bytes), int(b.tensor_bytes), tuple(b.consumers))
                                for b in p.boxing),
                   variables=tuple(VariableShard(v.variable, v.node, lay(v.layout),
                                                 tuple(v.devices),
                                                 tuple(tuple(int(d) for d in s.dims)
                                                       for s in v.shapes))
                                   for v in p.variables),
                   auto=tuple(AutoChoice(a.variable, lay(a.layout), int(a.ways), a.reason,
                                         float(a.saved_seconds), float(a.boxing_seconds),
                                         bool(a.chosen)) for a in p.auto))

    def to_bytes(self) -> bytes:
        return bytes(self.to_proto().SerializeToString(deterministic=True))

    @classmethod
    def from_bytes(cls, data: bytes) -> "SplitPlan":
        p = _pb().SplitPlan()
        p.ParseFromString(data)
        return cls.from_proto(p)

    def summary(self) -> str:
        from tfplace.splits.summary import summary_table
        return summary_table(self)


def _pb() -> Any:
    # imported by name: the generated module is not in pyproject's mypy skip list (owned by the
    # lead), and protobuf's message classes are built at import time anyway
    return importlib.import_module("tfplace._pb.splits_pb2")
