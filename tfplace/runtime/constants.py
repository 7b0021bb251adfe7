"""Constants the step is fed (captured tensors, values the rewrite needs), made once on the
device that uses them.

A captured constant lives where it was made, in the client. TF captures a small one by value
(a Const in the function), but a larger one is a function argument: fed as is to an op on a
gRPC worker, it crossed to that worker in every step. Copied to its one consuming device once,
it is an argument that is already there.
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["attached_value", "consumer_devices", "near", "same_device"]


def same_device(a: str, b: str) -> bool:
    def canon(d: str) -> str:
        return d.replace("/job:localhost/replica:0/task:0", "") or "/device:CPU:0"
    return canon(a) == canon(b)


def consumer_devices(graph_def: Any) -> Mapping[str, set[str]]:
    """node -> the devices of the ops that read it."""
    out: dict[str, set[str]] = {}
    for n in graph_def.node:
        for i in n.input:
            out.setdefault(i.lstrip("^").split(":")[0], set()).add(n.device)
    return out


def attached_value(node: Any) -> Any:
    """The value a rewrite pass attached to a placeholder it added (its ``_tfplace_value``)."""
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util
    return tf.constant(tensor_util.MakeNdarray(node.attr["_tfplace_value"].tensor))


# TF captures an eager tensor of at most this many elements by value, as a Const in the
# function (``func_graph._EAGER_CONST_THRESHOLD``): it never crosses per step, and reading a
# remote one back at trace time would cost an RPC (and fail once its worker is gone)
BY_VALUE = 128


def near(devices: set[str], value: Any, made: dict[tuple[int, str], Any] | None = None) -> Any:
    """``value`` on the one device in ``devices`` (those of the ops that read it) when that
    is another device than the value's and TF would capture it as an argument (more than
    ``BY_VALUE`` elements); else ``value`` itself. ``made`` keeps the copies already made, so
    the placeholders of one constant that the rewrite repeats (one per replica and micro-batch)
    share one copy per device."""
    import tensorflow as tf
    if len(devices) != 1 or int(tf.size(value)) <= BY_VALUE:
        return value
    (device,) = devices
    if not device or not hasattr(value, "device") or same_device(device, value.device):
        return value
    made = {} if made is None else made
    key = (id(value), device)
    if key not in made:
        with tf.device(device):
            made[key] = (value, tf.identity(value))     # the value kept: its id stays its own
    return made[key][1]
