"""Child processes of the benchmarks: each in its own session, all killed together at the end."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from typing import Any

__all__ = ["children", "kill_children", "free_port", "cpu_seconds", "read_result", "pin_process"]

children: list[subprocess.Popen] = []


def kill_children() -> None:
    """SIGKILL every child's process group (the child and the workers it started), then reap."""
    for p in children:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in children:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    children.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int | None = None) -> float:
    """user + system CPU seconds of a process (this one by default), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_result(p: subprocess.Popen, out: str, err: str, marker: str, label: Any) -> dict:
    """The last ``marker`` + JSON line a finished child printed; its stderr tail if it failed."""
    lines = [ln for ln in out.splitlines() if ln.startswith(marker)]
    if p.returncode != 0 or not lines:
        tail = "\n".join(err.strip().splitlines()[-15:])
        raise RuntimeError(f"child {label} failed (exit {p.returncode}):\n{tail}")
    return json.loads(lines[-1][len(marker):])


def pin_process(index: int) -> None:
    """Pin this process to core ``index`` (mod the cores it may use) and give TensorFlow one
    intra-op thread (two inter-op): a peer or baseline set up like tfplace's pinned workers.
    Call it before TensorFlow runs its first op."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
