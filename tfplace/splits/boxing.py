"""Boxing: the cheapest conversion of a tensor from its producer's layout to its consumer's.

Bytes are what each device sends for a tensor of T bytes on a group of n devices, with the
bandwidth-optimal ring algorithms:

    from \\ to   B                         P                   S(j)
    B          identity 0                zeros 0             slice 0
    P          all_reduce 2(n-1)/n T     identity 0          reduce_scatter (n-1)/n T
    S(i)       all_gather (n-1)/n T      pad_zeros 0         i == j: identity 0
                                                             i != j: all_to_all (n-1)/n^2 T

all_to_all: a device holds T/n, keeps the 1/n of it that stays, and sends the other (n-1)/n
of its shard, (n-1)/n * T/n = (n-1)T/n^2. Slicing alone reaches S(j) only from a tensor that
holds the j-slice whole, i.e. from B; on one group of n an S(i) shard never does (i != j). zeros: device 0 keeps the value and the others hold
zeros, which sum to it. pad_zeros: each device places its slice in a zero tensor of full shape.
Costlier routes (all_gather then slice, all_reduce then slice) are weighed and lose; on one
device every conversion is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tfplace.errors import PlanError
from tfplace.splits.layout import Layout

__all__ = ["Collective", "COLLECTIVES", "Boxing", "choose_boxing", "boxing_routes"]


@dataclass(frozen=True)
class Collective:
    """One conversion: when it applies (src, dst) and its bytes per device (n, tensor bytes)."""

    name: str
    applies: Callable[[Layout, Layout], bool]
    bytes: Callable[[int, int], int]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _split_to_other_split(s: Layout, d: Layout) -> bool:
    return s.is_split and d.is_split and s.axis != d.axis


COLLECTIVES: dict[str, Collective] = {c.name: c for c in (
    Collective("identity", lambda s, d: s == d, lambda n, t: 0),
    Collective("slice", lambda s, d: s.is_broadcast and d.is_split, lambda n, t: 0),
    Collective("zeros", lambda s, d: s.is_broadcast and d.is_partial, lambda n, t: 0),
    Collective("pad_zeros", lambda s, d: s.is_split and d.is_partial, lambda n, t: 0),
    Collective("all_to_all", _split_to_other_split,
               lambda n, t: _ceil_div((n - 1) * t, n * n)),
    Collective("reduce_scatter", lambda s, d: s.is_partial and d.is_split,
               lambda n, t: _ceil_div((n - 1) * t, n)),
    Collective("all_gather", lambda s, d: s.is_split and d.is_broadcast,
               lambda n, t: _ceil_div((n - 1) * t, n)),
    Collective("all_reduce", lambda s, d: s.is_partial and d.is_broadcast,
               lambda n, t: _ceil_div(2 * (n - 1) * t, n)),
    # two-step routes, kept so that the choice is visibly a comparison
    Collective("all_gather+slice", _split_to_other_split,
               lambda n, t: _ceil_div((n - 1) * t, n)),
    Collective("all_reduce+slice", lambda s, d: s.is_partial and d.is_split,
               lambda n, t: _ceil_div(2 * (n - 1) * t, n)),
)}


@dataclass(frozen=True)
class Boxing:
    src: Layout
    dst: Layout
    collective: str
    bytes: int                    # sent per device


def boxing_routes(src: Layout, dst: Layout, n: int, nbytes: int) -> list[Boxing]:
    """Every applicable conversion, cheapest first (ties keep COLLECTIVES order)."""
    if n < 1 or nbytes < 0:
        raise PlanError(f"boxing needs n >= 1 devices and bytes >= 0 (got n={n}, "
                        f"bytes={nbytes})")
    if n == 1:
        return [Boxing(src, dst, "identity", 0)]
    routes = [Boxing(src, dst, c.name, c.bytes(n, nbytes))
              for c in COLLECTIVES.values() if c.applies(src, dst)]
    return sorted(routes, key=lambda b: b.bytes)


def choose_boxing(src: Layout, dst: Layout, n: int, nbytes: int) -> Boxing:
    """The cheapest conversion of a `nbytes` tensor from `src` to `dst` on n devices."""
    routes = boxing_routes(src, dst, n, nbytes)
    if not routes:
        raise PlanError(f"no conversion from {src} to {dst} (layouts: S(axis), B, P)")
    return routes[0]
