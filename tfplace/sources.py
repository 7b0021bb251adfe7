"""Where the CLI's SOURCE comes from: a GraphDef file, a SavedModel, or ``file.py:name``."""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from tfplace.capture import Captured, CapturedVariable, capture, capture_keras_train_step
from tfplace.errors import GraphError

__all__ = ["check_source", "load_source", "load_object", "example_args", "read_graph_def"]


def read_graph_def(path: str) -> Any:
    """A GraphDef from ``.pb`` (binary) or ``.pbtxt`` (text); GraphError when missing or bad."""
    if not os.path.isfile(path):
        raise GraphError(f"GraphDef file {path!r} does not exist; pass the path of a .pb or "
                         ".pbtxt written by tf.io.write_graph or tfplace rewrite")
    from google.protobuf import message, text_format
    from tensorflow.core.framework import graph_pb2
    gd = graph_pb2.GraphDef()
    with open(path, "rb") as f:
        data = f.read()
    try:
        if path.endswith(".pbtxt"):
            text_format.Parse(data.decode("utf-8", errors="replace"), gd)
        else:
            gd.ParseFromString(data)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as e:
        raise GraphError(f"GraphDef file {path!r} ({len(data)} bytes) is truncated or not a "
                         f"GraphDef ({e}); re-export it with tf.io.write_graph") from e
    if not gd.node:
        raise GraphError(f"GraphDef file {path!r} ({len(data)} bytes) has no nodes; it is empty "
                         "or truncated: re-export it")
    return gd


def _graph_variables(gd: Any) -> tuple[CapturedVariable, ...]:
    """Resource placeholders of a saved GraphDef, sized from the ReadVariableOps that read them."""
    from tensorflow.python.framework import dtypes
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for n in gd.node:
        if n.op == "ReadVariableOp" and n.input:
            src = n.input[0].split(":")[0]
            dims = tuple(int(d.size) for d in n.attr["_output_shapes"].list.shape[0].dim) \
                if n.attr["_output_shapes"].list.shape else ()
            shapes.setdefault(src, (dims, dtypes.as_dtype(n.attr["dtype"].type).name))
    out = []
    for n in gd.node:
        if n.op == "Placeholder" and n.attr["dtype"].type == dtypes.resource.as_datatype_enum:
            shape, dtype = shapes.get(n.name, ((), "float32"))
            out.append(CapturedVariable(n.name, n.name, shape, dtype, True))
    return tuple(out)


def _from_graph_def(path: str) -> Captured:
    from tensorflow.python.framework import dtypes
    gd = read_graph_def(path)
    consumed = {i.split(":")[0].lstrip("^") for n in gd.node for i in n.input}
    inputs = tuple(n.name for n in gd.node if n.op == "Placeholder"
                   and n.attr["dtype"].type != dtypes.resource.as_datatype_enum)
    outputs = tuple(f"{n.name}:0" for n in gd.node if n.name not in consumed
                    and n.op not in ("NoOp", "Placeholder"))
    return Captured(graph_def=gd, inputs=inputs, outputs=outputs,
                    variables=_graph_variables(gd), description=os.path.basename(path))


def load_object(spec: str) -> tuple[Any, Any]:
    """``path/to/file.py:name`` -> (the module, the object ``name`` it defines)."""
    path, name = _script(spec)
    mod_name = "tfplace_user_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    module_spec.loader.exec_module(module)
    if not hasattr(module, name):
        public = sorted(k for k in vars(module) if not k.startswith("_"))
        raise GraphError(f"{path!r} defines no {name!r} (it defines: {', '.join(public[:20])})")
    return module, getattr(module, name)


def example_args(module: Any, name: str, obj: Any, batch_size: int) -> tuple:
    """Arguments to trace ``obj`` with: ``{name}_args(batch_size)``/``example_args(batch_size)``
    in the script, else random tensors from the input_signature or the Keras model's shapes."""
    import numpy as np
    import tensorflow as tf
    for hook in (f"{name}_args", "example_args"):
        if callable(getattr(module, hook, None)):
            return tuple(getattr(module, hook)(batch_size))
    rng = np.random.default_rng(0)

    def rand(shape: Any, dtype: Any) -> Any:
        shape = [batch_size if d is None else int(d) for d in shape]
        dtype = tf.as_dtype(dtype)
        if dtype.is_integer:
            return tf.constant(rng.integers(0, 2, size=shape), dtype=dtype)
        return tf.constant(rng.standard_normal(shape), dtype=dtype)
    sig = getattr(obj, "input_signature", None)
    if sig is not None:
        return tuple(rand(s.shape, s.dtype) for s in sig)
    if hasattr(obj, "train_step") and hasattr(obj, "inputs"):
        x = [rand(t.shape, t.dtype) for t in obj.inputs]
        y = [rand(t.shape, t.dtype) for t in obj.outputs]
        return ((x[0] if len(x) == 1 else tuple(x), y[0] if len(y) == 1 else tuple(y)),)
    raise GraphError(f"cannot make example arguments for {name!r}: give the tf.function an "
                     f"input_signature or define {name}_args(batch_size) in the script")


def check_source(source: str) -> None:
    """GraphError when SOURCE cannot exist: a missing GraphDef file, SavedModel directory or
    script. Checked before the CLI starts TensorFlow (about 5 s) or a cluster."""
    if source.endswith((".pb", ".pbtxt")) and ":" not in os.path.basename(source):
        if not os.path.isfile(source):
            read_graph_def(source)                       # its message
        return
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "saved_model.pb")):
            raise GraphError(f"directory {source!r} is not a SavedModel (no saved_model.pb)")
        return
    _script(source)


def _script(spec: str) -> tuple[str, str]:
    """``path/to/file.py:name`` -> (path, name); GraphError when malformed or missing."""
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise GraphError(f"source {spec!r} must be FILE.py:NAME, a .pb/.pbtxt GraphDef or a "
                         "SavedModel directory")
    if not os.path.isfile(path):
        raise GraphError(f"script {path!r} does not exist (from source {spec!r})")
    return path, name


def load_source(source: str, *, signature: str | None = None, batch_size: int = 32) -> Captured:
    """Capture whatever SOURCE names."""
    check_source(source)
    if source.endswith((".pb", ".pbtxt")) and ":" not in os.path.basename(source):
        return _from_graph_def(source)
    if os.path.isdir(source):
        import tensorflow as tf
        loaded = tf.saved_model.load(source)
        key = signature or "serving_default"
        if key not in loaded.signatures:
            raise GraphError(f"SavedModel {source!r} has no signature {key!r} "
                             f"(it has: {', '.join(loaded.signatures) or 'none'}); pass --signature")
        captured = capture(loaded.signatures[key])
        captured.description = f"{source}[{key}]"
        captured.keepalive = loaded
        return captured
    module, obj = load_object(source)
    args = example_args(module, source.rpartition(":")[2], obj, batch_size)
    if hasattr(obj, "train_step") and hasattr(obj, "optimizer"):
        return capture_keras_train_step(obj, args[0])
    return capture(obj, args)
