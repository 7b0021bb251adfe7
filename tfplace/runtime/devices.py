"""Makes a cluster's devices exist in this process: logical CPUs, or a connection to gRPC tasks."""
from __future__ import annotations

import json
import threading

from tfplace.cluster import Cluster
from tfplace.errors import ClusterError

__all__ = ["configure_local_devices", "prepare", "cluster_spec_dict", "collectives_ready"]

_lock = threading.Lock()
_connected: str | None = None
_collectives: str | None = None     # the cluster key collectives were configured for


def _context_initialized() -> bool:
    from tensorflow.python.eager import context
    return context.context()._context_handle is not None  # noqa: SLF001 - no public probe


def configure_local_devices(n: int) -> bool:
    """Split the host CPU into ``n`` logical devices if TF is not initialised yet.

    Returns True when the configuration took effect (or already had at least ``n`` devices).
    """
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) >= n:
        return True
    if _context_initialized():
        return len(tf.config.list_logical_devices("CPU")) >= n
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    return True


def cluster_spec_dict(cluster: Cluster) -> dict[str, list[str]]:
    jobs: dict[str, list[tuple[int, str]]] = {}
    for t in cluster.tasks:
        jobs.setdefault(t.job, []).append((t.index, t.address))
    return {job: [a for _, a in sorted(ts)] for job, ts in sorted(jobs.items())}


def prepare(cluster: Cluster, devices: tuple[str, ...]) -> None:
    """Make every device in ``devices`` usable from this process, or raise ClusterError."""
    global _connected
    import tensorflow as tf
    with _lock:
        if cluster.tasks:
            spec = cluster_spec_dict(cluster)
            key = json.dumps(spec, sort_keys=True)
            if _connected != key:
                _configure_collectives(spec, key)
                tf.config.experimental_connect_to_cluster(tf.train.ClusterSpec(spec),
                                                          job_name="localhost")
                _connected = key
        else:
            local = [d for d in devices if d.startswith("/job:localhost/")]
            configure_local_devices(max([int(d.rsplit(":", 1)[1]) + 1 for d in local] or [1]))
        known = {d.name for d in tf.config.list_logical_devices()}
        missing = [d for d in devices if d not in known and _short(d) not in known]
        if missing:
            raise ClusterError(
                f"devices {missing} do not exist in this process (it has {sorted(known)}); "
                "create the cluster with tfplace.Cluster.local(devices=N) before any TensorFlow "
                "op runs, or check that the workers are up")


def _configure_collectives(spec: dict[str, list[str]], key: str) -> None:
    """TF collectives across gRPC tasks need the group leader set before TF initialises; when
    TF already runs, tfplace syncs gradients with placed dataflow nodes instead."""
    global _collectives
    from tfplace.runtime.worker import collective_leader
    if _collectives is None and not _context_initialized():
        from tensorflow.python.eager import context
        context.context().configure_collective_ops(collective_leader=collective_leader(spec))
        _collectives = key


def collectives_ready(cluster: Cluster) -> bool:
    """Can TF's collective ops span this cluster's devices from this process?"""
    if not cluster.tasks:
        return True
    return _collectives is not None and _collectives == json.dumps(cluster_spec_dict(cluster),
                                                                   sort_keys=True)


def _short(device: str) -> str:
    return device.replace("/job:localhost/replica:0/task:0", "")
