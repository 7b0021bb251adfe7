"""CLI bad input that fails before TensorFlow: exit code 2, one readable message, no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfplace.cli import main, parse_args

W0 = "/job:worker/replica:0/task:0/device:CPU:0"
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "tfplace.cli", *argv], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=120)


def assert_user_error(out: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("tfplace: error: ")
    assert out.stderr.count("tfplace: error:") == 1
    for f in fragments:
        assert f in out.stderr, out.stderr


@pytest.mark.parametrize("yaml_text,fragments", [
    (f"devices:\n  - name: {W0}\n    memroy: 1GiB\nfoo: 1\n",
     ["'memroy'", "'foo'", "allowed keys: name, kind, memory, flops"]),
    (f"devices:\n  - name: {W0}\n  - name: {W0}\n", [f"duplicate device name '{W0}'"]),
    (f"devices:\n  - name: {W0}\n    memory: 0\n", ["devices[0].memory = 0", "must be > 0 bytes"]),
])
def test_bad_cluster_yaml(tmp_path, yaml_text: str, fragments: list[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    out = run_cli("plan", str(tmp_path / "some.pb"), "--cluster", str(bad))
    assert_user_error(out, str(bad), *fragments)


def test_missing_cluster_file(tmp_path) -> None:
    source = tmp_path / "some.pb"              # exists: the cluster is the missing file
    source.write_bytes(b"")
    out = run_cli("plan", str(source), "--cluster", str(tmp_path / "nope.yaml"))
    assert_user_error(out, "nope.yaml", "does not exist")


@pytest.mark.parametrize("value,fragment", [
    ('{"cluster": ', "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["h1"]}}', "host:port"),
    ('{"cluster": {"worker": ["h1:1"]}, "task": {"type": "ps", "index": 0}}', "'ps'"),
])
def test_malformed_tf_config(value: str, fragment: str) -> None:
    out = run_cli("plan", "some.pb", "--cluster", "tf_config", env={"TF_CONFIG": value})
    assert_user_error(out, "TF_CONFIG", fragment)


@pytest.mark.parametrize("spec", ["local:0", "local:x", "launch:2", "launch:0x1"])
def test_bad_cluster_shorthand(spec: str) -> None:
    assert_user_error(run_cli("plan", "some.pb", "--cluster", spec), repr(spec))


def test_bad_task_for_serve(tmp_path) -> None:
    out = run_cli("serve", "--cluster", "local:1", "--task", "worker")
    assert_user_error(out, "--task 'worker'", "JOB:INDEX")


def test_missing_plan_file_for_rewrite(tmp_path) -> None:
    source = tmp_path / "some.pb"
    source.write_bytes(b"")
    out = run_cli("rewrite", str(source), "--plan", str(tmp_path / "p.pbtxt"), "--out", "x.pb")
    assert_user_error(out, "p.pbtxt", "does not exist")


def test_debug_shows_traceback(tmp_path) -> None:
    out = run_cli("--debug", "plan", "some.pb", "--cluster", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "Traceback" in out.stderr
    out = run_cli("plan", "some.pb", "--cluster", str(tmp_path / "nope.yaml"), "--debug")
    assert out.returncode == 2 and "Traceback" in out.stderr


def test_parse_args_and_usage_errors(capsys) -> None:
    args = parse_args(["plan", "m.pb", "--cluster", "local:2", "--out", "p.pbtxt"])
    assert (args.command, args.source, args.placer, args.debug) == ("plan", "m.pb", "m_etf", False)
    assert parse_args(["run", "s.py:f", "--cluster", "local:2"]).steps == 5
    assert main(["plan"]) == 2                          # argparse usage error, no exception
    assert main(["--version"]) == 0
    assert "0.1.0" in capsys.readouterr().out


def test_python_dash_m_tfplace() -> None:
    out = subprocess.run([sys.executable, "-m", "tfplace", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and "plan" in out.stdout and "serve" in out.stdout


def test_tf_config_value_is_json() -> None:
    assert json.loads('{"cluster": {}}') == {"cluster": {}}   # guard: the env var form is JSON


# -- real graphs: GraphDef files and SCRIPT.py:NAME sources ------------------------------------
MLP_SCRIPT = '''
import tensorflow as tf
import keras

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(4)])
opt = keras.optimizers.SGD(0.1)


@tf.function(input_signature=[tf.TensorSpec([None, 12], tf.float32),
                              tf.TensorSpec([None, 4], tf.float32)])
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss
'''
TINY_CLUSTER = """devices:
  - name: /job:worker/replica:0/task:0/device:CPU:0
    memory: 1KiB
  - name: /job:worker/replica:0/task:1/device:CPU:0
    memory: 1KiB
"""


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> tuple[str, str]:
    """(SCRIPT.py:NAME, GraphDef .pb path) of one small Keras MLP training step."""
    import importlib.util
    d = tmp_path_factory.mktemp("mlp")
    script = d / "mlp_step.py"
    script.write_text(MLP_SCRIPT)
    spec = importlib.util.spec_from_file_location("tfplace_test_mlp_step", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gd = module.train_step.get_concrete_function().graph.as_graph_def(add_shapes=True)
    pb = d / "step.pb"
    pb.write_bytes(gd.SerializeToString())
    return f"{script}:train_step", str(pb)


def test_missing_graph_def(tmp_path) -> None:
    missing = tmp_path / "missing.pb"
    assert_user_error(run_cli("plan", str(missing), "--cluster", "local:2"), str(missing),
                      "does not exist")


@pytest.mark.parametrize("command", ["plan", "rewrite", "run"])
def test_a_missing_source_fails_before_tensorflow_loads(command, tmp_path) -> None:
    """The source is checked first: the error does not wait for TensorFlow (about 5 s)."""
    plan = tmp_path / "p.pbtxt"
    argv = {"plan": [str(tmp_path / "m.pb"), "--cluster", "local:2"],
            "rewrite": [str(tmp_path / "m.py:step"), "--plan", str(plan), "--out",
                        str(tmp_path / "o.pb")],
            "run": [str(tmp_path / "m.py:step"), "--cluster", "local:2"]}[command]
    code = ("import sys; from tfplace.cli import main; "
            f"rc = main({[command, *argv]!r}); "
            "print('RC', rc, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert "RC 2 False" in out.stdout, out.stdout + out.stderr
    assert "does not exist" in out.stderr


def test_truncated_graph_def(mlp, tmp_path) -> None:
    data = Path(mlp[1]).read_bytes()
    cut = tmp_path / "cut.pb"
    cut.write_bytes(data[:len(data) // 2])
    assert_user_error(run_cli("plan", str(cut), "--cluster", "local:2"), str(cut), "truncated")


def test_unknown_placer_lists_valid_ones(mlp) -> None:
    from tfplace.placers import PLACER_NAMES
    out = run_cli("plan", mlp[1], "--cluster", "local:2", "--placer", "foo")
    assert_user_error(out, "'foo'", ", ".join(PLACER_NAMES))


@pytest.mark.parametrize("which", [0, 1], ids=["script", "graph_def"])
def test_model_does_not_fit(mlp, tmp_path, which: int) -> None:
    cluster = tmp_path / "tiny.yaml"
    cluster.write_text(TINY_CLUSTER)
    out = run_cli("plan", mlp[which], "--cluster", str(cluster))
    assert_user_error(out, "> capacity 1.0 KiB", "fix:")
    for task in (0, 1):
        dev = f"/job:worker/replica:0/task:{task}/device:CPU:0"
        line = next(ln for ln in out.stderr.splitlines() if dev in ln)
        assert "needs" in line and "capacity 1.0 KiB" in line, line


@pytest.mark.parametrize("which", [0, 1], ids=["script", "graph_def"])
def test_plan_and_rewrite(mlp, tmp_path, capsys, which: int) -> None:
    from tensorflow.core.framework import graph_pb2

    def cli(*argv: str) -> tuple[int, str, str]:
        if which == 0:     # a script rerun in this process would build renamed Keras layers
            out = run_cli(*argv)
            return out.returncode, out.stdout, out.stderr
        code = main(list(argv))                 # in process: TF loads once, not per call
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    plan = tmp_path / "plan.pbtxt"
    code, out, err = cli("plan", mlp[which], "--cluster", "local:2", "--out", str(plan))
    assert code == 0, err
    assert "placer=m_etf" in out and "#ops" in out and plan.is_file()
    assert out.count("/job:localhost/replica:0/task:0/device:CPU:") >= 2
    rewritten = tmp_path / "r.pb"
    code, out, err = cli("rewrite", mlp[which], "--plan", str(plan), "--out", str(rewritten))
    assert code == 0 and "written to" in out, err
    gd = graph_pb2.GraphDef()
    gd.ParseFromString(rewritten.read_bytes())
    assert gd.node and all(n.device for n in gd.node), [n.name for n in gd.node if not n.device]
    assert {n.device for n in gd.node} <= {f"/job:localhost/replica:0/task:0/device:CPU:{i}"
                                            for i in range(2)}


def test_plan_with_calibration(mlp, tmp_path, capsys) -> None:
    import yaml
    calib = tmp_path / "calib.yaml"
    calib.write_text(yaml.safe_dump({
        "matmul_flops_per_second": 4e10, "conv2d_flops_per_second": 2e10,
        "elementwise_bytes_per_second": 1e10, "elementwise_flops_per_second": 1e9,
        "op_overhead_seconds": 2e-6}))
    assert main(["plan", mlp[1], "--cluster", "local:2", "--calibration", str(calib)]) == 0
    assert "predicted step=" in capsys.readouterr().out
    calib.write_text("matmul_flops_per_second: -1\n")
    out = run_cli("plan", mlp[1], "--cluster", "local:2", "--calibration", str(calib))
    assert_user_error(out, str(calib), "matmul_flops_per_second = -1", "missing")
