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
    out = run_cli("plan", "some.pb", "--cluster", str(tmp_path / "nope.yaml"))
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
    out = run_cli("rewrite", "some.pb", "--plan", str(tmp_path / "p.pbtxt"), "--out", "x.pb")
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
