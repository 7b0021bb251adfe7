"""The SBP layout of a tensor on a device group: S(axis) split, B broadcast, P partial sums."""
from __future__ import annotations

import re
from dataclasses import dataclass

from tfplace.errors import PlanError

__all__ = ["Layout", "B", "P", "S", "parse_layout", "LAYOUT_FORMS"]

LAYOUT_FORMS = "S(axis) with axis >= 0 (e.g. S(0), S(1)), B or P"
_SPLIT = re.compile(r"^S\((\d+)\)$")


@dataclass(frozen=True, order=True)
class Layout:
    """How one logical tensor lies on the n devices of its group (OneFlow's SBP).

    kind "S": device k holds the k-th of n equal slices along `axis`;
    kind "B": every device holds the whole tensor;
    kind "P": every device holds a tensor of the full shape, and the value is their sum.
    """

    kind: str
    axis: int = -1

    def __post_init__(self) -> None:
        if self.kind == "S":
            if self.axis < 0:
                raise PlanError(f"a split layout needs an axis >= 0 (got S({self.axis})); "
                                f"write one of {LAYOUT_FORMS}")
        elif self.kind in ("B", "P"):
            if self.axis != -1:
                raise PlanError(f"layout {self.kind} takes no axis (got axis={self.axis}); "
                                f"write one of {LAYOUT_FORMS}")
        else:
            raise PlanError(f"unknown layout kind {self.kind!r}; write one of {LAYOUT_FORMS}")

    @property
    def is_split(self) -> bool:
        return self.kind == "S"

    @property
    def is_broadcast(self) -> bool:
        return self.kind == "B"

    @property
    def is_partial(self) -> bool:
        return self.kind == "P"

    def __str__(self) -> str:
        return f"S({self.axis})" if self.kind == "S" else self.kind

    def shard_shape(self, shape: tuple[int, ...], n: int) -> tuple[int, ...]:
        """The shape one of n devices holds (a split dim must divide evenly; -1 stays -1)."""
        if self.kind != "S":
            return tuple(shape)
        if self.axis >= len(shape):
            raise PlanError(f"layout {self} does not fit a rank-{len(shape)} tensor "
                            f"(shape {list(shape)}); split an axis below {len(shape)}")
        dim = shape[self.axis]
        if dim >= 0 and dim % n:
            raise PlanError(f"axis {self.axis} of shape {list(shape)} ({dim}) does not divide "
                            f"into {n} equal shards; split another axis or use a device "
                            f"count that divides {dim}")
        out = list(shape)
        out[self.axis] = dim // n if dim >= 0 else -1
        return tuple(out)


B = Layout("B")
P = Layout("P")


def S(axis: int) -> Layout:
    """The layout split along `axis`."""
    return Layout("S", axis)


def parse_layout(text: str | Layout) -> Layout:
    """'S(1)' / 'B' / 'P' (surrounding spaces ignored) -> Layout; junk is a PlanError."""
    if isinstance(text, Layout):
        return text
    if not isinstance(text, str):
        raise PlanError(f"a layout is a string (got {text!r} of type {type(text).__name__}); "
                        f"write one of {LAYOUT_FORMS}")
    t = text.strip().replace(" ", "")
    if t in ("B", "P"):
        return Layout(t)
    m = _SPLIT.match(t)
    if m:
        return Layout("S", int(m.group(1)))
    raise PlanError(f"cannot read layout {text!r}; write one of {LAYOUT_FORMS}")
