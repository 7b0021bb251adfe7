"""`tfplace run`: train a step or compiled Keras model from a user's file for a few steps."""
from __future__ import annotations

from typing import Any

from tfplace.api import PipelineOptions, check_steps_per_execution, compile_step, pipeline_options
from tfplace.capture import Captured, capture
from tfplace.cluster import Cluster
from tfplace.errors import PlanError

__all__ = ["run_source"]


def run_source(source: str, cluster: Cluster, *, placer: str = "m_etf", steps: int = 5,
               batch_size: int = 32, trace: str | None = None, data_parallel: Any = 1,
               sync: str = "auto", sync_backend: str = "tf", fusion_bytes: int | None = None,
               calibration: Any = None, pipeline: PipelineOptions | None = None,
               splits: Any = None, steps_per_execution: int = 1,
               input_from: str = "client") -> list[float]:
    """Run a step or compiled Keras model from a user's file for ``steps`` steps; the losses.
    ``steps_per_execution`` steps go to the workers in one call (the last group may be shorter).
    ``input_from="worker"``: the example batch is read by the replicas themselves, each its share
    on its own device inside the step (``per_replica.batches_for``), instead of passed from here.

    ``batch_size`` is the global batch; with ``data_parallel`` > 1 the step is captured on one
    replica's share of it and run on all of it. ``trace`` writes an op-level Chrome trace of
    the steps there, with the measured sync/backward overlap (``runtime.trace``). With a
    ``pipeline`` the step is captured on one micro-batch."""
    from tfplace.pipeline_replicas import check_batch, replica_total
    pipeline = pipeline_options(pipeline)
    replicas = replica_total(cluster, data_parallel, pipeline, sync_backend)
    parts = replicas
    if pipeline is not None:                      # one micro-batch of one replica
        if replicas > 1:
            check_batch(batch_size, replicas, pipeline["micro_batches"])
        parts = replicas * pipeline["micro_batches"]
    check_steps_per_execution(steps_per_execution)
    captured, example = _capture_for_run(source, batch_size, parts)
    ex = compile_step(captured, cluster, placer=placer, calibration=calibration,
                      data_parallel=replicas, sync=sync, sync_backend=sync_backend,
                      fusion_bytes=fusion_bytes, pipeline=pipeline, splits=splits)
    if input_from not in ("client", "worker"):
        raise PlanError(f"input_from={input_from!r}: use 'client' or 'worker'")
    batches = None
    if input_from == "worker":
        import tensorflow as tf
        from tfplace.runtime.per_replica import batches_for
        batches = batches_for(ex, tf.data.Dataset.from_tensors(tuple(example)).repeat(),
                              example)
    if not trace:
        return _train(ex, example, steps, steps_per_execution, batches)
    from tfplace.runtime.trace import trace_ops, write_trace
    with trace_ops(ex.graph_def, ex.input_devices) as recorded:
        losses = _train(ex, example, steps, steps_per_execution, batches)
    write_trace(recorded, trace)
    return losses


def _train(ex: Any, example: tuple, steps: int, per_call: int, batches: Any = None
           ) -> list[float]:
    """``steps`` steps on ``example`` (or on the next of ``batches``), ``per_call`` per call."""
    def take() -> tuple:
        return tuple(next(batches)) if batches is not None else tuple(example)
    losses: list[float] = []
    while len(losses) < steps:
        if per_call > 1 and steps - len(losses) >= per_call:
            group: list[tuple[tuple, dict]] = [(take(), {}) for _ in range(per_call)]
            losses += [_scalar_loss(o) for o in ex.run_steps(group)]
        else:
            losses.append(_scalar_loss(ex(*take())))
    return losses


def _capture_for_run(source: str, batch_size: int, replicas: int) -> tuple[Captured, tuple]:
    """The captured step (on one replica's share of the batch) and the GLOBAL example args."""
    from tfplace.sources import example_args, load_object, load_source as _load
    bare = PlanError(f"{source!r} is a bare graph; `tfplace run` needs FILE.py:NAME")
    if replicas == 1 or ":" not in source.rpartition("/")[2]:
        captured = _load(source, batch_size=batch_size)
        if not captured.example:
            raise bare
        return captured, captured.example
    from tfplace.capture import capture_keras_train_step
    from tfplace.data_parallel import shard_args
    from tfplace.replicas import split_batch
    split_batch(batch_size, replicas)                 # a readable error before any tracing
    module, obj = load_object(source)
    args = example_args(module, source.rpartition(":")[2], obj, batch_size)
    (shard, _kw), _ = shard_args((args, {}), replicas)
    if hasattr(obj, "train_step") and hasattr(obj, "optimizer"):
        return capture_keras_train_step(obj, shard[0]), args
    return capture(obj, shard), args


def _scalar_loss(out: Any) -> float:
    import numpy as np
    if isinstance(out, dict):
        out = out.get("loss", next(iter(out.values())))
    if isinstance(out, (list, tuple)):
        out = out[0]
    return float(np.asarray(out).reshape(-1)[0])
