"""One gRPC worker: a tf.distribute.Server with N CPU devices, pinned to a core, dying with its parent."""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
import time
from typing import Any

__all__ = ["serve", "serve_task", "main", "collective_leader"]


def _die_with_parent(parent: int) -> None:
    try:  # Linux: the kernel kills us when the parent goes (PR_SET_PDEATHSIG = 1)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass

    def watch() -> None:  # and a portable fallback
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def serve(spec: dict[str, list[str]], job: str, index: int, devices: int, *,
          cores: list[int] | None = None, ready: Any = None) -> None:
    """Start the server for (job, index) and block forever."""
    if cores:
        os.sched_setaffinity(0, set(cores))
    threads = len(cores) if cores else os.cpu_count() or 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    config = tf.compat.v1.ConfigProto(device_count={"CPU": devices},
                                      intra_op_parallelism_threads=threads,
                                      inter_op_parallelism_threads=max(2, threads))
    # the pipeline's channel kernels, when the client's rewrite may use them (its own choice
    # follows the same rule: $TFPLACE_CHANNEL, else the op when it is built)
    from tfplace.runtime.channel import resolve_backend
    resolve_backend()
    # one group leader for TF collectives across the tasks (the client names the same one)
    config.experimental.collective_group_leader = collective_leader(spec)
    server = tf.distribute.Server(tf.train.ClusterSpec(spec), job_name=job, task_index=index,
                                  protocol="grpc", config=config, start=True)
    if ready is not None:
        ready()
    server.join()


def collective_leader(spec: dict[str, list[str]]) -> str:
    job = "worker" if "worker" in spec else sorted(spec)[0]
    return f"/job:{job}/replica:0/task:0"


def serve_task(cluster: Any, job: str, index: int) -> None:
    """`tfplace serve`: one task of a real multi-host cluster described by a cluster YAML."""
    from tfplace.errors import ClusterError
    from tfplace.runtime.devices import cluster_spec_dict
    spec = cluster_spec_dict(cluster)
    if job not in spec or not 0 <= index < len(spec[job]):
        raise ClusterError(f"task {job}:{index} is not in the cluster's tasks {spec}; "
                           "list it under 'tasks:' in the cluster YAML")
    prefix = f"/job:{job}/replica:0/task:{index}/"
    devices = sum(1 for d in cluster.devices if d.name.startswith(prefix)) or 1
    print(f"tfplace: serving {job}:{index} at {spec[job][index]} with {devices} device(s)",
          flush=True)
    serve(spec, job, index, devices)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tfplace.runtime.worker")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--job", default="worker")
    ap.add_argument("--task", type=int, required=True)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--cores", default="")
    ap.add_argument("--parent", type=int, default=0)
    a = ap.parse_args(argv)
    if a.parent:
        _die_with_parent(a.parent)
    cores = [int(c) for c in a.cores.split(",") if c]
    serve(json.loads(a.spec), a.job, a.task, a.devices, cores=cores or None,
          ready=lambda: print("TFPLACE_READY", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
