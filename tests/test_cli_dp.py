"""The data-parallel flags of `tfplace plan`, `rewrite` and `run`, end to end in a subprocess."""
from __future__ import annotations

import json
import re

import pytest

from test_cli_errors import MLP_SCRIPT, assert_user_error, run_cli
from tfplace.cli import parse_args


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("dp")
    (d / "mlp_step.py").write_text(MLP_SCRIPT)
    return f"{d / 'mlp_step.py'}:train_step"


@pytest.fixture(scope="module")
def dp_plan(script, tmp_path_factory) -> tuple[str, str]:
    """(stdout, plan path) of `tfplace plan --data-parallel 2 --batch-size 16` on local:4."""
    path = str(tmp_path_factory.mktemp("plan") / "plan.pbtxt")
    out = run_cli("plan", script, "--cluster", "local:4", "--data-parallel", "2",
                  "--batch-size", "16", "--out", path)
    assert out.returncode == 0, out.stderr
    return out.stdout, path


def test_flags_parse_with_defaults() -> None:
    a = parse_args(["plan", "s.py:f", "--cluster", "local:2"])
    assert (a.data_parallel, a.sync, a.sync_backend, a.fusion_bytes) == (1, "auto", "tf", None)
    a = parse_args(["run", "s.py:f", "--cluster", "local:2", "--data-parallel", "auto",
                    "--sync", "ps", "--fusion-bytes", "4096"])
    assert (a.data_parallel, a.sync, a.fusion_bytes) == ("auto", "ps", 4096)
    a = parse_args(["rewrite", "s.py:f", "--plan", "p.pbtxt", "--out", "g.pb"])
    assert (a.data_parallel, a.sync, a.sync_backend) == (None, None, None)   # from the plan


@pytest.mark.parametrize("argv,fragment", [
    (["--data-parallel", "0"], "is not a replica count"),
    (["--sync", "gossip"], "invalid choice: 'gossip'"),
    (["--sync-backend", "nccl"], "invalid choice: 'nccl'"),
    (["--fusion-bytes", "-1"], "not a byte count"),
])
def test_bad_flag_values_are_usage_errors(argv: list[str], fragment: str) -> None:
    out = run_cli("plan", "s.py:f", "--cluster", "local:4", *argv)
    assert out.returncode == 2 and fragment in out.stderr and "Traceback" not in out.stderr


def test_plan_data_parallel_summary(dp_plan) -> None:
    stdout, _ = dp_plan
    assert "data parallel: 2 replicas" in stdout
    assert re.search(r"^sync: (ring|ps|hierarchical) ", stdout, re.M)
    assert re.search(r"^  why: .*ms", stdout, re.M)


@pytest.mark.parametrize("argv,fragments", [
    (["--data-parallel", "3", "--batch-size", "16"], ["data_parallel=3", "4 devices"]),
    (["--data-parallel", "8", "--batch-size", "16"], ["data_parallel=8", "4 devices"]),
    (["--data-parallel", "4", "--batch-size", "18"], ["global batch 18", "16 or 20"]),
])
def test_plan_bad_replicas_or_batch(script, argv: list[str], fragments: list[str]) -> None:
    assert_user_error(run_cli("plan", script, "--cluster", "local:4", *argv), *fragments)


def test_rewrite_replicates_from_the_plan(script, dp_plan, tmp_path) -> None:
    _, plan = dp_plan
    gd = tmp_path / "g.pbtxt"
    out = run_cli("rewrite", script, "--plan", plan, "--out", str(gd), "--batch-size", "16")
    assert out.returncode == 0, out.stderr
    text = gd.read_text()
    assert "tfplace_r1/" in text and "CollectiveReduceV2" in text
    bad = run_cli("rewrite", script, "--plan", plan, "--out", str(gd), "--batch-size", "16",
                  "--data-parallel", "4", "--sync", "hierarchical")
    assert_user_error(bad, "--data-parallel 4 (4 replicas) but the plan has 2",
                      "--sync hierarchical but the plan has")


def test_run_data_parallel_with_trace(script, tmp_path) -> None:
    trace = tmp_path / "out.json"
    out = run_cli("run", script, "--cluster", "local:4", "--data-parallel", "2", "--steps", "3",
                  "--batch-size", "16", "--placer", "single", "--fusion-bytes", "512",
                  "--steps-per-execution", "2", "--input", "worker", "--trace", str(trace))
    assert out.returncode == 0, out.stderr
    losses = [float(v) for v in re.findall(r"^step \d+: loss (\S+)$", out.stdout, re.M)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert "overlap of gradient sync with backward (3 steps" in out.stdout
    data = json.loads(trace.read_text())
    ops = {e["args"]["op"] for e in data["traceEvents"] if e["ph"] == "X"}
    # oneDNN hosts run _MklMatMul / _MklNativeFusedMatMul kernels for the graph's MatMuls
    assert "CollectiveReduceV2" in ops and any(op.endswith("MatMul") for op in ops), sorted(ops)
    # with 2 steps per call, the second step's copy ("tfplace_step1/...") is on the devices too
    matmuls = [e for e in data["traceEvents"] if e["ph"] == "X" and e["name"].endswith("MatMul")]
    assert {e["name"].split("/")[0] for e in matmuls} == {"tfplace", "tfplace_step1"}
    devices = {e["args"]["device"] for e in matmuls}       # one per replica, no "host"
    assert len(devices) == 2 and all(d.startswith("/job:localhost/") for d in devices), devices
    reads = [e for e in data["traceEvents"]                       # --input worker: in the
             if e["ph"] == "X" and e["args"]["op"] == "IteratorGetNext"]  # step, per replica
    assert {e["name"].split("/")[1].split("_")[0] for e in reads} == {"r0", "r1"}
    # each replica's read is filed under the device it ran on (the executor's input_devices)
    assert {e["args"]["device"] for e in reads} == devices, {e["args"]["device"] for e in reads}
    assert data["otherData"]["tfplace_overlap"]["sync_ops"] > 0
