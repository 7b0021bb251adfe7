"""Memory tracking: parameters plus live activations, peaks, and the placement replay."""
from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.memory import MemoryTracker, device_peaks, fmt_bytes


def chain():
    return OpDag.from_records([
        dict(name="a", out_bytes=100, param_bytes=1000),
        dict(name="b", inputs=["a"], out_bytes=50),
        dict(name="c", inputs=["b"], out_bytes=10),
    ])


def test_live_activations_and_peak_on_one_device():
    t = MemoryTracker(chain(), Cluster.local(1, memory=2000, configure=False))
    t.place(0, 0)
    assert (t.params[0], t.live[0]) == (1000, 100)
    t.place(1, 0)
    assert t.live[0] == 50 and t.peak_live[0] == 150          # a freed once b is placed
    t.place(2, 0)
    assert t.live[0] == 0                                      # c has no consumers
    assert t.peak_report() == {Cluster.local(1, configure=False).names[0]: (1000, 1150)}


def test_can_place_counts_params_and_the_group_outputs():
    dag = chain()
    t = MemoryTracker(dag, Cluster.local(1, memory=1149, configure=False))
    assert t.can_place([0], 0)
    assert t.need([0, 1], 0) == (1000, 150)
    assert not t.can_place([0, 1], 0)


def test_device_peaks_replays_a_split_placement():
    c = Cluster.local(2, configure=False)
    d0, d1 = c.names
    peaks = device_peaks(chain(), {"a": d0, "b": d1, "c": d1}, c)
    assert peaks == {d0: (1000, 1100), d1: (0, 60)}


def test_handles_hold_no_activation_memory():
    dag = OpDag.from_records([dict(name="v", out_bytes=999, out_dtypes=[20], param_bytes=8),
                              dict(name="r", inputs=["v"], out_bytes=8)])
    c = Cluster.local(1, configure=False)
    assert device_peaks(dag, {"v": c.names[0], "r": c.names[0]}, c) == {c.names[0]: (8, 16)}


def test_variable_reads_alias_their_variable():
    dag = OpDag.from_records([dict(name="v", out_bytes=0, out_dtypes=[20], param_bytes=64),
                              dict(name="r", op="ReadVariableOp", inputs=["v"], out_bytes=64),
                              dict(name="y", op="Neg", inputs=["r"], out_bytes=64)])
    c = Cluster.local(1, configure=False)
    assert device_peaks(dag, {n.name: c.names[0] for n in dag.nodes}, c) == {
        c.names[0]: (64, 128)}


def test_fmt_bytes():
    assert fmt_bytes(5.2 * 2**30) == "5.2 GiB"
    assert fmt_bytes(3 * 2**20) == "3.0 MiB"
    assert fmt_bytes(12) == "12 B"
