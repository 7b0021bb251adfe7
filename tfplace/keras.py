"""The Keras front door: a callback that makes ``model.fit`` run its step through tfplace."""
from __future__ import annotations

from typing import Any

from tfplace.cluster import Cluster

__all__ = ["Parallelize"]


def _callback_base() -> type:
    import keras
    return keras.callbacks.Callback


class _ParallelizeImpl:
    """Shared behaviour; the Keras subclass is created lazily so importing tfplace stays light."""

    def __init__(self, *, cluster: Cluster, placer: str = "m_etf", calibration: Any = None) -> None:
        super().__init__()
        from tfplace.placers import get_placer
        get_placer(placer)
        self.cluster, self.placer, self.calibration = cluster, placer, calibration
        self.executor: Any = None
        self._original: Any = None

    @property
    def plan(self) -> Any:
        return None if self.executor is None else self.executor.plan

    def _step(self, data: Any) -> Any:
        if self.executor is None:
            from tfplace.api import compile_step
            from tfplace.capture import capture_keras_train_step
            captured = capture_keras_train_step(self.model, data)
            self.executor = compile_step(captured, self.cluster, placer=self.placer,
                                         writeback="step", calibration=self.calibration)
        return self.executor(data)

    def on_train_begin(self, logs: Any = None) -> None:
        model = self.model
        self._original = model.train_function
        steps = max(1, int(getattr(model, "steps_per_execution", 1) or 1))

        def train_function(iterator: Any) -> Any:
            outputs = None
            for _ in range(steps):
                try:
                    data = next(iterator)
                except StopIteration:
                    if outputs is None:
                        raise
                    break
                outputs = self._step(data)
            return outputs
        model.train_function = train_function
        if self.executor is not None:
            self.executor.refresh()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        # fit() resets the metric variables on the user's model before this hook
        if self.executor is not None:
            self.executor.refresh()

    def on_train_end(self, logs: Any = None) -> None:
        if self._original is not None:
            self.model.train_function = self._original


_cls: type | None = None


def Parallelize(*, cluster: Cluster, placer: str = "m_etf", calibration: Any = None) -> Any:
    """``model.fit(..., callbacks=[tfplace.keras.Parallelize(cluster=...)])``: no model change."""
    global _cls
    if _cls is None:
        _cls = type("Parallelize", (_ParallelizeImpl, _callback_base()), {"__module__": __name__})
    return _cls(cluster=cluster, placer=placer, calibration=calibration)
