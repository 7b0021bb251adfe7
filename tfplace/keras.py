"""The Keras front door: a callback that makes ``model.fit`` run its step through tfplace."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tfplace.cluster import Cluster

if TYPE_CHECKING:
    from tfplace.api import SyncOptions

__all__ = ["Parallelize"]


def _callback_base() -> type:
    import keras
    return keras.callbacks.Callback


class _ParallelizeImpl:
    """Shared behaviour; the Keras subclass is created lazily so importing tfplace stays light."""

    # Set by keras.callbacks.Callback (set_model) on the concrete subclass; declared here for the
    # type checker only (an annotation, no class attribute, so Keras' own `model` still applies).
    model: Any

    def __init__(self, *, cluster: Cluster, placer: str = "m_etf", calibration: Any = None,
                 data_parallel: Any = 1, sync: str = "auto", sync_backend: str = "tf",
                 fusion_bytes: int | None = None, pipeline_stages: int | str | None = None,
                 micro_batches: int = 1, schedule: str = "1f1b",
                 stage_boundaries: Any = None, devices_per_stage: int = 1,
                 splits: Any = None) -> None:
        super().__init__()
        from tfplace.api import pipeline_options
        from tfplace.pipeline_replicas import replica_total
        from tfplace.placers import get_placer
        get_placer(placer)
        self.cluster, self.placer, self.calibration = cluster, placer, calibration
        self.splits = splits
        self.pipeline = pipeline_options(stages=pipeline_stages, micro_batches=micro_batches,
                                         schedule=schedule, stage_boundaries=stage_boundaries,
                                         devices_per_stage=devices_per_stage)
        self.data_parallel = replica_total(cluster, data_parallel, self.pipeline, sync_backend)
        self.sync_options: SyncOptions = {"sync": sync, "sync_backend": sync_backend,
                                          "fusion_bytes": fusion_bytes}
        self.executor: Any = None
        self._original: Any = None
        self._lookahead: Any = None
        self.input_device = ""                  # where the last batch was, when the step took it

    @property
    def plan(self) -> Any:
        return None if self.executor is None else self.executor.plan

    def _step(self, data: Any) -> Any:
        if self.executor is None:
            from tfplace.api import compile_step
            from tfplace.capture import capture_keras_train_step
            shard = data
            layer_names = None
            if self.pipeline is not None:       # captured on one micro-batch, units = layers
                from tfplace.pipeline_replicas import micro_batch
                (shard,), _ = micro_batch((data,), self.data_parallel,
                                          self.pipeline["micro_batches"])
                layer_names = [layer.name for layer in self.model.layers]
            elif self.data_parallel > 1:
                from tfplace.data_parallel import shard_args
                (shard,), _ = shard_args((data,), self.data_parallel)
            captured = capture_keras_train_step(self.model, shard)
            # metric totals and counts add up across replicas; everything else is replica 0's
            metric_vars = [getattr(v, "value", v) for v in self.model.metrics_variables]
            self.executor = compile_step(captured, self.cluster, placer=self.placer,
                                         writeback="step", calibration=self.calibration,
                                         data_parallel=self.data_parallel,
                                         sum_variables=metric_vars, pipeline=self.pipeline,
                                         layer_names=layer_names, splits=self.splits,
                                         **self.sync_options)
            if self._lookahead is not None:     # later batches are copied there ahead of time
                from tfplace.runtime.prefetch import input_device
                self._lookahead.device = input_device(self.executor) or None
        import tensorflow as tf
        first = tf.nest.flatten(data)[0]
        self.input_device = getattr(first, "device", "")
        return self.executor(data)

    def on_train_begin(self, logs: Any = None) -> None:
        model = self.model
        self._original = model.train_function
        steps = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        from tfplace.runtime.prefetch import Lookahead, input_device
        self._lookahead = Lookahead(None if self.executor is None else
                                    input_device(self.executor) or None)

        def train_function(iterator: Any) -> Any:
            # steps_per_execution batches in one call (after the first step has compiled
            # it): one dispatch and one write-back for all of them
            batches = []
            for _ in range(steps):
                try:
                    batches.append(self._lookahead.next(iterator))
                except StopIteration:
                    if not batches:
                        raise
                    break
            if self.executor is None or len(batches) < max(2, steps):
                outputs = None
                for data in batches:
                    outputs = self._step(data)
                return outputs
            return self.executor.run_steps([((data,), {}) for data in batches])[-1]
        model.train_function = train_function
        if self.executor is not None:
            self.executor.refresh()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        # fit() resets the metric variables on the user's model before this hook
        if self.executor is not None:
            self.executor.refresh()

    def on_train_end(self, logs: Any = None) -> None:
        if self._lookahead is not None:
            self._lookahead.close()
        if self._original is not None:
            self.model.train_function = self._original


_cls: type | None = None


def Parallelize(*, cluster: Cluster, placer: str = "m_etf", calibration: Any = None,
                data_parallel: Any = 1, sync: str = "auto", sync_backend: str = "tf",
                fusion_bytes: int | None = None, pipeline_stages: int | str | None = None,
                micro_batches: int = 1, schedule: str = "1f1b",
                stage_boundaries: Any = None, devices_per_stage: int = 1,
                splits: Any = None) -> Any:
    """``model.fit(..., callbacks=[tfplace.keras.Parallelize(cluster=...)])``: no model change.

    The options are those of ``tfplace.parallelize``; with ``data_parallel`` the batches fit
    yields are the global batches, split across the replicas; with ``pipeline_stages`` each
    batch is split into ``micro_batches`` and the stages follow the model's layers (with both,
    each replica is a pipeline on its share of the batch); ``splits``
    splits the named variables over the devices (model parallelism)."""
    global _cls
    if _cls is None:
        _cls = type("Parallelize", (_ParallelizeImpl, _callback_base()), {"__module__": __name__})
    return _cls(cluster=cluster, placer=placer, calibration=calibration,
                data_parallel=data_parallel, sync=sync, sync_backend=sync_backend,
                fusion_bytes=fusion_bytes, pipeline_stages=pipeline_stages,
                micro_batches=micro_batches, schedule=schedule, stage_boundaries=stage_boundaries,
                devices_per_stage=devices_per_stage, splits=splits)
