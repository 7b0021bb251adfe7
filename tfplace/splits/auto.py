"""splits="auto" for speed: whether splitting a variable saves more compute than its boxing costs.

Pure arithmetic on figures the glue (tfplace.split_parallel) measures from the cost model:

    saved   = compute seconds of the ops the split shards x (1 - 1/ways)
    boxing  = sum over the boxing steps of (link latency + bytes sent per device / bandwidth)
    split   when saved > boxing (strictly); the best gain wins, ties by variable name

The memory side (split whatever does not fit) is tfplace.splits.memory_fit; a memory split is
recorded here too (reason "memory"), so plan.summary() shows why every auto split exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tfplace.splits.layout import Layout

__all__ = ["SpeedCandidate", "AutoChoice", "speed_choice", "choose_for_speed", "REASONS"]

REASONS = ("memory", "speed")


@dataclass(frozen=True)
class SpeedCandidate:
    """One variable split tried on its own: what its split ops compute, what its boxing sends."""

    variable: str
    layout: Layout
    ways: int                       # devices in the split group
    compute_seconds: float          # the split ops' whole (unsplit) compute time
    boxing_steps: int
    boxing_bytes: int               # sent per device over all the boxing steps


@dataclass(frozen=True)
class AutoChoice:
    """A decision of splits="auto", with the figures that made it (shown by plan.summary())."""

    variable: str
    layout: Layout
    ways: int
    reason: str                     # "memory" | "speed"
    saved_seconds: float            # compute saved per step (0 for a memory split)
    boxing_seconds: float           # the boxing it adds per step
    chosen: bool

    def describe(self) -> str:
        verdict = "split" if self.chosen else "kept whole"
        if self.reason == "memory":
            return f"{self.variable} {self.layout} over {self.ways}: {verdict} (does not fit " \
                   f"whole; boxing {self.boxing_seconds * 1e6:.1f} us)"
        return (f"{self.variable} {self.layout} over {self.ways}: {verdict} (saves "
                f"{self.saved_seconds * 1e6:.1f} us of compute, boxing costs "
                f"{self.boxing_seconds * 1e6:.1f} us)")


def speed_choice(c: SpeedCandidate, *, bandwidth: float, latency: float) -> AutoChoice:
    """The figures of one candidate; chosen when the compute saved exceeds the boxing time."""
    saved = c.compute_seconds * (1.0 - 1.0 / c.ways) if c.ways > 1 else 0.0
    boxing = c.boxing_steps * latency + c.boxing_bytes / bandwidth
    return AutoChoice(c.variable, c.layout, c.ways, "speed", saved, boxing, saved > boxing)


def choose_for_speed(candidates: Sequence[SpeedCandidate], *, bandwidth: float,
                     latency: float) -> tuple[AutoChoice, ...]:
    """Every candidate's figures, best gain first; at most one is chosen (splits of different
    variables interact through their boxing, so the gains of two do not add up)."""
    figures = sorted((speed_choice(c, bandwidth=bandwidth, latency=latency)
                      for c in candidates),
                     key=lambda a: (-(a.saved_seconds - a.boxing_seconds), a.variable))
    out, taken = [], False
    for a in figures:
        keep = a.chosen and not taken
        taken = taken or keep
        out.append(a if keep == a.chosen else AutoChoice(
            a.variable, a.layout, a.ways, a.reason, a.saved_seconds, a.boxing_seconds, False))
    return tuple(out)
