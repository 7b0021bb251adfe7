"""Interleaved measurement: every configuration's processes stay alive, and the parent runs them
one block of steps at a time, in turn, so that each configuration is timed in the same minutes
as the others.

Why: this VM's speed drifts over tens of seconds (BENCHMARKS.md: the "slow mode", 20-40% more
CPU per kernel for a while). Timed one after another, 20-40 s per configuration, two
configurations can land in different modes, and their ratio then measures the drift. Timed in
blocks of a few steps taken in turn, they share the drift.

Protocol. The parent makes one FIFO per process that takes commands, opens it read-write (so
that the child's open for reading does not block), and passes its path as ``--control``. The
child sets up and warms up, emits ``{"ready": true, "pids": [...]}`` and then, for each line
``run N``, runs N timed steps and emits the block's result; on ``stop`` it leaves the loop and
emits its final result as it would without ``--control``. Every message is one ``marker`` +
JSON line on stdout; stderr goes to a file, read back only if the child fails.
"""
from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable

__all__ = ["serve", "Group", "fifo", "spawn", "idle_cpu", "scratch", "interleave"]


# ---------------------------------------------------------------------------------------------
# the child's side

def serve(control: str, block: Callable[[int], dict], emit: Callable[[dict], None],
          pids: list[int]) -> list[dict]:
    """Emit ready (with ``pids``, the processes whose CPU is this configuration's), then run
    ``block(n)`` for each ``run n`` read from ``control`` and emit its result, until ``stop``.
    Returns the blocks' results."""
    emit({"ready": True, "pids": pids})
    done: list[dict] = []
    with open(control) as commands:
        for line in commands:
            word, _, arg = line.strip().partition(" ")
            if word == "stop":
                break
            if word == "run":
                r = dict(block(int(arg)), block=len(done))
                done.append(r)
                emit(r)
    return done


# ---------------------------------------------------------------------------------------------
# the parent's side

def fifo(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    os.mkfifo(path)
    return path


class Group:
    """One configuration's processes (``procs``, each printing ``marker`` lines) and the FIFOs
    that command them; ``per_block`` results come back for each command (one per process that
    times steps: two for a horovodrun of two ranks)."""

    def __init__(self, name: str, procs: list[subprocess.Popen], fifos: list[str],
                 per_block: int, marker: str, stderr_paths: list[str]) -> None:
        self.name, self.procs, self.per_block, self.marker = name, procs, per_block, marker
        self.stderr_paths = stderr_paths
        self.fds = [os.open(f, os.O_RDWR) for f in fifos]
        self.pids: list[int] = []
        self._q: queue.Queue = queue.Queue()
        for p in procs:
            threading.Thread(target=self._read, args=(p,), daemon=True).start()

    def _read(self, p: subprocess.Popen) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            if self.marker in line:
                self._q.put(json.loads(line.split(self.marker, 1)[1]))
        self._q.put({"eof": p.wait()})

    def send(self, command: str) -> None:
        for fd in self.fds:
            os.write(fd, (command + "\n").encode())

    def wait(self, timeout: float) -> list[dict]:
        """The next ``per_block`` messages; a RuntimeError with the children's stderr tail if
        one exits or the time runs out first."""
        deadline = time.monotonic() + timeout
        out: list[dict] = []
        while len(out) < self.per_block:
            try:
                msg = self._q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name}: no answer within {timeout:.0f} s"
                                   f"{self._tail()}") from None
            if "eof" in msg:
                raise RuntimeError(f"{self.name}: a child exited (status {msg['eof']})"
                                   f"{self._tail()}")
            out.append(msg)
        return out

    def ready(self, timeout: float) -> None:
        self.pids = [pid for m in self.wait(timeout) for pid in m["pids"]]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def _tail(self) -> str:
        lines: list[str] = []
        for path in self.stderr_paths:
            try:
                with open(path) as f:
                    lines += f.read().strip().splitlines()[-10:]
            except OSError:
                pass
        return ":\n" + "\n".join(lines) if lines else ""


def spawn(args: list[str], env: dict, children: list[subprocess.Popen],
          directory: str, label: str) -> tuple[subprocess.Popen, str]:
    """A child with stdout piped (line-buffered text) and stderr to a file in ``directory``."""
    err_path = os.path.join(directory, f"{label}.stderr")
    err = open(err_path, "w")
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
                         start_new_session=True, env=env)
    err.close()
    children.append(p)
    return p, err_path


def idle_cpu(groups: list[Group], running: Group, cpu_seconds: Callable[[int], float]
             ) -> Callable[[], float]:
    """Start counting the CPU seconds of every process of the groups other than ``running``;
    the returned function gives the seconds used since."""
    pids = [pid for g in groups if g is not running for pid in g.pids]

    def total() -> float:
        s = 0.0
        for pid in pids:
            try:
                s += cpu_seconds(pid)
            except OSError:
                pass
        return s

    start = total()
    return lambda: total() - start


def scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="tfplace_bench_")


def interleave(starts: list[tuple[str, Callable[[str], Group]]], *, blocks: int,
               block_steps: int, timeout: float, children: list[subprocess.Popen],
               kill: Callable[[], None], cpu_seconds: Callable[[int], float], width: int
               ) -> tuple[dict[str, list[list[dict]]], dict[str, list[dict]]]:
    """Set up every group (``start(directory)``, waited for in turn), then ``blocks`` rounds
    of ``run block_steps`` to each group in alternating order, then ``stop`` to each in turn
    (a child may still trace alone then). Returns per group name its blocks' messages and its
    final messages (sorted by "index"). Prints the set-up times and the idle groups' CPU."""
    runs: dict[str, list[list[dict]]] = {name: [] for name, _start in starts}
    finals: dict[str, list[dict]] = {}
    background: list[float] = []
    with scratch() as directory:
        groups = []
        for name, start in starts:
            t = time.perf_counter()
            g = start(directory)
            g.ready(timeout)
            groups.append(g)
            print(f"  set up {name:<{width}} ({time.perf_counter() - t:.0f} s)", flush=True)
        per_group = [sum(cpu_seconds(pid) for pid in g.pids) for g in groups]
        time.sleep(3.0)
        print("  idle CPU while waiting for a block (ms per s): " + ", ".join(
            f"{g.name} {(sum(cpu_seconds(pid) for pid in g.pids) - c) / 3.0 * 1e3:.0f}"
            for g, c in zip(groups, per_group)), flush=True)
        for b in range(blocks):
            for g in groups if b % 2 == 0 else groups[::-1]:
                others = idle_cpu(groups, g, cpu_seconds)
                t = time.perf_counter()
                g.send(f"run {block_steps}")
                runs[g.name].append(g.wait(timeout))
                background.append(others() / (time.perf_counter() - t))
        for g in groups:
            g.send("stop")
            finals[g.name] = sorted(g.wait(timeout), key=lambda r: r.get("index", 0))
            g.close()
        for p in list(children):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        kill()
    print(f"  {blocks} blocks of {block_steps} steps per configuration, taken in turn; the idle "
          f"configurations' processes used at most {max(background) * 1e3:.0f} ms of CPU per "
          f"second of a block (median {statistics.median(background) * 1e3:.0f})", flush=True)
    return runs, finals
