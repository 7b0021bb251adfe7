"""The cross-stage wait graph of a schedule over bounded queues: deadlock check and timing.

Stage s and s+1 share two FIFO queues: forward queue s carries F(s, m)'s activations to
F(s+1, m), backward queue s carries B(s+1, m)'s gradients to B(s, m). A stage is one thread:
an op starts by dequeuing its input (waiting for it), computes for its ticks, and ends by
enqueuing its output, blocking while the queue is full. So, as "waits on" edges between events:

    start(op)            waits on  end(previous op of the stage)
    start(consumer, i)   waits on  end(producer, i)               the item must be there
    end(producer, i)     waits on  start(consumer, i - capacity)  a slot must be free
    end(op)              waits on  start(op) + its ticks

Capacity 0 is a rendezvous (put and get of item i happen together); a zero-length cycle is
such a meeting, not a deadlock. A cycle through some op's start -> end edge is a deadlock: the
events would have to precede themselves. Example (1F1B, K=2, M=2, both capacities 0): stage 0
blocks sending F1 until stage 1 receives it, stage 1 first blocks sending B0 until stage 0
receives it, which stage 0 does only after F1. With no deadlock, each event's time is its
longest wait path (times in integer clock ticks), which gives the clock view and each queue's
peak occupancy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

from tfplace.errors import PlanError
from tfplace.pipeline.schedules import Op, stage_orders, stash_peaks

__all__ = ["Capacity", "Timeline", "queue_capacities", "simulate", "find_deadlock",
           "check_deadlock", "min_capacity"]

Capacity = Union[int, Sequence[int], None]   # one for all queues, one per queue, None = unbounded
START, END = 0, 1


@dataclass(frozen=True)
class Timeline:
    """A deadlock-free schedule timed in ticks: per stage, each op's start and end."""

    schedule: str
    orders: tuple[tuple[Op, ...], ...]
    starts: tuple[tuple[int, ...], ...]
    ends: tuple[tuple[int, ...], ...]
    forward_capacity: tuple[int, ...]      # per queue s -> s+1
    backward_capacity: tuple[int, ...]     # per queue s+1 -> s
    forward_peak: tuple[int, ...]          # most items ever waiting in each forward queue
    backward_peak: tuple[int, ...]
    stash_peak: tuple[int, ...]            # per stage, most micro-batches between F and B
    forward_ticks: int = 1
    backward_ticks: int = 1

    def busy(self, op: Op) -> int:
        """Ticks op computes; the rest of [start, end) it is blocked sending to a full queue."""
        return self.forward_ticks if op.kind == "F" else self.backward_ticks

    @property
    def stages(self) -> int:
        return len(self.orders)

    @property
    def ticks(self) -> int:
        return max((e[-1] for e in self.ends if e), default=0)


def queue_capacities(value: Capacity, stages: int, micro_batches: int,
                     what: str) -> tuple[int, ...]:
    """One capacity per queue (K-1 of them): an int for all, a sequence, or None = unbounded
    (M, which never blocks: at most M items ever pass)."""
    if value is None:
        return (micro_batches,) * (stages - 1)
    caps = (value,) * (stages - 1) if isinstance(value, int) else tuple(value)
    bad = [c for c in caps if not isinstance(c, int) or isinstance(c, bool) or c < 0]
    if len(caps) != stages - 1 or bad:
        raise PlanError(f"{what} queue capacities ({value!r}) must be one int >= 0 or "
                        f"{stages - 1} of them, one per queue between {stages} stages")
    return caps


class _Graph:
    """Events 2*op+START/END of every (stage, position) op, with weighted wait edges.

    A capacity-0 put and its get are one event (merged with union-find); after that any
    cycle is causal, a deadlock.
    """

    def __init__(self, orders: tuple[tuple[Op, ...], ...], fwd: tuple[int, ...],
                 bwd: tuple[int, ...], ticks: dict[str, int]) -> None:
        self.orders = orders
        self.ops: list[tuple[int, Op]] = [(s, op) for s, order in enumerate(orders) for op in order]
        first = [0]
        for order in orders:
            first.append(first[-1] + len(order))
        self.first = first
        self.rep = list(range(2 * len(self.ops)))
        self.waits: list[tuple[int, int, int]] = []        # (waiter, waited, ticks)
        pos = [{op: i for i, op in enumerate(order)} for order in orders]
        for g, (s, op) in enumerate(self.ops):
            self.waits.append((2 * g + END, 2 * g + START, ticks[op.kind]))
            if g > first[s]:
                self.waits.append((2 * g + START, 2 * (g - 1) + END, 0))
        for s in range(len(orders) - 1):
            self._queue(s, s + 1, "F", fwd[s], pos)      # forward queue s -> s+1
            self._queue(s + 1, s, "B", bwd[s], pos)      # backward queue s+1 -> s

    def _find(self, e: int) -> int:
        while self.rep[e] != e:
            self.rep[e] = self.rep[self.rep[e]]
            e = self.rep[e]
        return e

    def _queue(self, src: int, dst: int, kind: str, cap: int, pos: list[dict[Op, int]]) -> None:
        put = [op for op in self.orders[src] if op.kind == kind]
        get = [op for op in self.orders[dst] if op.kind == kind]
        if put != get:
            raise PlanError(f"stage {src} sends {kind} micro-batches in the order "
                            f"({' '.join(map(str, put))}) but stage {dst} takes them in the order "
                            f"({' '.join(map(str, get))}); a FIFO queue needs one order, fix "
                            "the schedule")
        for i, op in enumerate(put):
            p = 2 * (self.first[src] + pos[src][op]) + END
            c = 2 * (self.first[dst] + pos[dst][op]) + START
            if cap == 0:
                self.rep[self._find(c)] = self._find(p)
            else:
                self.waits.append((c, p, 0))
                if i - cap >= 0:
                    self.waits.append((p, 2 * (self.first[dst] + pos[dst][put[i - cap]]) + START, 0))

    def name(self, event: int) -> str:
        root = self._find(event)
        return "=".join(dict.fromkeys(f"s{s}:{op}" for e, (s, op) in
                                      ((e, self.ops[e // 2]) for e in range(len(self.rep)))
                                      if self._find(e) == root))

    def solve(self) -> tuple[list[int], list[int] | None]:
        """(event times in ticks, []) or ([], a wait cycle of events) - Kahn over the waits."""
        n = len(self.rep)
        roots = [self._find(e) for e in range(n)]
        waited: dict[int, dict[int, int]] = {}           # waiter -> {waited: ticks}
        for a, b, d in self.waits:
            ra, rb = roots[a], roots[b]
            if ra != rb:
                row = waited.setdefault(ra, {})
                row[rb] = max(row.get(rb, 0), d)
        waiters: dict[int, list[int]] = {}
        for a, row in waited.items():
            for b in row:
                waiters.setdefault(b, []).append(a)
        nodes = sorted(set(roots))
        left = {v: len(waited.get(v, ())) for v in nodes}
        ready = [v for v in nodes if left[v] == 0]
        time = dict.fromkeys(nodes, 0)
        while ready:
            v = ready.pop()
            for a in waiters.get(v, ()):
                time[a] = max(time[a], time[v] + waited[a][v])
                left[a] -= 1
                if left[a] == 0:
                    ready.append(a)
        stuck = [v for v in nodes if left[v] > 0]
        if stuck:
            seen: dict[int, int] = {}
            v = stuck[0]
            while v not in seen:                         # every stuck event waits on one
                seen[v] = len(seen)
                v = next(b for b in sorted(waited[v]) if left[b] > 0)
            loop = [e for e, _ in sorted(seen.items(), key=lambda kv: kv[1]) if seen[e] >= seen[v]]
            return [], loop + [v]
        return [time[r] for r in roots], None


def _names(graph: _Graph, cycle: list[int]) -> list[str]:
    names: list[str] = []
    for e in cycle:
        if not names or graph.name(e) != names[-1]:
            names.append(graph.name(e))
    if names[0] != names[-1]:
        names.append(names[0])
    return names


def find_deadlock(schedule: str, stages: int, micro_batches: int, *,
                  forward_capacity: Capacity = None,
                  backward_capacity: Capacity = None,
                  ) -> list[str] | None:
    """The wait cycle (["s0:F1", "s1:F1", ...]: each waits on the next) or None if none."""
    graph, _, _ = _build(schedule, stages, micro_batches, forward_capacity, backward_capacity)
    _, cycle = graph.solve()
    return None if cycle is None else _names(graph, cycle)


def _build(schedule: str, stages: int, micro_batches: int, fwd: Capacity, bwd: Capacity,
           ticks: dict[str, int] | None = None) -> tuple[_Graph, tuple[int, ...], tuple[int, ...]]:
    orders = stage_orders(schedule, stages, micro_batches)
    f = queue_capacities(fwd, stages, micro_batches, "forward")
    b = queue_capacities(bwd, stages, micro_batches, "backward")
    return _Graph(orders, f, b, ticks or {"F": 1, "B": 1}), f, b


def min_capacity(schedule: str, stages: int, micro_batches: int) -> int:
    """The smallest capacity that, given to every queue, cannot deadlock the schedule."""
    for cap in range(micro_batches + 1):
        if find_deadlock(schedule, stages, micro_batches, forward_capacity=cap,
                         backward_capacity=cap) is None:
            return cap
    return micro_batches


def check_deadlock(schedule: str, stages: int, micro_batches: int, *,
                   forward_capacity: Capacity = None,
                   backward_capacity: Capacity = None) -> None:
    """PlanError naming K, M, the capacities, the wait cycle and the fix if the queues deadlock."""
    simulate(schedule, stages, micro_batches, forward_capacity=forward_capacity,
             backward_capacity=backward_capacity)


def simulate(schedule: str, stages: int, micro_batches: int, *,
             forward_capacity: Capacity = None,
             backward_capacity: Capacity = None,
             forward_ticks: int = 1, backward_ticks: int = 1) -> Timeline:
    """Time the schedule over the bounded queues; PlanError if they deadlock it."""
    if min(forward_ticks, backward_ticks) < 1:
        raise PlanError(f"op ticks must be >= 1 (forward {forward_ticks}, backward "
                        f"{backward_ticks})")
    graph, fwd, bwd = _build(schedule, stages, micro_batches, forward_capacity,
                             backward_capacity, {"F": forward_ticks, "B": backward_ticks})
    time, loop = graph.solve()
    if loop is not None:
        cycle = _names(graph, loop)
        fix = min_capacity(schedule, stages, micro_batches)
        raise PlanError(
            f"schedule {schedule!r} deadlocks with K={stages} stages, M={micro_batches} "
            f"micro-batches, forward queue capacities ({', '.join(map(str, fwd))}) and backward "
            f"({', '.join(map(str, bwd))}): {' -> '.join(cycle)} (each waits on the next); "
            f"give every queue capacity >= {fix} (pipeline capacities=...)")
    starts, ends = [], []
    for s, order in enumerate(graph.orders):
        g0 = graph.first[s]
        starts.append(tuple(time[2 * (g0 + i) + START] for i in range(len(order))))
        ends.append(tuple(time[2 * (g0 + i) + END] for i in range(len(order))))
    f_peak, b_peak = [], []
    for s in range(stages - 1):
        f_peak.append(_peak(graph, time, s, s + 1, "F"))
        b_peak.append(_peak(graph, time, s + 1, s, "B"))
    return Timeline(schedule=schedule, orders=graph.orders, starts=tuple(starts),
                    ends=tuple(ends), forward_capacity=fwd, backward_capacity=bwd,
                    forward_peak=tuple(f_peak), backward_peak=tuple(b_peak),
                    stash_peak=stash_peaks(graph.orders), forward_ticks=forward_ticks,
                    backward_ticks=backward_ticks)


def _peak(graph: _Graph, time: list[int], src: int, dst: int, kind: str) -> int:
    """Most items in the queue at once: item m is in it over [put time, get time)."""
    put = {op: time[2 * (graph.first[src] + i) + END]
           for i, op in enumerate(graph.orders[src]) if op.kind == kind}
    get = {op: time[2 * (graph.first[dst] + i) + START]
           for i, op in enumerate(graph.orders[dst]) if op.kind == kind}
    live = peak = 0
    # (tick, -1) sorts before (tick, +1): a slot freed at a tick can be refilled at that tick
    for _, d in sorted([(t, 1) for t in put.values()] + [(get[op], -1) for op in put]):
        live += d
        peak = max(peak, live)
    return peak
