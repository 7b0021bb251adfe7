"""Horovod at run time: load its op library, start it, check the process count against the
plan's replicas, and start every process from rank 0's variables.

SPMD: every process runs one replica of the same rewritten step (``rewrite.horovod``), launched
by ``horovodrun --gloo -np N python script.py`` (or any Gloo rendezvous Horovod accepts).
"""
from __future__ import annotations

from typing import Any, Sequence

from tfplace.errors import BackendError, PlanError

__all__ = ["load", "start", "processes", "broadcast_variables", "HOROVOD_VERSION"]

HOROVOD_VERSION = "0.28.1"          # what `make horovod` builds; others may work, untested


def load() -> Any:
    """``horovod.tensorflow``, its op library loaded (so a GraphDef holding Horovod ops imports);
    BackendError naming ``make horovod`` when it is missing or built for another TensorFlow."""
    try:
        import horovod.tensorflow as hvd
        from horovod.tensorflow import mpi_ops
        mpi_ops.MPI_LIB.horovod_allreduce             # the op library really loaded
    except Exception as e:                            # ImportError, or TF's NotFoundError from
        cause = str(e).splitlines()[0][:200] if str(e) else type(e).__name__  # load_op_library
        raise BackendError(
            f"sync_backend='horovod' needs Horovod built for this TensorFlow ({cause}): run "
            f"`make horovod` (HOROVOD_REBUILD=1 after a TensorFlow upgrade; see README, "
            "'Horovod backend'), or use sync_backend='tf'") from None
    return hvd


def start() -> Any:
    """Horovod, initialised (``hvd.init()`` once per process; a user's own call is kept)."""
    hvd = load()
    if not hvd.is_initialized():
        hvd.init()
    return hvd


def processes(replicas: int | str) -> int:
    """The replica count ``data_parallel=replicas`` means under Horovod: the number of processes
    it runs (``"auto"``), which an int must equal."""
    if replicas != "auto" and (isinstance(replicas, bool) or not isinstance(replicas, int) or
                               replicas < 1):
        raise PlanError(f"data_parallel={replicas!r} is not a replica count; with "
                        "sync_backend='horovod' pass the number of Horovod processes or 'auto'")
    hvd = start()
    size = hvd.size()
    if replicas != "auto" and size != replicas:
        hint = " (not launched by horovodrun?)" if size == 1 else ""
        raise BackendError(
            f"data_parallel={replicas} with sync_backend='horovod' runs one replica per process, "
            f"but Horovod has {size} process(es){hint}: launch `horovodrun --gloo -np {replicas} "
            f"python SCRIPT.py` (or `horovodrun --gloo -np {replicas} tfplace run ...`), or "
            f"pass data_parallel='auto' (= {size}) or {size}")
    return size


def broadcast_variables(variables: Sequence[Any]) -> None:
    """Give every process rank 0's value of each variable (weights, optimizer slots, counters),
    one HorovodBroadcast each, named by position so that the processes pair them up."""
    import tensorflow as tf
    hvd = start()
    if hvd.size() == 1 or not variables:
        return
    variables = list(variables)

    @tf.function(autograph=False)
    def broadcast() -> None:
        for i, v in enumerate(variables):
            value = v.read_value()
            if value.dtype in (tf.uint32, tf.uint64):     # not among Horovod's types
                value = tf.cast(value, tf.int64)
            value = hvd.broadcast(value, root_rank=0, name=f"tfplace_broadcast_{i}")
            v.assign(tf.cast(value, v.dtype), read_value=False)
    broadcast()
