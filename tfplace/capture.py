"""Capture: a tf.function, concrete function or Keras model becomes a GraphDef plus its bindings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tfplace.errors import GraphError

__all__ = ["CapturedVariable", "Captured", "capture", "capture_keras_train_step"]

_DTYPE_SIZES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1,
                "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "int64": 8, "uint64": 8,
                "bool": 1, "complex64": 8, "complex128": 16}


@dataclass(frozen=True)
class CapturedVariable:
    node: str                      # the resource placeholder that stands for it in the GraphDef
    name: str
    shape: tuple[int, ...]
    dtype: str
    trainable: bool

    @property
    def nbytes(self) -> int:
        n = _DTYPE_SIZES.get(self.dtype, 4)
        for d in self.shape:
            n *= max(int(d), 1)
        return n


@dataclass
class Captured:
    """A captured step: its GraphDef, the placeholders it reads and the tensors it returns.

    ``bindings`` maps resource placeholders to the live variables (runtime only, never saved);
    ``constants`` maps other captured placeholders to the eager tensors they stood for.
    """

    graph_def: Any
    inputs: tuple[str, ...]                      # arg placeholder node names, flattened order
    outputs: tuple[str, ...]                     # tensor names, flattened structured outputs
    variables: tuple[CapturedVariable, ...]
    bindings: dict[str, Any] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    concrete: Any = None
    input_specs: tuple[Any, ...] = ()
    description: str = ""
    example: tuple = ()                          # arguments it was traced with, when known
    keepalive: Any = None                        # objects the bindings depend on (a SavedModel)
    gradients: tuple[Any, ...] = ()              # GradientMarks, in the order the step made them
    _tensor_mask: Any = field(default=None, repr=False, compare=False)

    def pack_outputs(self, flat: Sequence[Any]) -> Any:
        import tensorflow as tf
        if self.concrete is None:
            return list(flat)
        return tf.nest.pack_sequence_as(self.concrete.structured_outputs, list(flat),
                                        expand_composites=True)

    def flatten_inputs(self, args: tuple, kwargs: dict) -> list[Any]:
        """The user's call arguments, flattened to the tensors the placeholders stand for."""
        import tensorflow as tf
        if self.concrete is None:
            return list(args)
        if self._tensor_mask is None:
            specs = tf.nest.flatten(self.concrete.structured_input_signature,
                                    expand_composites=True)
            self._tensor_mask = tuple(isinstance(s, tf.TensorSpec) for s in specs)
        mask = self._tensor_mask
        if not kwargs and all(mask) and len(args) == len(mask):
            return list(args)                   # the common case: flat tensor arguments
        try:
            values = tf.nest.flatten((tuple(args), dict(kwargs)), expand_composites=True)
        except (TypeError, ValueError) as e:
            raise GraphError(f"call arguments do not match the captured signature ({e})") from e
        if len(values) != len(mask):
            raise GraphError(f"call has {len(values)} leaves but the captured step takes "
                             f"{len(mask)}; call it with the same structure as when captured")
        return [v for v, is_tensor in zip(values, mask) if is_tensor]


def _concrete(fn: Any, args: tuple, kwargs: dict) -> Any:
    import tensorflow as tf
    if hasattr(fn, "structured_outputs") and hasattr(fn, "graph"):
        return fn                                   # already a ConcreteFunction
    if hasattr(fn, "python_function"):
        # a fresh trace of the same Python function: a trace cached before tfplace saw the
        # step would lack the gradient marks
        fn = tf.function(fn.python_function, input_signature=fn.input_signature,
                         reduce_retracing=False)
    elif not hasattr(fn, "get_concrete_function"):
        if not callable(fn):
            raise GraphError(f"cannot capture {fn!r}: pass a tf.function, a concrete function "
                             "or a Keras model")
        fn = tf.function(fn)
    try:
        return fn.get_concrete_function(*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise GraphError(f"cannot trace {getattr(fn, '__name__', fn)!r} with the given "
                         f"arguments ({e}); pass example tensors or an input_signature") from e


def capture(fn: Any, args: tuple = (), kwargs: dict | None = None) -> Captured:
    """Trace ``fn`` with ``args``/``kwargs`` (or its input_signature) into a ``Captured``."""
    import tensorflow as tf
    from tfplace.grad_marks import marking_gradients, marks_of
    with marking_gradients() as marks:
        cf = _concrete(fn, tuple(args), dict(kwargs or {}))
    graph = cf.graph
    gd = graph.as_graph_def(add_shapes=True)
    captures = list(graph.captures)
    n_args = len(graph.inputs) - len(captures)
    arg_names = tuple(t.op.name for t in graph.inputs[:n_args])
    by_handle = {id(v.handle): v for v in graph.variables}
    variables, bindings, constants = [], {}, {}
    for external, internal in captures:
        node = internal.op.name
        var = by_handle.get(id(external))
        if var is not None:
            variables.append(CapturedVariable(node=node, name=var.name.split(":")[0],
                                              shape=tuple(int(d or 0) for d in var.shape),
                                              dtype=var.dtype.name, trainable=var.trainable))
            bindings[node] = var
        elif external.dtype == tf.resource:
            raise GraphError(f"captured resource {node!r} is not a variable tfplace can place "
                             "(lookup tables and iterators are not supported yet); pass it as "
                             "an argument or create it inside the step")
        else:
            constants[node] = external
    outputs = tuple(t.name for t in cf.outputs)
    names = {n.name for n in gd.node}
    missing = [o for o in outputs if o.split(":")[0] not in names]
    if missing:
        raise GraphError(f"outputs {missing} are not in the captured graph")
    specs = tuple(s for s in tf.nest.flatten(cf.structured_input_signature, expand_composites=True)
                  if isinstance(s, tf.TensorSpec))
    return Captured(graph_def=gd, inputs=arg_names, outputs=outputs,
                    variables=tuple(sorted(variables, key=lambda v: v.node)),
                    bindings=bindings, constants=constants, concrete=cf, input_specs=specs,
                    description=getattr(fn, "__name__", type(fn).__name__), example=tuple(args),
                    gradients=marks_of(marks, graph))


def capture_keras_train_step(model: Any, data: Any) -> Captured:
    """The training step ``model.fit`` would run on one batch of ``data``, as a Captured."""
    import tensorflow as tf
    if getattr(model, "optimizer", None) is None:
        raise GraphError(f"Keras model {model.name!r} is not compiled; call model.compile("
                         "optimizer=..., loss=...) before handing it to tfplace")
    step: Callable[[Any], Any] = tf.function(model.train_step, reduce_retracing=False)
    captured = capture(step, (data,))
    captured.example = (data,)
    captured.description = f"{model.name}.train_step"
    return captured
