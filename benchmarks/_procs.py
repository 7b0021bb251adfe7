"""Child processes of the benchmarks: each in its own session, all killed together at the end."""
from __future__ import annotations

import os
import signal
import socket
import subprocess

__all__ = ["children", "kill_children", "free_port"]

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
