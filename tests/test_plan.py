"""The Plan value: proto round trip, byte-identical serialisation, save/load and the summary."""
from __future__ import annotations

import dataclasses

import pytest

from tfplace.cluster import Cluster, Device, Link
from tfplace.errors import PlanError
from tfplace.plan import (Bucket, CutEdge, DeviceUsage, GradientSyncPlan, OpPlacement, Plan,
                          VariablePlacement)
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


def dp_plan() -> Plan:
    base = small_plan()
    return dataclasses.replace(
        base, replicas=((D0,), (D1,)),
        sync=GradientSyncPlan(method="ring", backend="tf", replicas=2, fusion_bytes=4 * MIB,
                              reason=REASON, costs=(("ps", 0.0673), ("ring", 0.0170)),
                              exposed_seconds=0.007),
        buckets=(Bucket(("grad/dense_1/kernel", "grad/dense/bias"), 2 * MIB + 4096),
                 Bucket(("grad/dense/kernel",), 4 * MIB)))


REASON = ("ring: 2(N-1)/N·B/bw + 2(N-1)·lat = 17.0 ms  <  ps: 2·N·B/(S·bw) + 2·lat = 67.3 ms  "
          "[N=2, S=1, B=16.00 MiB, bw=1.00 GB/s, lat=100 us]")


def test_data_parallel_plan_round_trips_byte_for_byte(tmp_path) -> None:
    p = dp_plan()
    assert p.num_replicas == 2 and small_plan().num_replicas == 1
    assert Plan.from_bytes(p.to_bytes()) == p
    assert Plan.from_bytes(p.to_bytes()).to_bytes() == p.to_bytes() == dp_plan().to_bytes()
    assert p.to_bytes() != small_plan().to_bytes()
    for name in ("dp.pbtxt", "dp.pb"):
        save_plan(p, tmp_path / name)
        assert load_plan(tmp_path / name) == p
    # A plan without sync keeps sync None (not an empty GradientSync) through the round trip.
    assert Plan.from_bytes(small_plan().to_bytes()).sync is None
    empty = dataclasses.replace(small_plan(), sync=GradientSyncPlan("", "", 0, 0, ""))
    assert Plan.from_bytes(empty.to_bytes()) == empty


def test_data_parallel_summary() -> None:
    text = dp_plan().summary()
    assert "tfplace plan" in text and "data parallel" not in small_plan().summary()
    lines = text[text.index("data parallel:"):].splitlines()
    assert lines == [
        "data parallel: 2 replicas",
        f"  replica 0: {D0}",
        f"  replica 1: {D1}",
        "sync: ring (backend tf, 2 replicas)  fusion=4.00 MiB  exposed=7.000 ms",
        f"  why: {REASON}",
        "  predicted: ps=67.300 ms  ring=17.000 ms",
        "buckets: 2 (6.00 MiB total, largest 4.00 MiB)",
    ]
