"""TF's CollectiveReduceV2 ring across 2 gRPC workers equals the single-device step."""
from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "collective_grpc_script.py")


def test_collective_ring_across_workers():
    r = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "COLLECTIVE" in r.stdout and "NO COLLECTIVE" not in r.stdout, r.stdout
