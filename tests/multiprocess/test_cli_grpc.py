"""`tfplace run` on workers it launches itself (--cluster launch:WxD), end to end."""
from __future__ import annotations

import re

from test_cli_errors import MLP_SCRIPT, run_cli


def test_run_on_launched_workers_trains_and_exits_quietly(tmp_path) -> None:
    """The run trains, and the workers stop after the step's functions are gone: TF logs
    "Failed to remove function remotely" for every function still registered when they stop."""
    (tmp_path / "mlp_step.py").write_text(MLP_SCRIPT)
    out = run_cli("run", f"{tmp_path / 'mlp_step.py'}:train_step", "--cluster", "launch:2x1",
                  "--steps", "3", "--batch-size", "16")
    assert out.returncode == 0, out.stderr
    losses = [float(v) for v in re.findall(r"^step \d+: loss (\S+)$", out.stdout, re.M)]
    assert len(losses) == 3 and losses[-1] < losses[0], out.stdout
    assert "Failed to remove function remotely" not in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
