"""Contiguous stage partition: the exact min-max balance of a unit sequence, memory-aware.

The algorithm is the classic linear partition dynamic programme (Skiena, "The Algorithm Design
Manual", 2nd ed., section 8.5): best[s][j], the smallest possible slowest-stage time when s
stages cover units [0, j), is min over i of max(best[s-1][i], time(s-1, i, j)). PipeDream's
planner (Narayanan et al., SOSP 2019, section 3.1) solves the same recurrence per layer with
stage-specific costs; here time and fit are functions of (stage, first unit, end unit), so a
stage's device speed, its links and its schedule-dependent memory all enter exactly. O(K n^2)
evaluations for n units and K stages. Ties go to the smallest split point, so earlier stages
(which stash more micro-batches under 1F1B) get the lighter share.
"""
from __future__ import annotations

from typing import Callable, Collection, Sequence

from tfplace.errors import PlanError

__all__ = ["StageCost", "balance", "balance_costs", "split_batch", "check_stage_count"]

StageCost = Callable[[int, int, int], float]       # (stage, first unit, end unit) -> value


def split_batch(global_batch: int, micro_batches: int) -> int:
    """The micro-batch size; PlanError unless micro_batches divides global_batch."""
    if micro_batches < 1 or global_batch < 1 or global_batch % micro_batches:
        fits = [m for m in range(1, global_batch + 1) if global_batch % m == 0] \
            if global_batch >= 1 else []
        raise PlanError(f"a global batch of {global_batch} does not split into {micro_batches} "
                        f"equal micro-batches; use micro_batches in ({', '.join(map(str, fits))}) "
                        "or a batch divisible by it")
    return global_batch // micro_batches


def check_stage_count(stages: int, units: int, devices: int) -> None:
    """PlanError listing every reason `stages` pipeline stages cannot be made."""
    problems = []
    if stages < 1:
        problems.append(f"pipeline_stages must be >= 1 (got {stages})")
    if stages > devices:
        problems.append(f"{stages} stages need {stages} devices but the cluster has {devices}; "
                        f"use pipeline_stages <= {devices} or add devices")
    if stages > units:
        problems.append(f"{stages} stages cannot split {units} units (layers); use "
                        f"pipeline_stages <= {units}")
    if problems:
        from tfplace.errors import bullets
        raise PlanError(bullets("cannot make the pipeline stages:", problems))


def balance(n_units: int, n_stages: int, time: StageCost, *,
            fits: Callable[[int, int, int], bool] | None = None,
            starts: Collection[int] = (), bound: StageCost | None = None,
            ) -> tuple[int, ...] | None:
    """The first unit of each stage for the partition minimising the slowest stage's time.

    time(s, i, j): stage s running units [i, j). fits(s, i, j): whether that is allowed (memory).
    starts: unit indices that must begin a stage. None when no partition satisfies fits/starts.
    bound(s, i, j): optional lower bound of time that never shrinks as i decreases (compute
    alone); the search over i stops once it exceeds the best time found, which keeps it exact.
    """
    if n_stages < 1 or n_units < n_stages:
        return None
    forced = sorted(b for b in set(starts) if 0 < b < n_units)
    inf = float("inf")
    best = [[inf] * (n_units + 1) for _ in range(n_stages + 1)]
    cut = [[-1] * (n_units + 1) for _ in range(n_stages + 1)]
    best[0][0] = 0.0
    for s in range(1, n_stages + 1):
        last = n_units - (n_stages - s)              # leave a unit for each later stage
        for j in range(s, last + 1):
            # the stage [i, j) may not contain a forced start strictly inside it
            low = max([b for b in forced if b < j], default=0)
            here = inf
            for i in range(j - 1, max(s - 1, low) - 1, -1):     # descending: `bound` grows
                if bound is not None and bound(s - 1, i, j) > here:
                    break
                prev = best[s - 1][i]
                if prev == inf or (fits is not None and not fits(s - 1, i, j)):
                    continue
                t = max(prev, time(s - 1, i, j))
                if t <= here:                                  # ties: the smallest i
                    here, cut[s][j] = t, i
            best[s][j] = here
    if best[n_stages][n_units] == inf:
        return None
    bounds = []
    j = n_units
    for s in range(n_stages, 0, -1):
        j = cut[s][j]
        bounds.append(j)
    return tuple(reversed(bounds))


def balance_costs(costs: Sequence[float], stages: int, *,
                  starts: Collection[int] = ()) -> tuple[int, ...]:
    """balance() for plain per-unit costs on equal devices; PlanError if impossible."""
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    span: StageCost = lambda s, i, j: prefix[j] - prefix[i]      # noqa: E731
    out = balance(len(costs), stages, span, starts=starts, bound=span)
    if out is None:
        raise PlanError(f"cannot split {len(costs)} units into {stages} stages with stage "
                        f"starts at ({', '.join(map(str, sorted(starts)))}); use fewer forced "
                        f"starts than stages and pipeline_stages <= {len(costs)}")
    return out
