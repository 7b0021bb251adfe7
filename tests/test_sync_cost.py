"""The sync cost model, by hand-computed value: formulas, the auto choice, buckets, fusion size."""
from __future__ import annotations

import dataclasses

import pytest

from tfplace.cluster import Cluster, Device, Task, grpc_cluster, local_device_name
from tfplace.errors import PlanError
from tfplace.plan import Bucket, GradientSyncPlan
from tfplace.replicas import replica_groups
from tfplace.sync_cost import (MAX_FUSION_BYTES, MIN_FUSION_BYTES, SYNC_CHOICES, SYNC_METHODS,
                               LinkProfile, choose_sync, default_fusion_bytes, gradient_sync_plan,
                               hierarchical_seconds, make_buckets, plan_buckets, ps_seconds,
                               ring_seconds)

MIB = 2**20
GB = 1e9           # bytes/s
LAT = 1e-4         # s


def exact(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=0.0)


def flat(n: int, bandwidth: float = GB, latency: float = LAT) -> Cluster:
    """n devices of one process joined by uniform links."""
    return Cluster(devices=tuple(Device(local_device_name(i)) for i in range(n)),
                   default_bandwidth=bandwidth, default_latency=latency)


def one_per_device(c: Cluster) -> tuple[tuple[str, ...], ...]:
    return replica_groups(c, "auto")


# -- formulas -----------------------------------------------------------------------------------
def test_ring_seconds() -> None:
    # 2(n-1)/n·B/bw + 2(n-1)·lat
    assert ring_seconds(1, 10**9, GB, LAT) == 0.0
    assert ring_seconds(2, 10**6, GB, LAT) == exact(1e-3 + 2e-4)           # 1·B/bw + 2·lat
    assert ring_seconds(4, 16 * 10**6, GB, LAT) == exact(0.024 + 6e-4)     # 1.5·B/bw + 6·lat
    assert ring_seconds(4, 0, GB, LAT) == exact(6e-4)


def test_ps_seconds_dedicated_and_colocated() -> None:
    b = 16 * 10**6                                                # B/bw = 16 ms
    # dedicated: 2·max(n, S)·B/(S·bw) + 2·lat
    assert ps_seconds(4, b, GB, LAT, 1) == exact(0.128 + 2e-4)    # 8·B/bw
    assert ps_seconds(4, b, GB, LAT, 2) == exact(0.064 + 2e-4)    # 4·B/bw
    assert ps_seconds(4, b, GB, LAT, 8) == exact(0.032 + 2e-4)    # S > n: the worker's 2·B/bw
    assert ps_seconds(2, b, GB, LAT, 2, colocated=False) == exact(0.032 + 2e-4)
    # colocated (default when S == n): 2(n-1)·B/(S·bw) + 2·lat
    assert ps_seconds(4, b, GB, LAT, 4) == exact(0.024 + 2e-4)    # 1.5·B/bw
    assert ps_seconds(2, b, GB, LAT, 2) == exact(0.016 + 2e-4)    # B/bw, as the 2-node ring
    assert ps_seconds(4, b, GB, LAT, 2, colocated=True) == exact(0.048 + 2e-4)
    assert ps_seconds(1, b, GB, LAT, 1) == 0.0
    with pytest.raises(PlanError, match="5 colocated PS shards need at least as many workers"):
        ps_seconds(4, b, GB, LAT, 5, colocated=True)


def test_hierarchical_seconds() -> None:
    b = 16 * 10**6
    # 2·[(d-1)/d·B/bw_in + (d-1)·lat_in] + 2(W-1)/W·B/bw + 2(W-1)·lat
    within = 0.5 * b / 5e9 + 5e-6                                  # 1.605 ms
    assert hierarchical_seconds(2, 2, b, 5e9, 5e-6, GB, LAT) == exact(2 * within + 0.016 + 2e-4)
    assert hierarchical_seconds(2, 1, b, 5e9, 5e-6, GB, LAT) == exact(ring_seconds(2, b, GB, LAT))
    assert hierarchical_seconds(1, 4, b, 5e9, 5e-6, GB, LAT) == exact(2 * (0.75 * b / 5e9 + 15e-6))


def test_formula_input_errors() -> None:
    with pytest.raises(PlanError, match="n=0 must be an int >= 1"):
        ring_seconds(0, 1, GB, LAT)
    with pytest.raises(PlanError, match="bandwidth must be > 0"):
        ring_seconds(2, 1, 0.0, LAT)
    with pytest.raises(PlanError, match="shards=0 must be an int >= 1"):
        ps_seconds(2, 1, GB, LAT, 0)


# -- the choice ---------------------------------------------------------------------------------
def test_reason_string_and_decision() -> None:
    c = flat(2)
    d = choose_sync(one_per_device(c), c, 16 * MIB, ps_shards=1, backward_seconds=0.01)
    ring, ps = 16 * MIB / GB + 2 * LAT, 4 * 16 * MIB / GB + 2 * LAT   # 16.98 ms, 67.31 ms
    assert d.method == "ring"
    assert d.costs == (("ps", exact(ps)), ("ring", exact(ring)))
    assert d.seconds == exact(ring)
    assert d.exposed_seconds == exact(ring - 0.01)
    assert d.reason == ("ring: 2(N-1)/N·B/bw + 2(N-1)·lat = 17.0 ms  <  "
                        "ps: 2·N·B/(S·bw) + 2·lat = 67.3 ms  "
                        "[N=2, S=1, B=16.00 MiB, bw=1.00 GB/s, lat=100 us]")
    assert choose_sync(one_per_device(c), c, 16 * MIB, backward_seconds=1.0).exposed_seconds == 0


def test_requested_method_is_honoured_with_every_cost() -> None:
    c = flat(2)
    d = choose_sync(one_per_device(c), c, 16 * MIB, ps_shards=1, requested="ps")
    assert d.method == "ps" and [m for m, _ in d.costs] == ["ps", "ring"]
    assert d.reason.startswith("ps (requested); ring: ")
    assert d.exposed_seconds == exact(4 * 16 * MIB / GB + 2 * LAT)


def test_ties_go_to_ring() -> None:
    # N=2 with a colocated shard per replica: ring and ps both cost B/bw + 2·lat.
    c = flat(2)
    d = choose_sync(one_per_device(c), c, 10**6)
    assert d.method == "ring"
    assert d.reason.startswith("ring: 2(N-1)/N·B/bw + 2(N-1)·lat = 1.2 ms  =  "
                               "ps: 2(N-1)·B/(S·bw) + 2·lat = 1.2 ms  [N=2, S=2,")


@pytest.mark.parametrize("n, nbytes, bandwidth, latency, shards, method", [
    # bytes: ring = 1.5·B/bw + 6·lat, ps(S=1) = 8·B/bw + 2·lat; equal at B = 61.5 kB
    (4, 10_000, GB, LAT, 1, "ps"),          # 0.615 ms vs 0.28 ms
    (4, 10**6, GB, LAT, 1, "ring"),         # 2.1 ms vs 8.2 ms
    # bandwidth, B = 100 kB
    (4, 100_000, GB, LAT, 1, "ring"),       # 0.75 ms vs 1.0 ms
    (4, 100_000, 10 * GB, LAT, 1, "ps"),    # 0.615 ms vs 0.28 ms
    # N, B/bw = 0.1 ms, lat = 1 ms
    (2, 100_000, GB, 1e-3, 1, "ring"),      # 2.1 ms vs 2.4 ms
    (4, 100_000, GB, 1e-3, 1, "ps"),        # 6.15 ms vs 2.8 ms
    # colocated shards (the default): N=2 ties (ring), N=4 pays 2 latencies instead of 6
    (2, 10**6, GB, LAT, None, "ring"),      # 1.2 ms vs 1.2 ms
    (4, 10**6, GB, LAT, None, "ps"),        # 2.1 ms vs 1.7 ms
])
def test_auto_flips_between_ring_and_ps(n: int, nbytes: int, bandwidth: float, latency: float,
                                        shards: int | None, method: str) -> None:
    c = flat(n, bandwidth, latency)
    d = choose_sync(one_per_device(c), c, nbytes, ps_shards=shards)
    assert d.method == method
    s = n if shards is None else shards
    costs = dict(d.costs)
    assert costs["ring"] == exact(ring_seconds(n, nbytes, bandwidth, latency))
    assert costs["ps"] == exact(ps_seconds(n, nbytes, bandwidth, latency, s))
    assert "hierarchical" not in costs


def test_hierarchical_across_grpc_workers() -> None:
    # 2 tasks x 2 devices: 5 GB/s, 5 us inside a task; 1 GB/s, 100 us across (grpc_cluster).
    c = grpc_cluster([Task("worker", i, f"localhost:{3000 + i}") for i in range(2)], 2)
    b = 16 * MIB
    d = choose_sync(replica_groups(c, 4), c, b)
    hier = 2 * (0.5 * b / 5e9 + 5e-6) + b / GB + 2 * LAT          # 20.34 ms
    ps = 2 * 3 * b / (4 * GB) + 2 * LAT                           # 25.37 ms
    ring = 1.5 * b / GB + 6 * LAT                                  # 25.77 ms
    assert d.costs == (("hierarchical", exact(hier)), ("ps", exact(ps)), ("ring", exact(ring)))
    assert d.method == "hierarchical"
    assert d.reason == (
        "hierarchical: 2(d-1)/d·B/bw_in + 2(d-1)·lat_in + 2(W-1)/W·B/bw + 2(W-1)·lat = 20.3 ms"
        "  <  ps: 2(N-1)·B/(S·bw) + 2·lat = 25.4 ms"
        "  <  ring: 2(N-1)/N·B/bw + 2(N-1)·lat = 25.8 ms"
        "  [N=4, S=4, B=16.00 MiB, bw=1.00 GB/s, lat=100 us, W=2 d=2 bw_in=5.00 GB/s lat_in=5 us]")
    # One replica per task: nothing to reduce inside a task, so hierarchical is not weighed ...
    assert [m for m, _ in choose_sync(replica_groups(c, 2), c, b).costs] == ["ps", "ring"]
    # ... nor on one task, unless asked for.
    local = flat(4)
    assert [m for m, _ in choose_sync(one_per_device(local), local, b).costs] == ["ps", "ring"]
    asked = choose_sync(one_per_device(local), local, b, requested="hierarchical")
    assert asked.method == "hierarchical"
    assert dict(asked.costs)["hierarchical"] == exact(2 * (0.75 * b / GB + 3 * LAT))


def test_ring_uses_the_slowest_link() -> None:
    c = grpc_cluster([Task("worker", i, f"localhost:{3000 + i}") for i in range(2)], 2)
    d = choose_sync(replica_groups(c, 2), c, 10**6)      # one replica per task: 1 GB/s, 100 us
    assert dict(d.costs)["ring"] == exact(1e-3 + 2e-4)


def test_unknown_method_and_bad_input() -> None:
    assert SYNC_METHODS == ("ring", "ps", "hierarchical")
    assert SYNC_CHOICES == ("ring", "ps", "hierarchical", "auto")
    c = flat(2)
    with pytest.raises(PlanError) as e:
        choose_sync(one_per_device(c), c, 100, requested="allreduce")
    assert str(e.value) == ("unknown sync method 'allreduce'; choose one of "
                            "ring, ps, hierarchical, auto")
    with pytest.raises(PlanError, match="at least one non-empty replica group"):
        choose_sync((), c, 100)
    with pytest.raises(PlanError, match="must be >= 0"):
        choose_sync(one_per_device(c), c, -1)


def test_gradient_sync_plan_records_the_decision() -> None:
    c = flat(2)
    d = choose_sync(one_per_device(c), c, 16 * MIB, ps_shards=1)
    assert gradient_sync_plan(d, replicas=2, fusion_bytes=4 * MIB) == GradientSyncPlan(
        method="ring", backend="tf", replicas=2, fusion_bytes=4 * MIB, reason=d.reason,
        costs=d.costs, exposed_seconds=d.exposed_seconds)


# -- buckets and fusion size --------------------------------------------------------------------
def test_plan_buckets() -> None:
    assert plan_buckets([], 8) == ()
    assert plan_buckets([4, 4, 4], 8) == ((0, 1), (2,))
    assert plan_buckets([4, 4, 4], 12) == ((0, 1, 2),)
    assert plan_buckets([3, 10, 2, 2, 2], 6) == ((0,), (1,), (2, 3, 4))   # 10 > 6 alone
    assert plan_buckets([5, 2, 9, 1], 8) == ((0, 1), (2,), (3,))
    assert plan_buckets([1, 1, 1, 1], 1) == ((0,), (1,), (2,), (3,))
    with pytest.raises(PlanError, match="fusion_bytes=0 must be an int >= 1"):
        plan_buckets([1], 0)
    with pytest.raises(PlanError, match=r"negative at indices \[1\]"):
        plan_buckets([1, -2], 4)


def test_make_buckets_names_gradients() -> None:
    assert make_buckets(["g2", "g1", "g0"], [4, 4, 4], 8) == (Bucket(("g2", "g1"), 8),
                                                             Bucket(("g0",), 4))
    with pytest.raises(PlanError, match="2 gradient names but 3 sizes"):
        make_buckets(["a", "b"], [1, 2, 3], 8)


def test_default_fusion_bytes() -> None:
    # F = clamp(ceil(10·n·lat·bw), 1 MiB, 64 MiB), <= total_bytes, >= 1
    assert default_fusion_bytes(4, GB, LAT, 10**9) == 4_000_000
    assert default_fusion_bytes(2, 1e8, 1e-2, 10**9) == 20_000_000
    assert default_fusion_bytes(4, 5e9, 5e-6, 10**9) == MIN_FUSION_BYTES == 2**20   # 1 MB
    assert default_fusion_bytes(8, GB, 1e-3, 10**9) == MAX_FUSION_BYTES == 64 * 2**20  # 80 MB
    assert default_fusion_bytes(4, GB, LAT, 500_000) == 500_000
    assert default_fusion_bytes(4, GB, LAT, 0) == 1


def test_ps_costed_on_the_busiest_real_shard():
    """The rewrite puts one aggregation target per bucket, so shards are rarely balanced:
    with 4 MB in one 2 MB bucket and two 1 MB buckets over 4 replicas the busiest shard gets
    2 MB, and ps then loses to ring although balanced shards would win."""
    from tfplace.cluster import Task, grpc_cluster
    from tfplace.sync_cost import choose_sync
    cluster = grpc_cluster([Task("worker", i, f"h{i}:1") for i in range(4)], 1)
    groups = [(d,) for d in cluster.names]
    balanced = choose_sync(groups, cluster, 4_000_000)
    real = choose_sync(groups, cluster, 4_000_000, ps_busiest_bytes=2_000_000)
    assert balanced.method == "ps"
    assert dict(balanced.costs)["ps"] == pytest.approx(2 * 3 * 1e6 / 1e9 + 2e-4)
    assert real.method == "ring"
    assert dict(real.costs)["ps"] == pytest.approx(2 * 3 * 2e6 / 1e9 + 2e-4)
    assert dict(real.costs)["ring"] == pytest.approx(2 * 3 / 4 * 4e6 / 1e9 + 6e-4)
    assert "L=" in real.reason and "busiest shard" in real.reason


# -- the measured link profile: messages, contended bandwidths ----------------------------------
def test_ring_and_ps_message_terms() -> None:
    b, o = 16 * 10**6, 1e-4                                       # B/bw = 16 ms
    # ring: max(2(n-1)/n·B/bw, 2(n-1)/n·B/bw_host + 2n(n-1)·k·o) + 2(n-1)·lat
    # 4 nodes, 3 buckets -> 72 messages (7.2 ms) hide behind the 24 ms on the wire ...
    assert ring_seconds(4, b, GB, LAT, buckets=3, message_seconds=o) == exact(0.024 + 6e-4)
    # ... as long as the hosts' copies (24 MB at 2 GB/s = 12 ms) and messages fit in it
    assert ring_seconds(4, b, GB, LAT, buckets=3, message_seconds=o,
                        host_bandwidth=2 * GB) == exact(0.024 + 6e-4)
    # on loopback (the hosts are the link) they add up
    assert ring_seconds(4, b, GB, LAT, buckets=3, message_seconds=o,
                        host_bandwidth=GB) == exact(0.024 + 72 * o + 6e-4)
    assert ring_seconds(2, b, GB, LAT, buckets=1, message_seconds=o,
                        host_bandwidth=GB) == exact(0.016 + 4 * o + 2e-4)
    assert ring_seconds(1, b, GB, LAT, buckets=3, message_seconds=o) == 0.0
    # messages alone longer than the wire bound the step
    assert ring_seconds(4, 10**5, GB, LAT, buckets=3, message_seconds=o) == exact(72 * o + 6e-4)
    # colocated ps: 2(n-1)·k·o messages (n-1 pushes and n-1 pulls per bucket): 18
    assert ps_seconds(4, b, GB, LAT, 4, buckets=3, message_seconds=o,
                      host_bandwidth=GB) == exact(0.024 + 18 * o + 2e-4)
    # dedicated ps: n pushes and n pulls per bucket: 2n·k·o = 24
    assert ps_seconds(4, b, GB, LAT, 1, buckets=3, message_seconds=o,
                      host_bandwidth=GB) == exact(0.128 + 24 * o + 2e-4)
    assert ps_seconds(4, 10**5, GB, LAT, 4, buckets=3, message_seconds=o) == exact(
        18 * o + 2e-4)
    # o = 0 and no host figures (the defaults) is the plain alpha-beta model
    assert ring_seconds(4, b, GB, LAT, buckets=7) == exact(ring_seconds(4, b, GB, LAT))
    with pytest.raises(PlanError, match="buckets=0 must be an int >= 1"):
        ring_seconds(4, b, GB, LAT, buckets=0)


def test_link_profile_lookup_and_validation() -> None:
    p = LinkProfile(message_seconds=2e-4, ring_bandwidth=((2, 8e8), (3, 4e8)),
                    alltoall_bandwidth=((3, 3e8),))
    assert p.ring_bw(3, GB) == 4e8 and p.ring_bw(4, GB) == GB       # uncovered N: the link's
    assert p.alltoall_bw(3, GB) == 3e8 and p.alltoall_bw(2, GB) == GB
    with pytest.raises(PlanError, match=r"must be positive \(message_seconds=-1.0, 3: 0.0\)"):
        LinkProfile(message_seconds=-1.0, ring_bandwidth=((3, 0.0),))


def test_profile_turns_ps_on_for_small_messages_on_shared_cores() -> None:
    """3 replicas sharing a host's cores (loopback: the host figures are the link's, so copies
    and messages add to the wire time), 256 KiB in one bucket on one ps shard: the plain
    model picks ring (the shard's link carries 2(N-1)·B), the measured profile picks ps: 12 ring
    messages vs 4, 3 ring flows share the cores (400 MB/s each) while the fan-in of 2 gets 1 GB/s
    and the fan-out 1.6 GB/s."""
    c = flat(3, 1e9, 2.5e-4)
    groups = one_per_device(c)
    b = 256 * 1024
    plain = choose_sync(groups, c, b, ps_busiest_bytes=b, buckets=1)
    assert plain.method == "ring"
    loopback = LinkProfile(ring_bandwidth=((3, 4e8),), fanin_bandwidth=((2, 1e9),),
                           fanout_bandwidth=((2, 1.6e9),))
    p = dataclasses.replace(loopback, message_seconds=2e-4, host=loopback)
    d = choose_sync(groups, c, b, ps_busiest_bytes=b, buckets=1, profile=p)
    ring = 4 / 3 * b / 4e8 + 4 * 2.5e-4 + 12 * 2e-4                # 4.27 ms
    ps = 2 * b / 1e9 + 2 * b / 1.6e9 + 2 * 2.5e-4 + 4 * 2e-4        # 2.15 ms
    assert d.costs == (("ps", exact(ps)), ("ring", exact(ring)))
    assert d.method == "ps"
    assert d.reason == ("ps: max((N-1)·L·(1/bw_in + 1/bw_out), host copies + 2(N-1)·k·o) "
                        "+ 2·lat = 2.2 ms  <  "
                        "ring: max(2(N-1)/N·B/bw, host copies + 2N(N-1)·k·o) + 2(N-1)·lat "
                        "= 4.3 ms  [N=3, S=3, B=256.00 KiB, bw=400.0 MB/s, lat=250 us, "
                        "ps bw=1.00 GB/s bw_in=1.00 GB/s bw_out=1.60 GB/s lat=250 us, "
                        "k=1 o=200 us, host ring=400.0 MB/s in=1.00 GB/s out=1.60 GB/s, "
                        "L=256.00 KiB (busiest shard)]")


def test_profile_alltoall_bandwidth_charges_ps_contention() -> None:
    """4 replicas, 16 MiB in 16 balanced buckets: equal bytes per link, so the plain model
    prefers ps (2 latencies, not 6); measured all-to-all at 85% of the ring's per-flow
    bandwidth makes ring the cheaper."""
    c = flat(4, 1.2e7, 2.5e-4)
    groups = one_per_device(c)
    b = 16 * MIB
    assert choose_sync(groups, c, b, ps_busiest_bytes=b // 4, buckets=16).method == "ps"
    p = LinkProfile(message_seconds=1.8e-4, ring_bandwidth=((4, 1.1e7),),
                    alltoall_bandwidth=((4, 0.85 * 1.1e7),))
    d = choose_sync(groups, c, b, ps_busiest_bytes=b // 4, buckets=16, profile=p)
    # the 384 ring messages (69 ms) and 96 ps messages hide behind seconds on the wire
    ring = 1.5 * b / 1.1e7 + 6 * 2.5e-4
    ps = 6 * (b / 4) / (0.85 * 1.1e7) + 2 * 2.5e-4
    assert dict(d.costs) == {"ring": exact(ring), "ps": exact(ps)}
    assert d.method == "ring"


def test_default_bucket_count_follows_the_fusion_size() -> None:
    # k = ceil(B / default_fusion_bytes(N, bw, lat, B)); F = 10·4·1e-4·1e9 = 4 MB -> 5 buckets
    c = flat(4)
    p = LinkProfile(message_seconds=1e-4)
    d = choose_sync(one_per_device(c), c, 18 * 10**6, profile=p)
    assert dict(d.costs)["ring"] == exact(ring_seconds(4, 18 * 10**6, GB, LAT, buckets=5,
                                                       message_seconds=1e-4))
    assert "k=5 o=100 us" in d.reason


def test_uneven_ps_shards_bounded_by_the_busiest_or_the_total() -> None:
    """3 replicas, 16 MiB in buckets of 7.75/7.75/0.5 MiB on 3 shards. Busiest shard L = 7.75 MiB
    pushed in from 2 peers at 1 GB/s and pulled out at 1.2 GB/s; all the traffic, 2(N-1)·B =
    64 MiB, over the 3 nodes' all-to-all speed of 400 MB/s each. The slower bounds the step."""
    c = flat(3, 1e9, 2.5e-4)
    b, big = 16 * MIB, 31 * MIB // 4
    p = LinkProfile(ring_bandwidth=((3, 4.5e8),), alltoall_bandwidth=((3, 4e8),),
                    fanin_bandwidth=((2, 1e9),), fanout_bandwidth=((2, 1.2e9),))
    d = choose_sync(one_per_device(c), c, b, ps_busiest_bytes=big, buckets=3, profile=p)
    own = 2 * big * (1 / 1e9 + 1 / 1.2e9)                   # 29.8 ms
    total = 2 * 2 * b / (3 * 4e8)                           # 55.9 ms
    assert dict(d.costs)["ps"] == exact(max(own, total) + 2 * 2.5e-4)
    assert dict(d.costs)["ring"] == exact(4 / 3 * b / 4.5e8 + 4 * 2.5e-4)
    assert d.method == "ring"
    # the same layout with one fast shard ingress but slow all-to-all: still the total
    slow = dataclasses.replace(p, alltoall_bandwidth=((3, 2e8),))
    d2 = choose_sync(one_per_device(c), c, b, ps_busiest_bytes=big, buckets=3, profile=slow)
    assert dict(d2.costs)["ps"] == exact(2 * 2 * b / (3 * 2e8) + 2 * 2.5e-4)
    assert "max(2(N-1)·B/(N·bw), (N-1)·L·(1/bw_in + 1/bw_out)) + 2·lat" in d.reason


def test_the_cluster_link_profile_is_used_when_none_is_passed() -> None:
    loopback = LinkProfile(ring_bandwidth=((3, 4e8),), fanin_bandwidth=((2, 1e9),),
                           fanout_bandwidth=((2, 1.6e9),))
    p = dataclasses.replace(loopback, message_seconds=2e-4, host=loopback)
    c = flat(3, 1e9, 2.5e-4)
    b = 256 * 1024
    given = choose_sync(one_per_device(c), c, b, ps_busiest_bytes=b, buckets=1, profile=p)
    carried = dataclasses.replace(c, link_profile=p)
    d = choose_sync(one_per_device(carried), carried, b, ps_busiest_bytes=b, buckets=1)
    assert d == given and d.method == "ps"
    # an explicit profile wins over the cluster's
    plain = choose_sync(one_per_device(carried), carried, b, ps_busiest_bytes=b, buckets=1,
                        profile=LinkProfile())
    assert plain.method == "ring"
