"""Pipeline schedules as pure generators in a name registry: each stage's order of F/B ops.

A schedule is a function ``(stage, stages, micro_batches) -> Iterator[Op]`` yielding, in order,
the forward (``F``) and backward (``B``) passes one stage runs in one training step. Nothing here
knows about time, queues or TF: ``tfplace.pipeline.waits`` turns the orders into a timed clock
view and checks that bounded queues cannot deadlock them; the runtime only consumes the orders.

K=3 stages, M=4 micro-batches, one tick per op (``grid.schedule_grid``)::

    gpipe                                    1f1b
    s0  F0 F1 F2 F3 .  .  .  .  B3 B2 B1 B0  F0 F1 F2 .  .  B0 F3 B1 .  B2 .  B3
    s1  .  F0 F1 F2 F3 .  .  B3 B2 B1 B0 .   .  F0 F1 .  B0 F2 B1 F3 B2 .  B3 .
    s2  .  .  F0 F1 F2 F3 B3 B2 B1 B0 .  .   .  .  F0 B0 F1 B1 F2 B2 F3 B3 .  .
"""
from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Protocol

from tfplace.errors import PlanError

__all__ = ["Op", "Schedule", "SCHEDULES", "SCHEDULE_NAMES", "register", "get_schedule",
           "gpipe", "one_f_one_b", "stage_orders", "stash_peaks", "check_shape"]


class Op(NamedTuple):
    """One pass of one micro-batch on one stage: ``Op("F", 2)`` equals the tuple ``("F", 2)``."""

    kind: str                     # "F" forward | "B" backward
    micro_batch: int

    def __str__(self) -> str:
        return f"{self.kind}{self.micro_batch}"


class Schedule(Protocol):
    def __call__(self, stage: int, stages: int, micro_batches: int) -> Iterator[Op]: ...


SCHEDULES: dict[str, Schedule] = {}


def register(name: str) -> Callable[[Schedule], Schedule]:
    """Decorator adding a schedule to SCHEDULES under `name`."""
    def deco(fn: Schedule) -> Schedule:
        SCHEDULES[name] = fn
        return fn
    return deco


def get_schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise PlanError(f"unknown pipeline schedule {name!r} (valid: "
                        f"{', '.join(sorted(SCHEDULES))}); pass one of them as schedule=") from None


def check_shape(stages: int, micro_batches: int) -> None:
    """PlanError unless stages >= 1 and micro_batches >= 1 (both ints)."""
    problems = []
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        problems.append(f"stages must be an int >= 1 (got {stages!r})")
    if not isinstance(micro_batches, int) or isinstance(micro_batches, bool) or micro_batches < 1:
        problems.append(f"micro_batches must be an int >= 1 (got {micro_batches!r})")
    if problems:
        raise PlanError("; ".join(problems))


@register("gpipe")
def gpipe(stage: int, stages: int, micro_batches: int) -> Iterator[Op]:
    """GPipe (Huang et al. 2019, arXiv:1811.06965): every forward, then every backward.

    Backwards run in reverse micro-batch order (B(M-1) first), as in the GPipe paper's Figure 2:
    the last stage starts the backward of the micro-batch it has just finished without waiting,
    and each stage frees its stashed activations last-in first-out. Every stage stashes all M.
    """
    yield from (Op("F", m) for m in range(micro_batches))
    yield from (Op("B", m) for m in reversed(range(micro_batches)))


@register("1f1b")
def one_f_one_b(stage: int, stages: int, micro_batches: int) -> Iterator[Op]:
    """1F1B with a flush: PipeDream-Flush (Narayanan et al. 2021, "Memory-Efficient
    Pipeline-Parallel DNN Training", arXiv:2006.09503) = Megatron-LM's non-interleaved schedule.

    Stage s runs W = min(K-s-1, M) warm-up forwards, then alternates one forward and one
    backward while forwards remain, then the W cool-down backwards; micro-batches in order on
    both passes. Stage s stashes at most min(K-s, M) micro-batches' activations.
    """
    warmup = min(stages - stage - 1, micro_batches)
    yield from (Op("F", m) for m in range(warmup))
    for i in range(micro_batches - warmup):
        yield Op("F", warmup + i)
        yield Op("B", i)
    yield from (Op("B", m) for m in range(micro_batches - warmup, micro_batches))


def stage_orders(schedule: str, stages: int, micro_batches: int) -> tuple[tuple[Op, ...], ...]:
    """Every stage's ops in order; checks each runs every F and B exactly once, F(m) before B(m)."""
    check_shape(stages, micro_batches)
    fn = get_schedule(schedule)
    orders = tuple(tuple(fn(s, stages, micro_batches)) for s in range(stages))
    want = sorted([Op("F", m) for m in range(micro_batches)] +
                  [Op("B", m) for m in range(micro_batches)])
    for s, order in enumerate(orders):
        seen = {op: i for i, op in enumerate(order)}
        if sorted(order) != want or any(seen[Op("F", m)] > seen[Op("B", m)]
                                        for m in range(micro_batches)):
            raise PlanError(f"schedule {schedule!r} gives stage {s} of {stages} the order "
                            f"({' '.join(map(str, order))}), not each of the {micro_batches} "
                            "micro-batches' F then B once; fix the schedule generator")
    return orders


def stash_peaks(orders: tuple[tuple[Op, ...], ...]) -> tuple[int, ...]:
    """Per stage, the most micro-batches whose forward ran and whose backward has not."""
    peaks = []
    for order in orders:
        live = peak = 0
        for op in order:
            live += 1 if op.kind == "F" else -1
            peak = max(peak, live)
        peaks.append(peak)
    return tuple(peaks)


SCHEDULE_NAMES: tuple[str, ...] = tuple(sorted(SCHEDULES))
