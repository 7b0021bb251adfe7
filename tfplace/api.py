"""The one core API every front door calls: capture -> analyse -> plan -> rewrite -> run."""
from __future__ import annotations

import functools
from typing import Any, Callable, TypedDict

from tfplace.capture import Captured, capture
from tfplace.cluster import Cluster
from tfplace.errors import ClusterError, PlanError
from tfplace.plan import Plan

__all__ = ["parallelize", "ParallelFunction", "plan_captured", "rewrite_captured", "compile_step",
           "load_source", "pipeline_options", "check_steps_per_execution"]


class PipelineOptions(TypedDict, total=False):
    """The pipeline keywords the front doors keep and pass on to compile_step."""
    stages: int | str
    micro_batches: int
    schedule: str
    stage_boundaries: Any
    devices_per_stage: int


class SyncOptions(TypedDict):
    """The gradient-sync keywords the front doors keep and pass on to compile_step."""
    sync: str
    sync_backend: str
    fusion_bytes: int | None


def plan_captured(captured: Captured, cluster: Cluster, *, placer: str = "m_etf",
                  calibration: Any = None) -> Plan:
    """Analyse a captured step and plan it on ``cluster`` (pure Python, no TF session)."""
    from tfplace.analysis import analyse
    from tfplace.planner import graph_fingerprint, make_plan
    if not isinstance(cluster, Cluster):
        raise ClusterError(f"cluster must be a tfplace.Cluster (got {type(cluster).__name__}); "
                           "use Cluster.local(devices=N), launch_local(...), from_file(...)")
    dag = analyse(captured.graph_def, captured.variables)
    return make_plan(dag, cluster, placer=placer, variables=captured.variables,
                     calibration=calibration, fingerprint=graph_fingerprint(captured.graph_def))


def rewrite_captured(captured: Captured, plan: Plan, *, collectives: bool = False,
                     sum_variables: Any = (), queues: str | None = "auto") -> Any:
    """The rewritten GraphDef for ``plan``; refuses a plan made for another graph.
    ``sum_variables``: accumulators whose increments Horovod sums over the processes.
    ``queues``: the pipeline's inter-stage channels, "op" | "fifo" | "auto" (the C++ op when
    it is built, see ``runtime.channel.resolve_backend``) | None (plain TF edges)."""
    from tfplace.planner import graph_fingerprint
    from tfplace.rewrite import rewrite
    fp = graph_fingerprint(captured.graph_def)
    if plan.graph_fingerprint and plan.graph_fingerprint != fp:
        raise PlanError(f"the plan was made for graph {plan.graph_fingerprint} but this graph is "
                        f"{fp}; re-plan it (tfplace plan SOURCE --out plan.pbtxt)")
    placed = rewrite(captured.graph_def, plan)
    if plan.splits is not None:
        from tfplace.split_parallel import apply_splits
        return apply_splits(placed, plan, captured, collectives=collectives)
    if plan.pipeline is not None:                 # R >= 1 replicas of the pipeline
        from tfplace import pipeline_replicas
        if queues == "auto":
            from tfplace.runtime.channel import resolve_backend
            queues = resolve_backend()
        return pipeline_replicas.apply(placed, plan, captured, collectives=collectives,
                                       queues=queues)
    if plan.num_replicas > 1:
        from tfplace.data_parallel import replication_spec
        from tfplace.rewrite import horovod, replicate
        spec = replication_spec(plan, captured, collectives=collectives)
        if plan.sync is not None and plan.sync.backend == "horovod":   # a replica per process
            ids = {id(v) for v in sum_variables}
            return horovod.apply(placed, spec, summed=tuple(
                node for node, v in captured.bindings.items() if id(v) in ids))
        placed = replicate.apply(placed, spec)
    return placed


def compile_step(captured: Captured, cluster: Cluster, *, placer: str = "m_etf",
                 writeback: str = "step", calibration: Any = None,
                 data_parallel: Any = 1, sync: str = "auto", sync_backend: str = "tf",
                 fusion_bytes: int | None = None, sum_variables: Any = (), splits: Any = None,
                 pipeline: PipelineOptions | None = None,
                 layer_names: Any = None) -> Any:
    """Plan, rewrite and load a captured step; returns the runtime Executor.

    With ``data_parallel`` > 1 the step must have been captured on ONE replica's share of the
    batch (see ``data_parallel.shard_args``); the executor then takes the global batch. So must
    a ``pipeline`` step on one micro-batch (``pipeline_parallel.micro_batch``), with both on
    one micro-batch of one replica (``pipeline_replicas.micro_batch``)."""
    from tfplace.runtime.executor import Executor
    if splits is not None and isinstance(data_parallel, int) and data_parallel > 1 and \
            sync_backend == "tf":               # the mesh's own error before the replicas'
        from tfplace.splits.mesh import check_mesh
        check_mesh(len(cluster.devices), data_parallel)
    if pipeline is not None and data_parallel != 1:
        from tfplace.pipeline_replicas import plan_pipeline_replicas, replica_count
        plan = plan_pipeline_replicas(
            captured, cluster, replicas=replica_count(cluster, data_parallel, pipeline["stages"],
                                                      sync_backend),
            pipeline=pipeline, sync=sync, backend=sync_backend, fusion_bytes=fusion_bytes,
            layer_names=layer_names, calibration=calibration)
    elif pipeline is not None:
        from tfplace.pipeline_parallel import plan_pipeline_step
        groups = None
        if splits is not None:                  # splits within a stage: a device group each
            from tfplace.split_compose import stage_groups
            groups = stage_groups(cluster.names, pipeline["stages"])
        plan = plan_pipeline_step(captured, cluster, **pipeline, layer_names=layer_names,
                                  calibration=calibration, devices=groups, placer=placer)
    elif data_parallel == 1 and splits is not None:   # memory checked as split; "auto"
        from tfplace.split_auto import plan_split_step
        plan = plan_split_step(captured, cluster, splits, placer=placer, calibration=calibration)
    elif data_parallel == 1:
        plan = plan_captured(captured, cluster, placer=placer, calibration=calibration)
    else:
        from tfplace.data_parallel import plan_data_parallel
        plan = plan_data_parallel(captured, cluster, replicas=data_parallel, placer=placer,
                                  sync=sync, backend=sync_backend, fusion_bytes=fusion_bytes,
                                  calibration=calibration)
    collectives = False
    if splits is not None:
        from tfplace.split_parallel import plan_splits
        from tfplace.runtime.devices import collectives_ready, prepare
        if plan.splits is None:
            plan = plan_splits(captured, plan, splits)
        prepare(cluster, cluster.names)
        collectives = collectives_ready(cluster)
    horovod = plan.sync is not None and plan.sync.backend == "horovod"
    if horovod:
        from tfplace.runtime.horovod import broadcast_variables, processes
        processes(plan.num_replicas)          # Horovod started, one process per replica
    if plan.num_replicas > 1:
        from tfplace.runtime.devices import collectives_ready, prepare
        prepare(cluster, cluster.names)
        collectives = collectives_ready(cluster)
    graph_def = rewrite_captured(captured, plan, collectives=collectives,
                                 sum_variables=sum_variables)
    ex = Executor(captured, graph_def, plan, cluster=cluster, writeback=writeback,
                  sum_variables=sum_variables)
    if horovod:                               # every process starts from rank 0's variables
        broadcast_variables([placed for _node, _orig, placed in ex.pairs])
    return ex


def _signature_key(args: tuple, kwargs: dict) -> Any:
    """Shapes and dtypes of tensor leaves, values of the rest: one trace per distinct key."""
    import tensorflow as tf
    key: list[tuple[tuple[Any, ...], str] | str] = []
    for x in tf.nest.flatten((args, kwargs)):
        shape = getattr(x, "shape", None)
        if shape is not None and hasattr(x, "dtype"):
            key.append((tuple(shape), str(x.dtype)))
        else:
            key.append(repr(x))
    return tuple(key)


class ParallelFunction:
    """A training step run through tfplace; call it like the original step."""

    def __init__(self, fn: Callable[..., Any], *, cluster: Cluster, placer: str = "m_etf",
                 writeback: str = "step", calibration: Any = None, data_parallel: Any = 1,
                 sync: str = "auto", sync_backend: str = "tf",
                 fusion_bytes: int | None = None, pipeline: PipelineOptions | None = None,
                 splits: Any = None) -> None:
        from tfplace.pipeline_replicas import replica_total
        from tfplace.placers import get_placer
        get_placer(placer)                      # fail fast on an unknown name
        self.python_function = fn
        self.cluster, self.placer, self.writeback = cluster, placer, writeback
        self.calibration = calibration
        self.splits = splits
        self.pipeline = pipeline_options(pipeline)
        if splits is not None and isinstance(data_parallel, int) and data_parallel > 1 and \
                sync_backend == "tf":           # the mesh's own error before the replicas'
            from tfplace.splits.mesh import check_mesh
            check_mesh(len(cluster.devices), data_parallel)
        self.data_parallel = replica_total(cluster, data_parallel, self.pipeline, sync_backend)
        self.sync_options: SyncOptions = {"sync": sync, "sync_backend": sync_backend,
                                          "fusion_bytes": fusion_bytes}
        self._executors: dict[Any, Any] = {}
        self._last: Any = None
        functools.update_wrapper(self, fn)

    def _executor(self, args: tuple, kwargs: dict) -> Any:
        key = _signature_key(args, kwargs)
        ex = self._executors.get(key)
        if ex is None:
            if self.pipeline is not None and self.data_parallel > 1:
                from tfplace.pipeline_replicas import micro_batch as replica_micro_batch
                (args, kwargs), _ = replica_micro_batch(
                    (args, kwargs), self.data_parallel, self.pipeline["micro_batches"])
            elif self.pipeline is not None:
                from tfplace.pipeline_parallel import micro_batch
                (args, kwargs), _ = micro_batch((args, kwargs), self.pipeline["micro_batches"])
            elif self.data_parallel > 1:
                from tfplace.data_parallel import shard_args
                (args, kwargs), _ = shard_args((args, kwargs), self.data_parallel)
            captured = capture(self.python_function, args, kwargs)
            ex = compile_step(captured, self.cluster, placer=self.placer,
                              writeback=self.writeback, calibration=self.calibration,
                              data_parallel=self.data_parallel, pipeline=self.pipeline,
                              splits=self.splits, **self.sync_options)
            self._executors[key] = ex
        self._last = ex
        return ex

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._executor(args, kwargs)(*args, **kwargs)

    def run(self, batches: Any, *, steps_per_execution: int = 1) -> list[Any]:
        """Train on every batch of ``batches`` (an iterable of the step's argument tuples: a
        tf.data iterator, ``step.prefetch(dataset)``, a list), ``steps_per_execution`` steps
        per call: the workers get one dispatch, and the user's variables one write-back, per
        call instead of per step (as Keras' ``steps_per_execution``). The steps are the same
        sequential steps as calling the step on each batch. A last, shorter group runs one
        step per call. Returns each step's outputs, in order."""
        check_steps_per_execution(steps_per_execution)
        out: list[Any] = []
        group: list[tuple[tuple, dict]] = []
        for batch in batches:
            group.append((batch if isinstance(batch, tuple) else (batch,), {}))
            if len(group) == steps_per_execution:
                out += self._run_group(group)
                group = []
        for args, kwargs in group:
            out.append(self(*args, **kwargs))
        return out

    def _run_group(self, group: list[tuple[tuple, dict]]) -> list[Any]:
        keys = {_signature_key(args, kwargs) for args, kwargs in group}
        if len(group) == 1 or len(keys) > 1:      # different shapes: one executor each
            return [self(*args, **kwargs) for args, kwargs in group]
        return self._executor(*group[0]).run_steps(group)

    def plan_for(self, *args: Any, **kwargs: Any) -> Plan:
        return self._executor(args, kwargs).plan

    @property
    def plan(self) -> Plan:
        if self._last is None:
            sig = getattr(self.python_function, "input_signature", None)
            if sig is None:
                raise PlanError("no plan yet: call the step once, or use "
                                "step.plan_for(example_args), or give the tf.function an "
                                "input_signature")
            self._executor((), {})
        return self._last.plan

    @property
    def executor(self) -> Any:
        return self._last

    def prefetch(self, dataset: Any, buffer_size: int = 2) -> Any:
        """An iterator over ``dataset`` (a tf.data.Dataset of this step's arguments) whose
        batches are read on the devices that use them: with data parallelism each replica's
        share of the batch on the replica's own device; with one replica (a pipeline, a
        placed step) each argument on the device of the op that reads it (a pipeline's inputs
        on its first stage, its targets on its last). The step takes the yielded values as
        they are and reads them itself. The step is compiled on the first batch."""
        from tfplace.runtime.per_replica import batches_for
        first = next(iter(dataset.take(1)))
        args = first if isinstance(first, tuple) else (first,)
        return batches_for(self._executor(args, {}), dataset, args, buffer_size)

    def write_back(self) -> None:
        for ex in self._executors.values():
            ex.write_back()

    def refresh(self) -> None:
        for ex in self._executors.values():
            ex.refresh()


def check_steps_per_execution(k: Any) -> None:
    """A PlanError unless ``k`` is a whole number of steps per call (>= 1)."""
    if not isinstance(k, int) or k < 1:
        raise PlanError(f"steps_per_execution={k!r}: give a whole number >= 1 of steps per call")


def pipeline_options(options: Any = None, **kwargs: Any) -> PipelineOptions | None:
    """The front doors' pipeline keywords as PipelineOptions, checked (PlanError on a bad K, M
    or schedule), or None without pipeline stages."""
    opts = dict(options or {}, **kwargs)
    if opts.get("stages") is None:
        return None
    from tfplace.pipeline_parallel import check_options
    out: PipelineOptions = {"stages": opts["stages"],
                            "micro_batches": opts.get("micro_batches", 1),
                            "schedule": opts.get("schedule", "1f1b"),
                            "stage_boundaries": opts.get("stage_boundaries"),
                            "devices_per_stage": opts.get("devices_per_stage", 1)}
    check_options(out["stages"], out["micro_batches"], out["schedule"])
    return out


def parallelize(fn: Callable[..., Any] | None = None, /, *, cluster: Cluster,
                placer: str = "m_etf", writeback: str = "step", calibration: Any = None,
                data_parallel: Any = 1, sync: str = "auto", sync_backend: str = "tf",
                fusion_bytes: int | None = None, pipeline_stages: int | str | None = None,
                micro_batches: int = 1, schedule: str = "1f1b",
                stage_boundaries: Any = None, devices_per_stage: int = 1,
                splits: Any = None) -> Any:
    """Decorator (or call) that runs a training step statically placed on ``cluster``.

    ``writeback="step"`` keeps the user's variables current after every step; ``"manual"``
    leaves the trained values on their devices until ``step.write_back()``.
    ``data_parallel=N`` (or ``"auto"``) runs N synchronous replicas on the global batch the
    caller passes; ``sync`` is ``"ring" | "ps" | "hierarchical" | "auto"``.
    ``sync_backend="horovod"``: one replica per Horovod process (``horovodrun --gloo -np N``),
    N = ``data_parallel`` = the process count; ``cluster`` is each process's own devices.
    ``splits={"dense_1/kernel": "S(1)"}`` or ``"dense_1:S(1);dense_2:S(0)"`` splits those
    variables (and the ops on them) over all the cluster's devices (model parallelism); with
    ``data_parallel=R`` over each replica's devices (a 2-D mesh, R x devices/R).
    ``pipeline_stages=K`` (or ``"auto"``) cuts the step into K pipeline stages, one per device,
    run on ``micro_batches`` micro-batches of the global batch in ``schedule`` order
    (``"gpipe"`` | ``"1f1b"``); ``stage_boundaries`` names layers or ops that start a stage;
    ``devices_per_stage=D`` gives each stage D devices, its ops placed over them by ``placer``.
    With ``data_parallel=R`` as well, R copies of the pipeline run on R*K devices, each on its
    share of the batch, and each stage's gradients are all-reduced across its R copies.
    """
    pipe = pipeline_options(stages=pipeline_stages, micro_batches=micro_batches,
                            schedule=schedule, stage_boundaries=stage_boundaries,
                            devices_per_stage=devices_per_stage)

    def wrap(f: Callable[..., Any]) -> ParallelFunction:
        return ParallelFunction(f, cluster=cluster, placer=placer, writeback=writeback,
                                calibration=calibration, data_parallel=data_parallel,
                                sync=sync, sync_backend=sync_backend, fusion_bytes=fusion_bytes,
                                pipeline=pipe, splits=splits)
    return wrap if fn is None else wrap(fn)


def load_source(source: str, *, signature: str | None = None, batch_size: int = 32) -> Captured:
    """Capture a CLI SOURCE: a .pb/.pbtxt GraphDef, a SavedModel directory, or file.py:name."""
    from tfplace.sources import load_source as _load
    return _load(source, signature=signature, batch_size=batch_size)
