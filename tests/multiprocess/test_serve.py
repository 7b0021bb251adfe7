"""`tfplace serve` starts one task of a multi-host cluster described by a cluster YAML."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_starts_a_listening_worker(tmp_path):
    port = _free_port()
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(
        "devices:\n"
        "  - {name: /job:worker/replica:0/task:0/device:CPU:0, memory: 1GiB}\n"
        "  - {name: /job:worker/replica:0/task:0/device:CPU:1, memory: 1GiB}\n"
        f"tasks:\n  worker: ['127.0.0.1:{port}']\n")
    p = subprocess.Popen([sys.executable, "-m", "tfplace.cli", "serve", "--cluster", str(cfg),
                          "--task", "worker:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        line = p.stdout.readline()
        assert "serving worker:0" in line and "2 device(s)" in line, line
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the worker never listened"
                assert p.poll() is None, p.stderr.read()
                time.sleep(0.2)
    finally:
        p.kill()
        p.wait(timeout=10)


def test_serve_unknown_task_exits_2(tmp_path):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text("devices:\n  - {name: /job:worker/replica:0/task:0/device:CPU:0}\n"
                   "tasks:\n  worker: ['127.0.0.1:1']\n")
    r = subprocess.run([sys.executable, "-m", "tfplace.cli", "serve", "--cluster", str(cfg),
                        "--task", "worker:3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "worker:3" in r.stderr and "Traceback" not in r.stderr
