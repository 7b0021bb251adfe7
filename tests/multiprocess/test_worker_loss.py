"""A worker that dies mid-training gives WorkerLost quickly, and the user's weights survive."""
from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "worker_loss_script.py")


def test_killed_worker_raises_worker_lost_and_keeps_weights():
    r = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith(("WORKERLOST", "NO "))),
                r.stdout[-2000:] + r.stderr[-2000:])
    assert r.returncode == 0, line
    assert line.startswith("WORKERLOST"), line
    seconds = float(line.split("after ")[1].split("s ")[0])
    assert seconds < 10, line
    assert "weights_intact=True" in line, line
    assert "worker:1" in line and "died" in line, line
