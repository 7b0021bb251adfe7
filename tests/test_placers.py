"""Placers: the registry, exact placements on small graphs, colocation and memory respected."""
import random

import pytest

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster, Device
from tfplace.colocation import colocation_groups
from tfplace.costs import Calibration
from tfplace.errors import PlanError
from tfplace.memory import device_peaks
from tfplace.placers import PLACER_NAMES, PLACERS, get_placer

CAL = Calibration(overhead_seconds=0.0)


def run(name, dag, cluster):
    return get_placer(name)(dag, cluster, calibration=CAL)


def test_registry_lists_valid_names():
    assert PLACER_NAMES == ("m_etf", "m_topo", "round_robin", "single")
    assert set(PLACERS) == set(PLACER_NAMES)
    with pytest.raises(PlanError) as e:
        get_placer("foo")
    assert str(e.value) == ("unknown placer 'foo' (valid: m_etf, m_topo, round_robin, single); "
                            "pass one of them with --placer/placer=")


def chain(n, out_bytes=100):
    return OpDag.from_records([dict(name=f"n{i}", inputs=[f"n{i-1}"] if i else [],
                                    out_bytes=out_bytes, flops=1e6) for i in range(n)])


def test_single_and_round_robin():
    c = Cluster.local(3, configure=False)
    dag = chain(5)
    assert set(run("single", dag, c).values()) == {c.names[0]}
    rr = run("round_robin", dag, c)
    assert [rr[f"n{i}"] for i in range(5)] == [c.names[i % 3] for i in range(5)]


def test_m_topo_fills_each_device_to_its_share():
    c = Cluster.local(4, configure=False)
    p = run("m_topo", chain(8), c)                 # need 800 B, share 200 B = two nodes
    assert [c.names.index(p[f"n{i}"]) for i in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]


def two_branch():
    return OpDag.from_records([
        dict(name="src", out_bytes=10**6),
        dict(name="a", op="MatMul", inputs=["src"], out_bytes=10**6, flops=1e9),
        dict(name="b", op="MatMul", inputs=["src"], out_bytes=10**6, flops=1e9),
        dict(name="sink", op="AddV2", inputs=["a", "b"], out_bytes=4),
    ])


def two_devices(bandwidth):
    devs = tuple(Device(f"/job:localhost/replica:0/task:0/device:CPU:{i}", flops=1e9)
                 for i in range(2))
    return Cluster(devices=devs, default_bandwidth=bandwidth, default_latency=5e-6)


def test_m_etf_splits_branches_over_a_fast_link():
    c = two_devices(5e9)
    p = run("m_etf", two_branch(), c)
    d0, d1 = c.names
    assert p == {"src": d0, "a": d0, "b": d1, "sink": d1}


def test_m_etf_keeps_branches_together_over_a_slow_link():
    c = two_devices(1e5)                            # 1 MB takes 10 s, the branches take 1 s
    p = run("m_etf", two_branch(), c)
    assert set(p.values()) == {c.names[0]}


def test_m_etf_general_link_matrix_matches_uniform_path():
    from tfplace.cluster import Link
    c = two_devices(5e9)
    slow_pair = Cluster(devices=c.devices + (Device("/job:localhost/replica:0/task:0/device:CPU:2",
                                                    flops=1e9),),
                        links=(Link(c.names[0], "/job:localhost/replica:0/task:0/device:CPU:2",
                                    1e3, 1.0),),
                        default_bandwidth=5e9, default_latency=5e-6)
    p = run("m_etf", two_branch(), slow_pair)
    d0, d1 = c.names
    assert p == {"src": d0, "a": d0, "b": d1, "sink": d1}


def variable_graph(n_layers=12, seed=3):
    """Layers each reading and updating their own variable, plus a shared learning rate."""
    rng = random.Random(seed)
    recs = [dict(name="x", out_bytes=4000),
            dict(name="lr_var", op="VarHandleOp", out_bytes=0, out_dtypes=[20], param_bytes=4),
            dict(name="lr", op="ReadVariableOp", inputs=["lr_var"], out_bytes=4)]
    prev = "x"
    for i in range(n_layers):
        recs += [dict(name=f"w{i}", op="Placeholder", out_bytes=0, out_dtypes=[20],
                      param_bytes=rng.choice([1000, 4000, 16000])),
                 dict(name=f"r{i}", op="ReadVariableOp", inputs=[f"w{i}"], out_bytes=1000),
                 dict(name=f"h{i}", op="MatMul", inputs=[prev, f"r{i}"], out_bytes=4000,
                      flops=rng.uniform(1e6, 1e8)),
                 dict(name=f"u{i}", op="ResourceApplyGradientDescent",
                      inputs=[f"w{i}", "lr", f"h{i}"], out_bytes=[], flops=1e4)]
        prev = f"h{i}"
    return OpDag.from_records(recs)


@pytest.mark.parametrize("name", PLACER_NAMES)
def test_every_placer_keeps_groups_together_and_fits_memory(name):
    dag = variable_graph()
    need = dag.total_param_bytes + sum(sum(n.out_bytes) for n in dag.nodes)
    c = Cluster.local(4, memory=need if name == "single" else need // 2, configure=False)
    p = run(name, dag, c)
    assert set(p) == {n.name for n in dag.nodes}
    for g in colocation_groups(dag):
        assert len({p[dag.nodes[i].name] for i in g}) == 1
    for dev in c.devices:
        assert device_peaks(dag, p, c)[dev.name][1] <= dev.memory
    assert run(name, dag, c) == p                                      # deterministic


@pytest.mark.parametrize("name", PLACER_NAMES)
def test_too_big_a_model_lists_every_device(name):
    dag = OpDag.from_records([dict(name="v", out_bytes=0, out_dtypes=[20],
                                   param_bytes=4 * 2**30),
                              dict(name="r", inputs=["v"], out_bytes=int(1.2 * 2**30))])
    c = Cluster.local(3, memory=4 * 2**30, configure=False)
    with pytest.raises(PlanError) as e:
        run(name, dag, c)
    msg = str(e.value)
    for dev in c.names:
        assert (f"{dev}: needs 5.2 GiB (params 4.0 GiB + activations 1.2 GiB) > capacity "
                "4.0 GiB") in msg
    assert "colocation group of 2 ops starting at 'v'" in msg
    assert "add devices" in msg and "`memory` in the cluster YAML" in msg
    assert "smaller batch" in msg


def test_m_etf_scales_linearly_enough_for_a_quick_check():
    rng = random.Random(0)
    recs, prev = [], []
    for layer in range(100):
        cur = [f"l{layer}_{k}" for k in range(20)]
        for name in cur:
            recs.append(dict(name=name, inputs=rng.sample(prev, 2) if prev else [],
                             out_bytes=4096, flops=1e6))
        prev = cur
    dag = OpDag.from_records(recs)
    p = run("m_etf", dag, Cluster.local(4, configure=False))
    assert len(p) == 2000 and len(set(p.values())) > 1


@pytest.mark.parametrize("name", PLACER_NAMES)
def test_early_variable_reads_do_not_exhaust_memory(name):
    # Every variable is a source, ready at once; params are reserved when the group binds and
    # each member's outputs count when it is placed; reads alias their variable (0 bytes), so
    # m_etf running every read at t=0 costs no activation memory.
    recs = [dict(name="x", out_bytes=1000)]
    for i in range(10):
        recs += [dict(name=f"w{i}", out_bytes=0, out_dtypes=[20], param_bytes=100),
                 dict(name=f"r{i}", op="ReadVariableOp", inputs=[f"w{i}"], out_bytes=1000),
                 dict(name=f"h{i}", op="MatMul", inputs=[f"h{i-1}" if i else "x", f"r{i}"],
                      out_bytes=1000, flops=1e6)]
    dag = OpDag.from_records(recs)
    c = Cluster.local(1, memory=10 * 100 + 4000, configure=False)
    p = run(name, dag, c)
    assert device_peaks(dag, p, c)[c.names[0]][1] <= 10 * 100 + 4000
