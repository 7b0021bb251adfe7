"""plan_pipeline: units -> K balanced stages on K devices, queues, schedule check -> PipelinePlan.

Per micro-batch (the global batch / M), stage s on device group g_s running units [i, j):

    seconds(s) = flops[i:j] / M / flops(g_s)                       forward + backward + update
               + send(out_bytes[j-1] / M to s+1) + send(grad_bytes[i-1] / M to s-1)
    need(s)    = param_factor x params[i:j]
               + stash(s) x stash_bytes[i:j] / M                   stash(s): the schedule's peak
               + capacity(s-1 -> s) x out_bytes[i-1] / M           queues it receives into
               + capacity(s+1 -> s) x grad_bytes[j-1] / M
    step       = max_s seconds(s) x (M + K - 1)                    fill, M steady ticks, drain

stages="auto" takes the K (1 .. number of device groups) with the smallest predicted step among
those whose stages all fit, the fewest stages on a tie.
"""
from __future__ import annotations

from typing import Sequence, Union

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.errors import PlanError, bullets
from tfplace.memory import fmt_bytes
from tfplace.pipeline.partition import balance, check_stage_count, split_batch
from tfplace.pipeline.schedules import stage_orders, stash_peaks
from tfplace.pipeline.units import Unit, units_from_dag
from tfplace.pipeline.value import BACKWARD, FORWARD, PipelinePlan, PipelineQueue, PipelineStage
from tfplace.pipeline.waits import Capacity, queue_capacities, simulate

__all__ = ["plan_pipeline", "resolve_boundaries", "DEFAULT_CAPACITY", "Capacities"]

# Double buffering: the producer can finish the next micro-batch while the consumer works on
# one. Any capacity >= waits.min_capacity (1 for 1F1B with M > 1, else 0) cannot deadlock.
DEFAULT_CAPACITY = 2
Capacities = Union[int, tuple[Capacity, Capacity], None]     # all queues, or (forward, backward)


def resolve_boundaries(units: Sequence[Unit], names: Sequence[str] | str | None) -> list[int]:
    """Unit indices that must start a stage, from unit names or op names (any op of a unit)."""
    if names is None:
        return []
    wanted = [names] if isinstance(names, str) else list(names)
    by_unit = {u.name: i for i, u in enumerate(units)}
    by_op = {op: i for i, u in enumerate(units) for op in u.ops}
    out, unknown = [], []
    for name in wanted:
        i = by_unit.get(name, by_op.get(name))
        if i is None:
            unknown.append(name)
        else:
            out.append(i)
    if unknown:
        raise PlanError(f"stage_boundaries ({', '.join(map(repr, unknown))}) name no unit or op; "
                        f"valid units: {', '.join(u.name for u in units)} (or any of their ops)")
    return sorted(set(out))


def _groups(cluster: Cluster, devices: Sequence[str | Sequence[str]] | None
            ) -> list[tuple[str, ...]]:
    groups = [(d,) if isinstance(d, str) else tuple(d)
              for d in (devices if devices is not None else cluster.names)]
    unknown = sorted({d for g in groups for d in g} - set(cluster.names))
    if unknown or any(not g for g in groups):
        raise PlanError(f"pipeline devices ({', '.join(unknown) or 'an empty group'}) are not "
                        f"cluster devices; use names from: {', '.join(cluster.names)}")
    return groups


class _Costs:
    """The per-(stage, i, j) time and memory of one K, as prefix sums and per-stage tables so
    the O(K n^2) partition search costs a few lookups per candidate."""

    def __init__(self, units: Sequence[Unit], cluster: Cluster, groups: list[tuple[str, ...]],
                 k: int, m: int, schedule: str, fwd: tuple[int, ...], bwd: tuple[int, ...],
                 param_factor: float) -> None:
        self.units, self.groups, self.m = units, groups[:k], m
        self.stash = stash_peaks(stage_orders(schedule, k, m))
        self.flops, self.params, self.stashed = [0.0], [0.0], [0]
        for u in units:
            self.flops.append(self.flops[-1] + u.flops)
            self.params.append(self.params[-1] + param_factor * u.param_bytes)
            self.stashed.append(self.stashed[-1] + u.stash_bytes)
        self.inv_speed = [1.0 / (m * sum(cluster.device(d).flops for d in g)) for g in self.groups]
        self.memory = [sum(cluster.device(d).memory for d in g) for g in self.groups]
        n = len(units)
        out = [0] + [self.per_mb(u.out_bytes) for u in units]      # by boundary j (after j-1)
        grad = [0] + [self.per_mb(u.grad_bytes) for u in units]
        zero = [0.0] * (n + 1)
        # send_next[s][j]: stage s ending before unit j sends its activations to s+1;
        # send_prev[s][i]: stage s starting at unit i sends its gradients to s-1.
        self.send_next = [zero if s + 1 == k else
                          [cluster.transfer_seconds(g[0], self.groups[s + 1][0], b) for b in out]
                          for s, g in enumerate(self.groups)]
        self.send_prev = [zero if s == 0 else
                          [cluster.transfer_seconds(g[0], self.groups[s - 1][0], b) for b in grad]
                          for s, g in enumerate(self.groups)]
        # queue slots a stage receives into: forward from s-1 before unit i, backward from s+1
        self.recv_fwd = [[0] * (n + 1) if s == 0 else [fwd[s - 1] * b for b in out]
                         for s in range(k)]
        self.recv_bwd = [[0] * (n + 1) if s + 1 == k else [bwd[s] * b for b in grad]
                         for s in range(k)]

    def per_mb(self, nbytes: int) -> int:
        return -(-nbytes // self.m)

    def compute(self, s: int, i: int, j: int) -> float:
        return (self.flops[j] - self.flops[i]) * self.inv_speed[s]

    def seconds(self, s: int, i: int, j: int) -> float:
        return ((self.flops[j] - self.flops[i]) * self.inv_speed[s] + self.send_next[s][j]
                + self.send_prev[s][i])

    def need(self, s: int, i: int, j: int) -> int:
        return (int(self.params[j] - self.params[i] + 0.5)
                + self.stash[s] * -(-(self.stashed[j] - self.stashed[i]) // self.m)
                + self.recv_fwd[s][i] + self.recv_bwd[s][j])

    def fits(self, s: int, i: int, j: int) -> bool:
        return self.need(s, i, j) <= self.memory[s]


def _capacities(capacities: Capacities, k: int, m: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if capacities is None:
        capacities = DEFAULT_CAPACITY
    f, b = capacities if isinstance(capacities, tuple) else (capacities, capacities)
    return queue_capacities(f, k, m, "forward"), queue_capacities(b, k, m, "backward")


def _memory_error(costs: _Costs, starts: tuple[int, ...], schedule: str, k: int) -> PlanError:
    n = len(costs.units)
    lines = []
    for s, i in enumerate(starts):
        j = starts[s + 1] if s + 1 < len(starts) else n
        need, cap = costs.need(s, i, j), costs.memory[s]
        lines.append(f"stage {s} ({costs.units[i].name}..{costs.units[j - 1].name}) on "
                     f"{','.join(costs.groups[s])}: needs {fmt_bytes(need)} "
                     f"({need} B, stash {costs.stash[s]}) of {fmt_bytes(cap)} ({cap} B)"
                     + ("  <- too much" if need > cap else ""))
    fixes = "more pipeline_stages, devices with more memory"
    fixes += ", schedule='1f1b' (stashes at most K-s micro-batches, not M)" \
        if schedule == "gpipe" else ", more micro_batches (smaller stashed activations)"
    return PlanError(bullets(f"no split of {n} units into {k} stages fits the devices' memory "
                             f"(schedule {schedule!r}, M={costs.m}); the fastest split needs:",
                             lines) + f"\nfix: {fixes}")


def _plan_k(units: Sequence[Unit], cluster: Cluster, groups: list[tuple[str, ...]], k: int,
            m: int, schedule: str, starts: list[int], capacities: Capacities,
            param_factor: float, global_batch: int) -> PipelinePlan:
    check_stage_count(k, len(units), len(groups))
    inner = [b for b in starts if b > 0]
    if len(inner) > k - 1:
        raise PlanError(f"stage_boundaries ({', '.join(units[i].name for i in inner)}) need "
                        f"{len(inner) + 1} stages but pipeline_stages={k}; use pipeline_stages "
                        f">= {len(inner) + 1} or fewer boundaries")
    fwd, bwd = _capacities(capacities, k, m)
    timeline = simulate(schedule, k, m, forward_capacity=fwd, backward_capacity=bwd)
    costs = _Costs(units, cluster, groups, k, m, schedule, fwd, bwd, param_factor)
    split = balance(len(units), k, costs.seconds, fits=costs.fits, starts=starts,
                    bound=costs.compute)
    if split is None:
        fastest = balance(len(units), k, costs.seconds, starts=starts, bound=costs.compute)
        raise _memory_error(costs, fastest or tuple(range(k)), schedule, k)
    bounds = list(split) + [len(units)]
    stages = []
    for s in range(k):
        i, j = bounds[s], bounds[s + 1]
        part = units[i:j]
        stages.append(PipelineStage(
            index=s, devices=costs.groups[s], units=tuple(u.name for u in part),
            ops=tuple(op for u in part for op in u.ops), flops=costs.flops[j] - costs.flops[i],
            param_bytes=sum(u.param_bytes for u in part), peak_bytes=costs.need(s, i, j),
            stash=costs.stash[s], seconds=costs.seconds(s, i, j)))
    queues = []
    for s in range(k - 1):
        last = units[bounds[s + 1] - 1]
        queues.append(PipelineQueue(s, s + 1, FORWARD, fwd[s], costs.per_mb(last.out_bytes),
                                    timeline.forward_peak[s]))
        queues.append(PipelineQueue(s + 1, s, BACKWARD, bwd[s], costs.per_mb(last.grad_bytes),
                                    timeline.backward_peak[s]))
    step = max(st.seconds for st in stages) * (m + k - 1)
    return PipelinePlan(schedule=schedule, micro_batches=m, stages=tuple(stages),
                        queues=tuple(queues), predicted_step_seconds=step,
                        global_batch=global_batch)


def plan_pipeline(source: OpDag | Sequence[Unit], cluster: Cluster, *,
                  stages: int | str = "auto", micro_batches: int, schedule: str = "1f1b",
                  stage_boundaries: Sequence[str] | str | None = None,
                  capacities: Capacities = None,
                  devices: Sequence[str | Sequence[str]] | None = None,
                  global_batch: int | None = None, param_factor: float = 1.0,
                  model_scope: str | None = None,
                  layer_names: Sequence[str] | None = None) -> PipelinePlan:
    """A pipeline plan: contiguous balanced stages, queue capacities checked against deadlock.

    source: a captured training step's OpDag (units = its layers, ``units_from_dag``) or units.
    stages: K, or "auto" (module docstring). devices: one cluster device, or a group of them,
    per stage, in pipeline order (default: the cluster's devices). capacities: every queue's,
    or (forward, backward), each an int or one per queue (default DEFAULT_CAPACITY).
    global_batch: checked to split into micro_batches. param_factor: multiplies parameter
    bytes (units from a DAG already count optimizer slots; hand-made units may pass 3 for Adam).
    model_scope, layer_names: how units are found in a DAG (``units.units_from_dag``); pass
    ``[l.name for l in model.layers]`` so units and stage_boundaries use Keras layer names.
    """
    stage_orders(schedule, 1, micro_batches)               # unknown schedule / bad M first
    if global_batch is not None:
        split_batch(global_batch, micro_batches)
    units = tuple(units_from_dag(source, model_scope=model_scope, layer_names=layer_names)
                  if isinstance(source, OpDag) else source)
    if not units:
        raise PlanError("no units to split into pipeline stages; pass a training step's OpDag "
                        "or a non-empty list of units")
    groups = _groups(cluster, devices)
    starts = resolve_boundaries(units, stage_boundaries)
    gb = global_batch or 0
    if stages != "auto":
        if not isinstance(stages, int) or isinstance(stages, bool):
            raise PlanError(f"pipeline_stages must be an int or 'auto' (got {stages!r})")
        return _plan_k(units, cluster, groups, stages, micro_batches, schedule, starts,
                       capacities, param_factor, gb)
    best: PipelinePlan | None = None
    error: PlanError | None = None
    for k in range(len(set(starts) - {0}) + 1, min(len(groups), len(units)) + 1):
        try:
            plan = _plan_k(units, cluster, groups, k, micro_batches, schedule, starts,
                           capacities, param_factor, gb)
        except PlanError as e:
            error = e
            continue
        if best is None or plan.predicted_step_seconds < best.predicted_step_seconds:
            best = plan
    if best is None:
        raise error or PlanError(f"no pipeline fits: {len(units)} units, {len(groups)} device "
                                 f"groups, stage_boundaries {stage_boundaries!r}")
    return best
