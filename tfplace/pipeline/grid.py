"""The clock view of a timed schedule: stage x clock cells, and the ASCII grid plan.summary() shows."""
from __future__ import annotations

from typing import Iterator

from tfplace.pipeline.schedules import Op
from tfplace.pipeline.waits import Timeline

__all__ = ["clock_cycles", "clock_grid", "schedule_grid", "bubble_fraction"]


def clock_grid(timeline: Timeline) -> tuple[tuple[Op | None, ...], ...]:
    """grid[stage][clock]: the op computing on that stage in that tick, None when idle or
    blocked on a full queue."""
    rows = []
    for order, starts, ends in zip(timeline.orders, timeline.starts, timeline.ends):
        row: list[Op | None] = [None] * timeline.ticks
        for op, start in zip(order, starts):
            for t in range(start, start + timeline.busy(op)):
                row[t] = op
        rows.append(tuple(row))
    return tuple(rows)


def clock_cycles(timeline: Timeline) -> Iterator[tuple[tuple[int, Op], ...]]:
    """Like torchgpipe's clock_cycles: per tick, the (stage, op) pairs running in it."""
    grid = clock_grid(timeline)
    for t in range(timeline.ticks):
        yield tuple((s, op) for s, op in enumerate(row[t] for row in grid) if op is not None)


def bubble_fraction(timeline: Timeline) -> tuple[float, ...]:
    """Per stage, the idle share of the step's ticks ((K-1)/(M+K-1) for GPipe at equal ticks)."""
    total = timeline.ticks
    return tuple(1.0 - sum(timeline.busy(op) for op in order) / total if total else 0.0
                 for order in timeline.orders)


def schedule_grid(timeline: Timeline) -> str:
    """Stages as rows, ticks as columns, cells `F3`/`B1`/`.`; a header marks every 5th tick.

        tick  0  1  2  3  4  5
        s0    F0 F1 .  .  B1 B0
        s1    .  F0 F1 B1 B0 .
    """
    grid = clock_grid(timeline)
    width = max([len(str(op)) for row in grid for op in row if op is not None] + [1])
    label = max(len("tick"), len(f"s{len(grid) - 1}"))
    head = " ".join(f"{t:<{width}}" if t % 5 == 0 else " " * width
                    for t in range(timeline.ticks))
    lines = [f"{'tick':<{label}}  {head}".rstrip()]
    for s, row in enumerate(grid):
        cells = " ".join(f"{str(op) if op is not None else '.':<{width}}" for op in row)
        lines.append(f"{f's{s}':<{label}}  {cells}".rstrip())
    return "\n".join(lines)
