"""Launches loopback gRPC workers as child processes and tears them down."""
from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import IO, Any, Callable, cast

from tfplace.cluster import Cluster, Task, grpc_cluster
from tfplace.errors import ClusterError, WorkerLost

__all__ = ["LocalWorkers", "launch"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalWorkers:
    """The worker processes behind a ``Cluster.launch_local`` cluster."""

    def __init__(self, procs: list[subprocess.Popen], tasks: tuple[Task, ...]) -> None:
        self.procs = procs
        self.tasks = tasks
        self._finalizer = weakref.finalize(self, _kill, list(procs))

    def dead(self) -> list[str]:
        return [f"{t.job}:{t.index} ({t.address}, exit {p.poll()})"
                for p, t in zip(self.procs, self.tasks) if p.poll() is not None]

    def check(self, ran: Callable[[Task], str] | None = None) -> None:
        """WorkerLost when a worker has exited; ``ran(task)`` may say what ran there (e.g.
        "pipeline stage 1"), appended to the worker's name."""
        lost = [(t, p.poll()) for p, t in zip(self.procs, self.tasks) if p.poll() is not None]
        if lost:
            names = [f"{t.job}:{t.index} ({t.address}, exit {code}"
                     + (f"; ran {ran(t)})" if ran and ran(t) else ")") for t, code in lost]
            raise WorkerLost(f"worker(s) {', '.join(names)} died; nothing was applied by the "
                             "failed step: restart the cluster (Cluster.launch_local) and "
                             "re-run from the last good state")

    def shutdown(self) -> None:
        """Stop the workers. First collect this process's garbage while they still run: a
        tf.function that no one holds any more (TF's functions sit in reference cycles) is
        then removed from the workers' eager contexts too, instead of at exit, when TF logs
        "Failed to remove function remotely due to Socket closed" for each one."""
        if self._finalizer.alive and "tensorflow" in sys.modules:
            gc.collect()
            self._after_removals()
        self._finalizer()

    def _after_removals(self, timeout: float = 2.0) -> None:
        """Return when every live worker has run a trivial op from here, or after ``timeout``
        seconds (a worker busy with a failed step's op): TF sends the removals on the same
        ordered stream as the op, asynchronously, and killing a worker before it has taken
        them fails them with "Connection reset by peer"."""
        import tensorflow as tf
        live = [t for p, t in zip(self.procs, self.tasks) if p.poll() is None]

        def ping() -> None:
            try:
                for t in live:
                    with tf.device(f"/job:{t.job}/replica:0/task:{t.index}/device:CPU:0"):
                        tf.zeros(()).numpy()
            except Exception:  # noqa: BLE001 - not connected, or a worker gone: nothing to wait
                pass
        thread = threading.Thread(target=ping, name="tfplace-shutdown", daemon=True)
        thread.start()
        thread.join(timeout)


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def launch(workers: int, devices_per_worker: int, *, pin: bool = True,
           memory: int, flops: float, timeout: float = 60.0, connect: bool = True) -> Cluster:
    if workers < 1 or devices_per_worker < 1:
        raise ClusterError(f"launch_local needs workers >= 1 and devices_per_worker >= 1 "
                           f"(got workers={workers}, devices_per_worker={devices_per_worker})")
    tasks = tuple(Task("worker", i, f"127.0.0.1:{_free_port()}") for i in range(workers))
    spec = json.dumps({"worker": [t.address for t in tasks]})
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    procs = []
    for t in tasks:
        cores = str(cpus[t.index % len(cpus)]) if pin and cpus and workers <= (ncpu or 1) else ""
        cmd = [sys.executable, "-m", "tfplace.runtime.worker", "--spec", spec, "--task",
               str(t.index), "--devices", str(devices_per_worker), "--cores", cores,
               "--parent", str(os.getpid())]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=env, text=True))
    handle = LocalWorkers(procs, tasks)
    try:
        _wait_ready(procs, tasks, timeout)
    except BaseException:
        handle.shutdown()
        raise
    cluster = grpc_cluster(tasks, devices_per_worker, memory=memory, flops=flops, launcher=handle)
    if connect:
        # Connect now, before the caller creates variables: TF's set_server_def on a context
        # that already holds variables leaves some of their later updates unapplied.
        from tfplace.runtime.devices import prepare
        prepare(cluster, cluster.names)
    return cluster


def _wait_ready(procs: list[subprocess.Popen], tasks: tuple[Task, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p, t in zip(procs, tasks):
        line: list[str] = []
        stdout = cast("IO[str]", p.stdout)          # launch() opens every worker with stdout=PIPE
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        if not line or "TFPLACE_READY" not in line[0]:
            err = ""
            if p.poll() is not None and p.stderr is not None:
                err = p.stderr.read()[-800:]
            raise WorkerLost(f"worker {t.job}:{t.index} at {t.address} did not start within "
                             f"{timeout:.0f} s (exit code {p.poll()}): {err.strip() or 'no output'}"
                             "; check that TensorFlow imports and the port is free")
        # stop the pipes from filling up: drain them in the background
        for stream in (p.stdout, p.stderr):
            threading.Thread(target=_drain, args=(stream,), daemon=True).start()


def _drain(stream: Any) -> None:
    for _ in iter(stream.readline, ""):
        pass
