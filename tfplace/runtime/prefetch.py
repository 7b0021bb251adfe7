"""Input prefetch onto the device that reads the step's input (a pipeline's first stage).

Two ways, both overlapping the input's read and copy with the running step:

- a ``tf.data.Dataset`` (``ParallelFunction.prefetch``) onto a device of this process:
  ``prefetch_to_device`` (tf.data's ``copy_to_device`` + ``prefetch``), so the batches are
  already on the device when a step starts. For a gRPC worker's device the dataset itself moves
  there: it is serialised (``DatasetToGraphV2``, refusing external state) and rebuilt on the
  worker (``DatasetFromGraph``), so the worker reads and prefetches its own batches and they
  never pass through this process (passed from the client, a 12.6 MB batch held stage 0's
  first kernel back 16.9 ms: BENCHMARKS.md, pipeline). A
  dataset that holds state which cannot move (a Python generator, an unseeded random op) is
  read here instead and each batch copied ahead as below;
- an iterator someone else made (Keras ``fit`` hands the callback one): ``Lookahead`` reads the
  next batch and copies it to the device on a background thread while the current step runs
  (TensorFlow releases the GIL while ops execute).

    host: read b1 -> copy b1 to s0 | read b2 -> copy b2 | read b3 ...
    s0:                            | step(b1) .........  | step(b2) ...
"""
from __future__ import annotations

import threading
from typing import Any, Iterator

__all__ = ["input_device", "reader_device", "to_device", "on_worker", "Lookahead"]

_FAIL_ON_EXTERNAL_STATE = 2     # tf.data.experimental.ExternalStatePolicy.FAIL


def input_device(executor: Any) -> str:
    """The device a pipeline plan gives the step's first input (on its first stage); "" for
    other plans (their input is split or read where the runtime puts it)."""
    plan = executor.plan
    if plan.pipeline is None:
        return ""
    return plan.placement().get(executor.captured.inputs[0]) or plan.pipeline.stages[0].devices[0]


def reader_device(executor: Any, index: int = 0) -> str:
    """The device of the first op that reads the step's input ``index``: where that argument
    is best read (the plan's device of that op, else the first device of the plan). In a
    pipeline the inputs go to the stages that use them (x to the first, the labels to the
    last)."""
    name = executor.captured.inputs[index]
    placement = executor.plan.placement()
    for n in executor.graph_def.node:
        if any(i.split(":")[0] == name for i in n.input) and (n.device or placement.get(n.name)):
            return n.device or placement[n.name]
    used = executor.plan.devices_used
    return used[0] if used else ""


def to_device(dataset: Any, device: str, buffer_size: int = 2) -> Iterator[Any]:
    """An iterator over ``dataset`` whose batches are prefetched onto ``device`` (with no
    device: prefetched where tf.data runs)."""
    import tensorflow as tf
    if not device:
        return iter(dataset.prefetch(buffer_size))
    if device.startswith("/job:") and not device.startswith("/job:localhost/"):
        moved = on_worker(dataset, device, buffer_size)
        if moved is None:
            return _ahead(iter(dataset), device)
        with tf.device(device):
            return _until_empty(iter(moved))
    ds = dataset.apply(tf.data.experimental.prefetch_to_device(device, buffer_size))
    with tf.device(device):
        return iter(ds)


def on_worker(dataset: Any, device: str, buffer_size: int = 2) -> Any:
    """``dataset`` rebuilt on ``device`` (any device of the cluster, a remote worker's too)
    and prefetched there; None when it holds state that cannot be serialised (a Python
    generator, a random op without a seed), which must then be read where it was made."""
    import tensorflow as tf
    try:
        graph = tf.raw_ops.DatasetToGraphV2(input_dataset=dataset._variant_tensor,  # noqa: SLF001
                                            external_state_policy=_FAIL_ON_EXTERNAL_STATE)
    except (tf.errors.FailedPreconditionError, tf.errors.UnimplementedError):
        return None
    with tf.device(device):
        variant = tf.raw_ops.DatasetFromGraph(graph_def=graph)
        return tf.data.experimental.from_variant(variant, dataset.element_spec) \
            .prefetch(buffer_size)


def _until_empty(iterator: Any) -> Iterator[Any]:
    """A remote iterator's batches. Its end is asked for as an optional: a remote
    IteratorGetNext past the end leaves OutOfRangeError pending in the eager executor, which
    reports it again when the executor is deleted."""
    while True:
        batch = iterator.get_next_as_optional()
        if not batch.has_value():
            return
        yield batch.get_value()


def _ahead(iterator: Any, device: str) -> Iterator[Any]:
    import tensorflow as tf
    ahead = Lookahead(device)
    while True:
        try:
            yield ahead.next(iterator)
        except (StopIteration, tf.errors.OutOfRangeError):
            return


def _copy(data: Any, device: str) -> Any:
    import tensorflow as tf
    with tf.device(device):
        return tf.nest.map_structure(
            lambda t: tf.identity(t) if isinstance(t, (tf.Tensor, tf.Variable)) or
            hasattr(t, "__array__") else t, data)


class Lookahead:
    """``next(iterator)`` one batch ahead, on a background thread, copied to ``device`` (None:
    not copied, e.g. before the plan is known). A new iterator starts afresh; the end of the
    iterator (StopIteration, OutOfRangeError) is raised when the caller reaches it."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._iterator: Any = None
        self._pending: tuple[threading.Thread, dict[str, Any]] | None = None

    def _start(self, iterator: Any) -> None:
        box: dict[str, Any] = {}
        device = self.device

        def fetch() -> None:
            try:
                data = next(iterator)
                box["data"] = _copy(data, device) if device else data
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = e
        thread = threading.Thread(target=fetch, name="tfplace-prefetch", daemon=True)
        thread.start()
        self._iterator, self._pending = iterator, (thread, box)

    def next(self, iterator: Any) -> Any:
        if self._pending is None or self._iterator is not iterator:
            self.close()
            self._start(iterator)
        assert self._pending is not None
        thread, box = self._pending
        thread.join()
        self._pending = None
        if "error" in box:
            raise box["error"]
        self._start(iterator)            # the next batch moves while the caller runs a step
        return box["data"]

    def close(self) -> None:
        """Wait for a read in flight and forget it (at the end of training)."""
        if self._pending is not None:
            self._pending[0].join()
        self._iterator, self._pending = None, None
