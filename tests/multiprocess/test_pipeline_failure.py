"""No hang: a failing check in stage 1, or stage 1's worker killed mid-step, fails the step fast."""
from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "pipeline_failure_script.py")


def _line(out: str, prefix: str) -> str:
    return next((ln for ln in out.splitlines() if ln.startswith(prefix)), f"no {prefix} line")


def test_stage_failure_and_killed_stage_worker_fail_within_10s():
    r = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    tail = r.stdout[-2000:] + r.stderr[-2000:]
    assert r.returncode == 0, tail
    stage = _line(r.stdout, "STAGE1")
    assert "task:1" in stage and "assert_on=['/job:worker/replica:0/task:1" in stage, tail
    check = _line(r.stdout, "ASSERT")
    assert check.startswith("ASSERT") and "message_ok=True" in check, tail
    assert float(check.split("after ")[1].split("s ")[0]) < 10, check
    lost = _line(r.stdout, "WORKERLOST")
    assert lost.startswith("WORKERLOST"), tail
    assert float(lost.split("after ")[1].split("s ")[0]) < 10, lost
    # the kill came while the step ran (it spins for far longer than the test waits)
    assert float(lost.split("step ran ")[1].split("s ")[0]) >= 1.0, lost
    assert "weights_intact=True" in lost, lost
    assert "worker:1" in lost and "died" in lost and "pipeline stage 1" in lost, lost
