"""The inter-stage channel: a bounded, blocking queue of tensor tuples between pipeline stages.

Two backends behind one ``Channel``:

- ``"op"``: the C++ kernel ``custom_ops/channel.cc`` (``make ops``). This module is the only one
  that loads it (``load_ops``: lazily, once, with a version check).
- ``"fifo"``: ``tf.queue.FIFOQueue``, when the library is not built.

Choosing: ``Channel(backend=...)`` wins; else ``$TFPLACE_CHANNEL`` (``auto`` | ``op`` | ``fifo``);
``auto`` takes the op when ``custom_ops/_tfplace_channel.so`` (or ``$TFPLACE_CHANNEL_LIB``) exists
and FIFOQueue otherwise. A library that exists but was built for another TensorFlow, or does not
load, is a ``BackendError`` telling you to run ``make ops``, never a silent fallback: a stale
build is a bug to fix, and ``TFPLACE_CHANNEL=fifo`` is the explicit way round it.

Same behaviour on both (what the tests check): FIFO order; ``enqueue`` waits while ``capacity``
items are queued, ``dequeue`` while none is; shape/dtype mismatches are
``tf.errors.InvalidArgumentError`` naming expected and got; ``close()`` is graceful (later and
pending enqueues fail with ``CancelledError``, dequeues drain then fail with ``OutOfRangeError``);
``close(error)`` wakes every waiter at once with ``AbortedError(error ...)``, and every later
enqueue/dequeue fails the same way.

Differences: with ``"fifo"`` the error message of ``close(error)`` is restored by this wrapper in
eager code only; inside a ``tf.function`` a waiter sees FIFOQueue's own ``CancelledError`` /
``OutOfRangeError``, and items queued before ``close(error)`` are still handed out. FIFOQueue
needs fully defined shapes, so partially defined ones are checked here (statically) only. The op
is CPU-only; so is this project.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

from tfplace.errors import BackendError, PlanError, bullets

__all__ = ["Channel", "BACKENDS", "library_path", "load_ops", "resolve_backend"]

BACKENDS = ("auto", "op", "fifo")
ENV_BACKEND = "TFPLACE_CHANNEL"
ENV_LIBRARY = "TFPLACE_CHANNEL_LIB"
_REBUILD = "run `make ops` to build it against the installed TensorFlow"

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_ops: Any = None
_load_error: BackendError | None = None


def library_path() -> Path:
    """Where the op library is: ``$TFPLACE_CHANNEL_LIB``, else ``custom_ops/`` of this checkout."""
    env = os.environ.get(ENV_LIBRARY)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "custom_ops" / "_tfplace_channel.so"


def load_ops() -> Any:
    """The loaded op library (once per process); BackendError when it is absent, does not load,
    or was compiled against another TensorFlow than the one running."""
    global _ops, _load_error
    with _lock:
        if _ops is not None:
            return _ops
        if _load_error is not None:
            raise _load_error
        try:
            _ops = _load(library_path())
        except BackendError as e:
            _load_error = e
            raise
        return _ops


def _load(path: Path) -> Any:
    import tensorflow as tf
    if not path.is_file():
        raise BackendError(f"the channel op library is not built ({path} is missing): {_REBUILD}, "
                           f"or set {ENV_BACKEND}=fifo to use tf.queue.FIFOQueue")
    try:
        ops = tf.load_op_library(str(path))
    except Exception as e:  # NotFoundError with an undefined symbol when built for another TF
        cause = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise BackendError(f"the channel op library {path} does not load ({cause}): "
                           f"{_REBUILD}") from None
    with tf.init_scope():
        built = ops.tfplace_channel_version().numpy().decode()
    if built != tf.__version__:
        raise BackendError(f"the channel op library {path} was built for TensorFlow {built} but "
                           f"TensorFlow {tf.__version__} is running: {_REBUILD}")
    return ops


def resolve_backend(backend: str | None = None) -> str:
    """``"op"`` or ``"fifo"`` for a requested backend (None: ``$TFPLACE_CHANNEL``, else auto)."""
    requested = backend if backend is not None else os.environ.get(ENV_BACKEND) or "auto"
    if requested not in BACKENDS:
        source = "backend" if backend is not None else f"${ENV_BACKEND}"
        raise BackendError(f"unknown channel backend {requested!r} (from {source}); "
                           f"use one of {', '.join(BACKENDS)}")
    if requested == "fifo":
        return "fifo"
    if requested == "auto" and not library_path().is_file():
        _log.info("channel op library %s not built; using tf.queue.FIFOQueue", library_path())
        return "fifo"
    load_ops()
    return "op"


def _shape_str(shape: Any) -> str:
    """A shape as TF's C++ prints it (``[2,?]``), so both backends' messages read alike."""
    if shape.rank is None:
        return "<unknown>"
    return "[" + ",".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


def _current_device() -> str:
    """The device an op made here would ask for (the innermost ``tf.device`` scope), or ""."""
    import tensorflow as tf
    if tf.executing_eagerly():
        from tensorflow.python.eager import context
        return context.context().device_name or ""
    return tf.no_op().device    # graph code: the device functions decide; the no-op is pruned


class Channel:
    """A bounded FIFO of tensor tuples on one device; usable eagerly, from threads and inside
    ``tf.function`` (created once, eagerly, wherever it is constructed)."""

    def __init__(self, *, capacity: int, dtypes: Sequence[Any], shapes: Sequence[Any],
                 device: str | None = None, name: str | None = None,
                 backend: str | None = None) -> None:
        import tensorflow as tf
        problems = []
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            problems.append(f"capacity={capacity!r}: give a positive int (items in flight)")
        if not dtypes:
            problems.append("dtypes is empty: give one dtype per tuple component")
        if len(shapes) != len(dtypes):
            problems.append(f"{len(shapes)} shape(s) for {len(dtypes)} dtype(s): give one shape "
                            "per component (None for a dimension that varies)")
        if problems:
            raise PlanError(bullets(f"invalid channel {name or ''}".rstrip() + ":", problems))
        self.capacity = capacity
        self.dtypes = tuple(tf.as_dtype(d) for d in dtypes)
        self.shapes = tuple(tf.TensorShape(s) for s in shapes)
        self.name = name or f"tfplace_channel_{uuid.uuid4().hex[:12]}"
        self.backend = resolve_backend(backend)
        self._error: str | None = None     # fifo: close(error)'s message, restored in eager code
        if device is None:                 # init_scope drops the caller's tf.device scope
            device = _current_device() or None
        with tf.init_scope(), tf.device(device):
            if self.backend == "op":
                self._ops = load_ops()
                self._handle = self._ops.tfplace_channel(
                    capacity=capacity, component_types=list(self.dtypes),
                    shapes=list(self.shapes), shared_name=self.name)
                self.device: str = self._handle.device
            else:
                defined = all(s.is_fully_defined() for s in self.shapes)
                self._queue = tf.queue.FIFOQueue(
                    capacity, list(self.dtypes), shapes=list(self.shapes) if defined else None,
                    shared_name=self.name)
                self.device = self._queue.queue_ref.device

    def __repr__(self) -> str:
        return (f"Channel({self.name!r}, capacity={self.capacity}, backend={self.backend!r}, "
                f"device={self.device!r})")

    def enqueue(self, components: Any) -> None:
        """Append one tuple (a sequence, or one tensor for a one-component channel); waits while
        the channel is full. (In a tf.function, automatic control dependencies order it.)"""
        values = self._check(components)
        with self._restore_error():
            if self.backend == "op":
                self._ops.tfplace_channel_enqueue(self._handle, values)
            else:
                self._queue.enqueue(values)

    def dequeue(self) -> list[Any]:
        """Remove and return the oldest tuple, as a list of tensors; waits while it is empty."""
        with self._restore_error():
            if self.backend == "op":
                return list(self._ops.tfplace_channel_dequeue(
                    self._handle, component_types=list(self.dtypes), shapes=list(self.shapes)))
            out = self._queue.dequeue()
            return list(out) if isinstance(out, (list, tuple)) else [out]

    def close(self, error: str | None = None) -> None:
        """Close: graceful when ``error`` is None or empty, else fail every waiter and later call
        with ``AbortedError`` carrying ``error``. Only the first close counts."""
        import tensorflow as tf
        if self.backend == "op":
            self._ops.tfplace_channel_close(self._handle, error or "")
            return
        if error and self._error is None:
            self._error = error
        self._queue.close(cancel_pending_enqueues=True)
        if error and tf.executing_eagerly():
            self._drain()

    def size(self) -> Any:
        """Items queued now (an int32 scalar tensor); waiting enqueues are not counted."""
        if self.backend == "op":
            return self._ops.tfplace_channel_size(self._handle)
        return self._queue.size()

    def _check(self, components: Any) -> list[Any]:
        import tensorflow as tf
        if isinstance(components, (list, tuple)):
            items = list(components)
        else:
            items = [components]
        if len(items) != len(self.dtypes):
            raise tf.errors.InvalidArgumentError(
                None, None, f"channel '{self.name}' carries {len(self.dtypes)} component(s) but "
                f"enqueue got {len(items)}")
        values = []
        for i, (v, dtype, shape) in enumerate(zip(items, self.dtypes, self.shapes)):
            t = tf.convert_to_tensor(v, dtype_hint=dtype)
            if t.dtype != dtype:
                raise tf.errors.InvalidArgumentError(
                    None, None, f"channel '{self.name}' component {i}: expected dtype "
                    f"{dtype.name}, got {t.dtype.name}; cast the tensor or create the channel "
                    "with that dtype")
            if not shape.is_compatible_with(t.shape):
                raise tf.errors.InvalidArgumentError(
                    None, None, f"channel '{self.name}' component {i}: expected shape "
                    f"{_shape_str(shape)}, got {_shape_str(t.shape)}; reshape the tensor or "
                    "create the channel with a compatible shape")
            values.append(t)
        return values

    def _drain(self) -> None:
        """fifo, close(error): drop what is queued so that later dequeues fail, as the op's do."""
        import tensorflow as tf
        while int(self._queue.size()) > 0:
            try:
                self._queue.dequeue()
            except tf.errors.OutOfRangeError:  # a concurrent dequeue took the last one
                break

    @contextlib.contextmanager
    def _restore_error(self) -> Iterator[None]:
        """fifo, eager: FIFOQueue's Cancelled/OutOfRange after ``close(error)`` becomes the op's
        ``AbortedError(error ...)``."""
        import tensorflow as tf
        try:
            yield
        except (tf.errors.CancelledError, tf.errors.OutOfRangeError) as e:
            if self.backend == "fifo" and self._error is not None:
                raise tf.errors.AbortedError(
                    None, None, f"{self._error} [channel '{self.name}' was closed with this error]"
                ) from e
            raise
