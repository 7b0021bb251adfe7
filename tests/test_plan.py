"""The Plan value: proto round trip, byte-identical serialisation, save/load and the summary."""
from __future__ import annotations

import pytest

from tfplace.cluster import Cluster, Device, Link
from tfplace.errors import PlanError
from tfplace.plan import CutEdge, DeviceUsage, OpPlacement, Plan, VariablePlacement
from tfplace.planio import load_plan, save_plan, summary_table

D0 = "/job:localhost/replica:0/task:0/device:CPU:0"
D1 = "/job:localhost/replica:0/task:0/device:CPU:1"
MIB = 2**20


def small_plan() -> Plan:
    cluster = Cluster(devices=(Device(D0, "CPU", 64 * MIB, 2e10), Device(D1, "CPU", 32 * MIB, 1e10)),
                      links=(Link(D0, D1, 5e9, 5e-6),))
    return Plan(
        cluster=cluster, placer="m_etf",
        ops=(OpPlacement("x", D0), OpPlacement("dense/MatMul", D0), OpPlacement("dense_1/MatMul", D1),
             OpPlacement("loss", D1)),
        variables=(VariablePlacement("kernel_in", "dense/kernel", D0, 4 * MIB, (1024, 1024), "float32"),
                   VariablePlacement("kernel_1_in", "dense_1/kernel", D1, 2 * MIB, (1024, 512),
                                     "float32"),
                   VariablePlacement("bias_in", "dense/bias", D0, 4096, (1024,), "float32")),
        cut_edges=tuple(CutEdge(f"t{i}:0", D0, D1, (i + 1) * 1000) for i in range(7)),
        usage=(DeviceUsage(D0, 2, 2.5e9, 4 * MIB + 4096, 10 * MIB, 64 * MIB, 0.004),
               DeviceUsage(D1, 2, 1.0e9, 2 * MIB, 8 * MIB, 32 * MIB, 0.002)),
        predicted_step_seconds=0.0061, graph_fingerprint="abc123")


def test_proto_round_trip() -> None:
    p = small_plan()
    assert Plan.from_proto(p.to_proto()) == p
    assert Plan.from_bytes(p.to_bytes()) == p


def test_bytes_are_deterministic() -> None:
    p = small_plan()
    data = p.to_bytes()
    assert data == p.to_bytes() == small_plan().to_bytes()
    assert Plan.from_bytes(data).to_bytes() == data


@pytest.mark.parametrize("name", ["plan.pbtxt", "plan.pb", "plan.bin"])
def test_save_load(tmp_path, name: str) -> None:
    p, path = small_plan(), tmp_path / name
    save_plan(p, path)
    first = path.read_bytes()
    assert load_plan(path) == p and load_plan(path).to_bytes() == p.to_bytes()
    p.save(str(path))
    assert path.read_bytes() == first
    assert (b"placer: \"m_etf\"" in first) == name.endswith(".pbtxt")


def test_load_errors_name_the_path(tmp_path) -> None:
    with pytest.raises(PlanError, match="missing.pbtxt.*does not exist"):
        load_plan(tmp_path / "missing.pbtxt")
    bad = tmp_path / "bad.pbtxt"
    bad.write_text("this is not { a plan")
    with pytest.raises(PlanError, match="bad.pbtxt.*not a valid text"):
        load_plan(bad)
    trunc = tmp_path / "trunc.pb"
    trunc.write_bytes(small_plan().to_bytes()[:50])
    with pytest.raises(PlanError, match="trunc.pb"):
        load_plan(trunc)
    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    with pytest.raises(PlanError, match="empty.pb.*plan format"):
        load_plan(empty)


def test_summary_table() -> None:
    text = small_plan().summary()
    assert text == summary_table(small_plan())               # deterministic
    lines = text.splitlines()
    assert "placer=m_etf" in lines[0] and "devices=2" in lines[0] and "6.100 ms" in lines[0]
    row0 = next(line for line in lines if line.startswith(D0))
    assert row0.split()[1:] == ["2", "2.500", "4.00", "10.00", "64.00", "15.6", "4.000"]
    assert any(line.startswith(D1) for line in lines)
    assert "cut edges: 7 (27.34 KiB per step); top 5 by bytes:" in text
    cut_lines = [line for line in lines if " -> " in line]
    assert [c.split()[0] for c in cut_lines] == ["t6:0", "t5:0", "t4:0", "t3:0", "t2:0"]
    var_lines = lines[lines.index("variables: 3") + 1:]
    assert var_lines[0].split()[:3] == [D0, "2", "vars"] and var_lines[1].split()[:2] == [D1, "1"]
