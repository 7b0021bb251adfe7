"""Gradient marks: while tfplace traces a step, every GradientTape gradient passes through a
named Identity, so later passes (gradient sync) can find "a gradient" without guessing."""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["GradientMark", "marking_gradients", "marks_of", "MARK_PREFIX"]

MARK_PREFIX = "tfplace_grad"
_state = threading.local()


@dataclass(frozen=True)
class GradientMark:
    """One gradient in the captured graph: a dense tensor, or the parts of IndexedSlices."""

    node: str                        # Identity over the dense gradient, or over the values
    indices: str = ""                # Identity over the indices, for IndexedSlices
    dense_shape: tuple[int, ...] = ()

    @property
    def sparse(self) -> bool:
        return bool(self.indices)


def _mark(g: Any, marks: list[tuple[Any, GradientMark]]) -> Any:
    import tensorflow as tf
    graph = tf.compat.v1.get_default_graph()
    if g is None:
        return None
    if isinstance(g, tf.IndexedSlices):
        values = tf.identity(g.values, name=f"{MARK_PREFIX}_values")
        indices = tf.identity(g.indices, name=f"{MARK_PREFIX}_indices")
        shape = tuple(int(d) for d in tf.get_static_value(g.dense_shape)) \
            if g.dense_shape is not None and tf.get_static_value(g.dense_shape) is not None else ()
        marks.append((graph, GradientMark(values.op.name, indices.op.name, shape)))
        return tf.IndexedSlices(values, indices, g.dense_shape)
    if not isinstance(g, tf.Tensor):
        return g
    marked = tf.identity(g, name=MARK_PREFIX)
    marks.append((graph, GradientMark(marked.op.name)))
    return marked


@contextlib.contextmanager
def marking_gradients() -> Iterator[list[tuple[Any, GradientMark]]]:
    """Patch ``tf.GradientTape.gradient`` while tracing; yields (graph, mark) pairs.

    A step may be traced more than once (a Keras optimizer creates its slots on the first
    trace and TF traces again): keep only the marks of the graph you capture (``marks_of``)."""
    import tensorflow as tf
    marks: list[tuple[Any, GradientMark]] = []
    original = tf.GradientTape.gradient

    def gradient(self: Any, *args: Any, **kwargs: Any) -> Any:
        grads = original(self, *args, **kwargs)
        if getattr(_state, "active", False) and tf.inside_function():
            grads = tf.nest.map_structure(lambda g: _mark(g, marks), grads,
                                          expand_composites=False)
        return grads

    tf.GradientTape.gradient = gradient
    _state.active = True
    try:
        yield marks
    finally:
        _state.active = False
        tf.GradientTape.gradient = original


def marks_of(marks: list[tuple[Any, GradientMark]], graph: Any) -> tuple[GradientMark, ...]:
    """The marks made while tracing ``graph`` itself."""
    return tuple(m for g, m in marks if g is graph)
