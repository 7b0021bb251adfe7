"""The placer registry: name -> place(dag, cluster, *, calibration) -> {op name: device name}."""
from __future__ import annotations

from typing import Callable, Protocol

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.costs import Calibration
from tfplace.errors import PlanError

__all__ = ["Placer", "PLACERS", "PLACER_NAMES", "register", "get_placer"]


class Placer(Protocol):
    def __call__(self, dag: OpDag, cluster: Cluster, *,
                 calibration: Calibration) -> dict[str, str]: ...


PLACERS: dict[str, Placer] = {}


def register(name: str) -> Callable[[Placer], Placer]:
    """Decorator adding a placer to PLACERS under `name`."""
    def deco(fn: Placer) -> Placer:
        PLACERS[name] = fn
        return fn
    return deco


def get_placer(name: str) -> Placer:
    try:
        return PLACERS[name]
    except KeyError:
        raise PlanError(f"unknown placer {name!r} (valid: {', '.join(sorted(PLACERS))}); "
                        "pass one of them with --placer/placer=") from None


from tfplace.placers import m_etf, m_topo, round_robin, single  # noqa: E402,F401  (registers)

PLACER_NAMES: tuple[str, ...] = tuple(sorted(PLACERS))
