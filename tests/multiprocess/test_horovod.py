"""sync_backend="horovod": the rewrite holds Horovod's ops, and under ``horovodrun --gloo -np 2``
every rank trains the GLOBAL batch as the single-device step does (1e-5 relative): a plain step,
Keras fit with the callback, and ``tfplace run``.

Skipped only when Horovod is not built (``make horovod``) and TFPLACE_REQUIRE_HOROVOD is unset;
with it set, a missing Horovod is a failure. ``TFPLACE_HOROVOD_NP4=1`` adds a 4-process run
(about 80 s on 2 cores, so not by default).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import models
import tfplace
from tfplace.errors import BackendError, PlanError

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "horovod_script.py")


def _horovodrun() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    return beside if os.path.exists(beside) else shutil.which("horovodrun")


def _missing() -> str | None:
    try:
        import horovod.tensorflow  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or a library built for another TF
        return f"{type(e).__name__}: {e}"
    return None if _horovodrun() else "horovodrun not found next to the interpreter"


@pytest.fixture(scope="module", autouse=True)
def horovod() -> None:
    why = _missing()
    if why is None:
        return
    if os.environ.get("TFPLACE_REQUIRE_HOROVOD"):
        pytest.fail(f"TFPLACE_REQUIRE_HOROVOD is set but Horovod is not usable ({why}); "
                    "run `make horovod`")
    pytest.skip(f"Horovod is not built ({why}): run `make horovod`; "
                "TFPLACE_REQUIRE_HOROVOD=1 makes this a failure")


def _launch(np: int, *checks: str) -> list[dict]:
    cmd = [_horovodrun(), "--gloo", "-np", str(np), "-H", f"localhost:{np}", sys.executable,
           SCRIPT, *checks]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=HERE,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    results = [json.loads(line.split("RESULT ", 1)[1]) for line in r.stdout.splitlines()
               if "RESULT " in line]
    checks_run = [c.split("=")[0] for c in checks]
    assert sorted((x["check"], x["rank"]) for x in results) == \
        sorted((c, rank) for c in checks_run for rank in range(np)), r.stdout[-3000:]
    return results


@pytest.fixture(scope="module")
def cli_script(tmp_path_factory) -> str:
    from test_cli_errors import MLP_SCRIPT
    path = tmp_path_factory.mktemp("hvd") / "mlp_step.py"
    path.write_text(MLP_SCRIPT)
    return str(path)


def test_two_processes_match_single_device(cli_script) -> None:
    """Steps (MLP placed over each process's 2 devices, CNN, Embedding), Keras fit and
    `tfplace run`, each rank vs one device."""
    results = _launch(2, "mlp@round_robin", "cnn", "embedding", "keras-mlp",
                      f"cli-run={cli_script}")
    for x in results:
        assert x["size"] == 2
        if x["check"] != "cli-run":
            assert x["replicas"] == 2 and "HorovodAllreduce" in x["ops"], x
            assert ("HorovodAllgather" in x["ops"]) == x["check"].endswith("embedding"), x
            assert x["max_abs"] < 1e-5, x
    assert all(x["devices"] == 2 for x in results if x["check"] == "mlp@round_robin")
    losses = {x["rank"]: x["losses"] for x in results if x["check"] == "cli-run"}
    assert losses[0] == losses[1]


@pytest.mark.skipif(not os.environ.get("TFPLACE_HOROVOD_NP4"),
                    reason="4 processes take ~80 s on 2 cores; TFPLACE_HOROVOD_NP4=1 runs them")
def test_four_processes_match_single_device() -> None:
    for x in _launch(4, "mlp", "embedding", "keras-embedding"):
        assert x["replicas"] == 4 and x["max_abs"] < 1e-5, x


# -- in this process: the rewrite and the errors, no horovodrun -------------------------------
def _captured_plan(kind: str, cluster):
    from tfplace.capture import capture
    from tfplace.data_parallel import plan_data_parallel, shard_args
    (_, step) = models.twin(kind)[1]
    (args, _kw), _ = shard_args((models.data(kind), {}), 2)
    captured = capture(step, args)
    return captured, plan_data_parallel(captured, cluster, replicas=2, placer="single",
                                        backend="horovod")


@pytest.mark.parametrize("kind", ["mlp", "embedding"])
def test_rewrite_inserts_horovod_ops(kind, local4) -> None:
    import tensorflow as tf
    from tfplace.api import rewrite_captured
    from tfplace.plan import Plan
    captured, plan = _captured_plan(kind, local4)
    before = captured.graph_def.SerializeToString()
    gd = rewrite_captured(captured, plan)
    assert captured.graph_def.SerializeToString() == before          # input not mutated
    assert plan.sync.backend == "horovod" and plan.sync.method == "ring"
    assert "backend horovod" in plan.summary() and "Horovod over Gloo" in plan.sync.reason
    assert Plan.from_proto(plan.to_proto()) == plan
    ops = [n.op for n in gd.node]
    sparse = [m for m in captured.gradients if m.sparse]
    assert ops.count("HorovodAllreduce") == len(plan.buckets) + len(captured.outputs)
    assert ops.count("HorovodAllgather") == 2 * len(sparse) and (kind == "embedding") == \
        bool(sparse)
    assert ops.count("HorovodRank") == 1
    nodes = {n.name: n for n in gd.node}
    for name in captured.inputs:                                      # the global batch
        assert nodes[name].attr["shape"].shape.dim[0].size == 16
    for n in gd.node:                                                 # ops as Horovod registers
        if n.op == "HorovodAllreduce":
            assert n.attr["reduce_op"].i == 1 and abs(n.attr["postscale_factor"].f - 0.5) < 1e-7
    with tf.Graph().as_default():
        tf.graph_util.import_graph_def(gd, name="")


def test_cli_plan_and_rewrite(cli_script, tmp_path) -> None:
    """`tfplace plan --sync-backend horovod` needs no horovodrun; `tfplace rewrite` writes the
    Horovod ops into its GraphDef."""
    from test_cli_errors import run_cli
    plan, graph = str(tmp_path / "plan.pbtxt"), str(tmp_path / "g.pbtxt")
    out = run_cli("plan", f"{cli_script}:train_step", "--cluster", "local:1", "--placer",
                  "single", "--data-parallel", "2", "--sync-backend", "horovod",
                  "--batch-size", "16", "--out", plan)
    assert out.returncode == 0 and "backend horovod, 2 replicas" in out.stdout, out.stderr
    out = run_cli("rewrite", f"{cli_script}:train_step", "--plan", plan, "--batch-size", "16",
                  "--out", graph)
    assert out.returncode == 0, out.stderr
    text = open(graph).read()
    assert 'op: "HorovodAllreduce"' in text and 'op: "HorovodRank"' in text


def test_horovod_runs_its_own_ring() -> None:
    from tfplace.data_parallel import horovod_sync
    assert horovod_sync(2, 1000, requested="auto", backward_seconds=0.0).method == "ring"
    with pytest.raises(PlanError, match="sync='ring' or 'auto'"):
        horovod_sync(2, 1000, requested="ps", backward_seconds=0.0)


def test_process_count_must_match(monkeypatch) -> None:
    """Not launched by horovodrun (1 process) but data_parallel=2: the fix is named."""
    from tfplace.runtime import horovod

    class OneProcess:
        def size(self) -> int:
            return 1
    monkeypatch.setattr(horovod, "start", lambda: OneProcess())
    with pytest.raises(BackendError, match=r"Horovod has 1 process.*horovodrun --gloo -np 2"):
        horovod.processes(2)
    assert horovod.processes("auto") == 1
    with pytest.raises(BackendError, match="horovodrun --gloo -np 2"):
        tfplace.parallelize(lambda x: x, cluster=tfplace.Cluster.local(1, configure=False),
                            data_parallel=2, sync_backend="horovod")
