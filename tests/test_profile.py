"""profile: calibrate() measures this machine; figures -> Calibration; YAML round trip; CLI."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tfplace.cluster import DEFAULT_FLOPS
from tfplace.costs import Calibration
from tfplace.errors import PlanError
from tfplace.profile import FIGURES, MATMUL_SIZES, calibrate, load_calibration, to_calibration

ROOT = Path(__file__).resolve().parents[1]
FIGS = {"matmul_flops_per_second": 4e10, "conv2d_flops_per_second": 2e10,
        "elementwise_bytes_per_second": 1e10, "elementwise_flops_per_second": 1e9,
        "op_overhead_seconds": 2e-6}


@pytest.fixture(scope="module")
def measured() -> tuple[dict, float]:
    t0 = time.perf_counter()
    figures = calibrate(repeats=2)
    return figures, time.perf_counter() - t0


def test_calibrate_is_fast_and_sane(measured) -> None:
    figures, seconds = measured
    assert seconds < 20, seconds
    for key in FIGURES:
        assert isinstance(figures[key], float) and math.isfinite(figures[key]), key
        assert figures[key] > 0, key
    assert set(figures["matmul_flops_per_second_by_size"]) == set(MATMUL_SIZES)
    for rate in [figures["matmul_flops_per_second"],
                 *figures["matmul_flops_per_second_by_size"].values()]:
        assert 1e8 <= rate <= 1e13, rate
    assert 1e8 <= figures["conv2d_flops_per_second"] <= 1e13
    assert 1e7 <= figures["elementwise_bytes_per_second"] <= 1e13
    assert 1e-9 <= figures["op_overhead_seconds"] < 1e-2
    assert figures["device"].endswith("/device:CPU:0") and figures["repeats"] == 2


def test_yaml_round_trip(measured, tmp_path) -> None:
    figures, _ = measured
    path = tmp_path / "calib.yaml"
    path.write_text(yaml.safe_dump(figures, sort_keys=True))
    calib = load_calibration(path)
    assert calib == to_calibration(figures, DEFAULT_FLOPS)
    assert calib.overhead_seconds == figures["op_overhead_seconds"]
    matmul = figures["matmul_flops_per_second"]
    assert calib.scale("matmul") == pytest.approx(matmul / DEFAULT_FLOPS)
    assert load_calibration(path, device_flops=1e12).scale("conv") == pytest.approx(
        figures["conv2d_flops_per_second"] / 1e12)


def test_to_calibration_scales_by_family() -> None:
    calib = to_calibration(FIGS, 2e10)
    assert isinstance(calib, Calibration)
    assert (calib.scale("matmul"), calib.scale("conv"), calib.scale("elementwise")) == (2.0, 1.0,
                                                                                      0.05)
    for memory_bound in ("reduction", "norm", "pool", "optimizer"):
        assert calib.scale(memory_bound) == 0.05
    assert calib.scale("other") == 1.0 and calib.overhead_seconds == 2e-6


def test_bad_calibration_files(tmp_path) -> None:
    with pytest.raises(PlanError, match="does not exist"):
        load_calibration(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**FIGS, "matmul_flops_per_second": -1.0,
                                   "op_overhead_seconds": "fast"}))
    del_one = {k: v for k, v in FIGS.items() if k != "conv2d_flops_per_second"}
    with pytest.raises(PlanError) as e:
        load_calibration(bad)
    assert "2 problems" in str(e.value) and "matmul_flops_per_second = -1.0" in str(e.value)
    assert "op_overhead_seconds = 'fast'" in str(e.value) and str(bad) in str(e.value)
    bad.write_text(yaml.safe_dump(del_one))
    with pytest.raises(PlanError, match="missing conv2d_flops_per_second"):
        load_calibration(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(PlanError, match="mapping"):
        load_calibration(bad)
    with pytest.raises(PlanError, match="device_flops"):
        to_calibration(FIGS, 0.0)
    with pytest.raises(PlanError, match="not a device"):
        calibrate("GPU:7", repeats=1)


def test_cli_profile_writes_yaml(tmp_path) -> None:
    out = tmp_path / "x.yaml"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "tfplace.cli", "profile", "--out", str(out),
                           "--repeats", "2"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "matmul_flops_per_second:" in proc.stdout and "op_overhead_seconds:" in proc.stdout
    assert yaml.safe_load(proc.stdout) == yaml.safe_load(out.read_text())
    assert load_calibration(out).scale("matmul") > 0
