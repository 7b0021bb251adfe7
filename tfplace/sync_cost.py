"""The gradient-sync cost model behind `sync="auto"`: ring vs parameter server vs hierarchical.

Alpha-beta model (Hockney; Thakur, Rabenseifner & Gropp 2005, "Optimization of Collective
Communication Operations in MPICH"): sending m bytes over a link costs lat + m/bw, links are
full duplex and a node may talk to several peers at once, sharing its link's bandwidth.
N = replicas, B = gradient bytes per replica, bw/lat = the slowest link between replicas.

    ring          reduce-scatter + all-gather, 2(N-1) steps of B/N bytes
    ps            push B/S to each of S shards, pull the fresh B/S back
    hierarchical  within each worker: reduce | ring across the W workers | within: broadcast

Beyond one link's alpha-beta figures, a measured `LinkProfile` (optional; all terms vanish
without one) charges what alpha-beta misses when replicas share hosts or a switch:

    o        host seconds per message (gRPC RecvTensor) when many are in flight; a ring of N
             sends 2N(N-1) messages per bucket, a ps 2(N-1) (N-1 pushes + N-1 pulls)
    bw_ring  bytes/s per flow while all N ring flows run at once (shared cores copy the bytes)
    bw_a2a   bytes/s into each node while every node sends to every other at once (the ps
             traffic: N-1 flows into each aggregator, incast and shared cores included)
    bw_in, bw_out  aggregate bytes/s into / out of one node from / to N-1 peers at once (ps
             with a single aggregator: the push is a fan-in, the pull a fan-out)

Pure functions of numbers; the cluster supplies bandwidth and latency, the profile the rest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Sequence

from tfplace.cluster import Cluster, task_prefix
from tfplace.errors import PlanError
from tfplace.link_profile import LinkProfile

if TYPE_CHECKING:
    from tfplace.plan import Bucket, GradientSyncPlan

__all__ = ["SYNC_METHODS", "SYNC_CHOICES", "ring_seconds", "ps_seconds", "hierarchical_seconds",
           "LinkProfile", "SyncDecision", "choose_sync", "plan_buckets", "make_buckets", "default_fusion_bytes",
           "gradient_sync_plan", "MIN_FUSION_BYTES", "MAX_FUSION_BYTES"]

SYNC_METHODS = ("ring", "ps", "hierarchical")     # in order of preference when costs tie
SYNC_CHOICES = SYNC_METHODS + ("auto",)
MIN_FUSION_BYTES = 2**20
MAX_FUSION_BYTES = 64 * 2**20
TRANSFER_PER_LATENCY = 10           # a bucket's transfer time is at least 10x its latency

_FORMULAS = {"ring": "2(N-1)/N·B/bw + 2(N-1)·lat",
             "ps": "2·N·B/(S·bw) + 2·lat",
             "ps_colocated": "2(N-1)·B/(S·bw) + 2·lat",
             "hierarchical": "2(d-1)/d·B/bw_in + 2(d-1)·lat_in + 2(W-1)/W·B/bw + 2(W-1)·lat"}


def _check(n: int, nbytes: float, bandwidth: float, latency: float, what: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PlanError(f"{what}={n!r} must be an int >= 1")
    if nbytes < 0:
        raise PlanError(f"gradient bytes must be >= 0 (got {nbytes})")
    if not bandwidth > 0:
        raise PlanError(f"link bandwidth must be > 0 bytes/s (got {bandwidth}); "
                        "fix the cluster's links or default_bandwidth")
    if latency < 0:
        raise PlanError(f"link latency must be >= 0 s (got {latency})")


def _overlapped(wire: float, host: float, messages: float) -> float:
    """A transfer pattern's seconds without latency: the link and the hosts work at once, so the
    slower of the wire time and the host time (bytes copied + per-message work) bounds it."""
    return max(wire, host + messages)


def ring_seconds(n: int, nbytes: float, bandwidth: float, latency: float, *,
                 buckets: int = 1, message_seconds: float = 0.0,
                 host_bandwidth: float | None = None) -> float:
    """Ring all-reduce of `nbytes` over `n` nodes, in `buckets` fusion buckets:

        max(2(n-1)/n · B/bw,  2(n-1)/n · B/bw_host + 2n(n-1)·k·o) + 2(n-1)·lat   (0 when n == 1)

    n-1 reduce-scatter steps then n-1 all-gather steps, each moving B/n bytes per link; the
    k buckets run concurrently, so the 2(n-1) sequential latencies are paid once. Every step of
    every bucket sends n chunk messages (one per node): 2n(n-1)·k messages of o host seconds
    each. The hosts' work (copying the bytes at bw_host, the messages) overlaps the wire: on a
    slow link it hides behind the transfer, on loopback (bw = bw_host) it adds to it. Without
    bw_host the copies are free; with o = 0 too this is the plain alpha-beta model.
    """
    _check(n, nbytes, bandwidth, latency)
    _check(buckets, nbytes, bandwidth, message_seconds, "buckets")
    if n == 1:
        return 0.0
    moved = 2 * (n - 1) / n * nbytes
    host = moved / host_bandwidth if host_bandwidth else 0.0
    return (_overlapped(moved / bandwidth, host, 2 * n * (n - 1) * buckets * message_seconds)
            + 2 * (n - 1) * latency)


def ps_seconds(n: int, nbytes: float, bandwidth: float, latency: float, shards: int, *,
               colocated: bool | None = None, buckets: int = 1,
               message_seconds: float = 0.0, host_bandwidth: float | None = None) -> float:
    """Parameter-server sync of `nbytes` from `n` workers over `shards` shards balanced by bytes.

    Every worker pushes B/S to each shard and pulls the fresh B/S back; the bottleneck is the
    busiest link, in each direction:

        dedicated shards:            2·max(n, S)·B/(S·bw) + 2·lat   (= 2·n·B/(S·bw) + 2·lat, S <= n)
        colocated (a shard on each
        of S <= n workers):          2(n-1)·B/(S·bw) + 2·lat        (0 when n == 1)

    A dedicated shard receives n·B/S and sends n·B/S (with S > n, each worker's own B is the
    busier link). A colocated shard's own worker does not cross the network, hence n-1.
    `colocated` defaults to `shards == n` (one shard on every worker). Each of the k buckets
    brings its messages, n-1 pushes and n-1 pulls (n of each when dedicated), 2(n-1)·k·o, which
    with the bytes at bw_host overlap the wire as in `ring_seconds`.
    """
    _check(n, nbytes, bandwidth, latency)
    _check(shards, nbytes, bandwidth, latency, "shards")
    _check(buckets, nbytes, bandwidth, message_seconds, "buckets")
    if colocated is None:
        colocated = shards == n
    if colocated:
        if shards > n:
            raise PlanError(f"{shards} colocated PS shards need at least as many workers "
                            f"(got {n}); use shards <= {n} or dedicated shards")
        if n == 1:
            return 0.0
        moved = 2 * (n - 1) * nbytes / shards
        messages = 2 * (n - 1) * buckets * message_seconds
    else:
        moved = 2 * max(n, shards) * nbytes / shards
        messages = 2 * n * buckets * message_seconds
    host = moved / host_bandwidth if host_bandwidth else 0.0
    return _overlapped(moved / bandwidth, host, messages) + 2 * latency


def hierarchical_seconds(workers: int, devices_per_worker: int, nbytes: float, intra_bw: float,
                         intra_lat: float, inter_bw: float, inter_lat: float) -> float:
    """Reduce within each worker, ring across workers, broadcast within each worker:

        reduce     (d-1)/d · B/bw_in + (d-1)·lat_in     ring reduce-scatter among the d replicas
        across     2(W-1)/W · B/bw + 2(W-1)·lat         ring_seconds(W, B, bw, lat)
        broadcast  (d-1)/d · B/bw_in + (d-1)·lat_in     ring all-gather among the d replicas

    W = workers (gRPC tasks), d = replicas per worker. The W-node ring runs on the d slices of
    the reduce-scatter at once; together they move B across each worker's link, as one ring
    over the whole B would.
    """
    _check(devices_per_worker, nbytes, intra_bw, intra_lat, "devices_per_worker")
    d = devices_per_worker
    within = (d - 1) / d * nbytes / intra_bw + (d - 1) * intra_lat
    return 2 * within + ring_seconds(workers, nbytes, inter_bw, inter_lat)


@dataclass(frozen=True)
class SyncDecision:
    """The chosen sync method, every method's predicted seconds (by name) and why."""

    method: str
    costs: tuple[tuple[str, float], ...]
    exposed_seconds: float
    reason: str

    @property
    def seconds(self) -> float:
        return dict(self.costs)[self.method]


def _slowest(cluster: Cluster, pairs: Sequence[tuple[str, str]]) -> tuple[float, float]:
    """(min bandwidth, max latency) over the links joining `pairs`; cluster defaults if none."""
    if not pairs:
        return cluster.default_bandwidth, cluster.default_latency
    figures = [cluster.link(a, b) for a, b in pairs]
    return min(bw for bw, _ in figures), max(lat for _, lat in figures)


def _ring_pairs(nodes: Sequence[str]) -> list[tuple[str, str]]:
    if len(nodes) < 2:
        return []
    return [(nodes[i], nodes[(i + 1) % len(nodes)]) for i in range(len(nodes))]


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _bw(bw: float) -> str:
    return f"{bw / 1e9:.2f} GB/s" if bw >= 1e9 else f"{bw / 1e6:.1f} MB/s"


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.3g} ms"


def _tie_key(seconds: float) -> float:
    # Mathematically equal costs (ring and colocated ps at N=2) may differ in the last bits.
    return float(f"{seconds:.9g}")


def choose_sync(groups: Sequence[Sequence[str]], cluster: Cluster, grad_bytes: int, *,
                backward_seconds: float = 0.0, requested: str = "auto",
                ps_shards: int | None = None, ps_busiest_bytes: int | None = None,
                buckets: int | None = None, profile: LinkProfile | None = None) -> SyncDecision:
    """Predict each sync method's seconds for one step and pick the cheapest (or `requested`).

    N = len(groups); each replica talks through its first device.
      ring: the slowest link between consecutive replicas (around the ring).
      ps:   the slowest link between any two replicas; `ps_shards` None (or N) puts one shard on
            every replica (colocated), fewer means dedicated shard devices. `ps_busiest_bytes`
            L (the most bytes one aggregation device gets per replica, as the rewrite shards
            the buckets) replaces the balanced B/S: 2(N-1)·L/bw + 2·lat + 2(N-1)·k·o; when one
            device aggregates everything (L >= B) the push is a fan-in and the pull a fan-out:
            (N-1)·L/bw_in + (N-1)·L/bw_out + 2·lat + 2(N-1)·k·o.
      hierarchical: only weighed when the replicas span more than one gRPC task and some task
            holds more than one replica (or when requested); d = the most replicas in one task,
            bw_in/lat_in = the slowest link between replicas of one task, bw/lat = the slowest
            link around the ring of the tasks' first replicas.
    `buckets` k = fusion buckets (None: ceil(B / default_fusion_bytes) on the ring's link).
    `profile` (a link calibration; None: the cluster's `link_profile`, if any): o = its
    message_seconds; ring's bw = its per-flow bandwidth
    with N ring flows at once, ps's bw = its per-node all-to-all bandwidth among N, bw_in /
    bw_out = its fan-in / fan-out bandwidth of N-1 peers; a count it does not cover keeps the
    link's bandwidth (bw_in = bw_out = bw: the plain 2(N-1)·L/bw).
    Ties go to the earlier method in SYNC_METHODS. `requested` other than "auto" is honoured
    and every cost is still reported. exposed_seconds = max(0, chosen - backward_seconds):
    bucketed sync can hide at most the backward pass.
    """
    if requested not in SYNC_CHOICES:
        raise PlanError(f"unknown sync method {requested!r}; choose one of "
                        f"{', '.join(SYNC_CHOICES)}")
    if not groups or any(not g for g in groups):
        raise PlanError(f"choose_sync needs at least one non-empty replica group (got {groups!r})")
    if grad_bytes < 0 or backward_seconds < 0:
        raise PlanError(f"grad_bytes ({grad_bytes}) and backward_seconds ({backward_seconds}) "
                        "must be >= 0")
    n = len(groups)
    leaders = [g[0] for g in groups]
    shards = n if ps_shards is None else ps_shards
    ring_bw, ring_lat = _slowest(cluster, _ring_pairs(leaders))
    ps_bw, ps_lat = _slowest(cluster, list(combinations(leaders, 2)))
    prof = profile if profile is not None else (cluster.link_profile or LinkProfile())
    host = prof.host if prof.host is not None else LinkProfile()
    o = prof.message_seconds
    ps_in = float(prof.fanin_bw(n - 1, ps_bw) or ps_bw)
    ps_out = float(prof.fanout_bw(n - 1, ps_bw) or ps_bw)
    ring_bw = float(prof.ring_bw(n, ring_bw) or ring_bw)
    ps_bw = float(prof.alltoall_bw(n, ps_bw) or ps_bw)
    host_ring, host_a2a = host.ring_bw(n, None), host.alltoall_bw(n, None)
    host_in, host_out = host.fanin_bw(n - 1, host_a2a), host.fanout_bw(n - 1, host_a2a)
    one_aggregator = ps_busiest_bytes is not None and ps_busiest_bytes >= grad_bytes
    if buckets is None:
        fusion = default_fusion_bytes(n, ring_bw, ring_lat, max(grad_bytes, 1))
        buckets = max(1, math.ceil(grad_bytes / fusion))
    k = buckets
    costs = {"ring": ring_seconds(n, grad_bytes, ring_bw, ring_lat, buckets=k,
                                  message_seconds=o, host_bandwidth=host_ring),
             "ps": ps_seconds(n, grad_bytes, ps_bw, ps_lat, shards, buckets=k,
                              message_seconds=o, host_bandwidth=host_a2a)}
    if ps_busiest_bytes is not None and n > 1:
        # the shards the rewrite really makes (one per bucket, least-loaded first) are rarely
        # balanced: the busiest one (L bytes) at its own fan-in/fan-out speed, or all the
        # traffic at the all-to-all speed, whichever is slower, bounds the step
        wire = _ps_busiest(n, grad_bytes, ps_busiest_bytes, ps_bw, ps_in, ps_out, one_aggregator)
        copies = (_ps_busiest(n, grad_bytes, ps_busiest_bytes, host_a2a or 1.0, host_in,
                              host_out, one_aggregator)
                  if host_in and host_out and (host_a2a or one_aggregator) else 0.0)
        costs["ps"] = _overlapped(wire, copies, 2 * (n - 1) * k * o) + 2 * ps_lat
    figures = [f"N={n}", f"S={shards}", f"B={_bytes(grad_bytes)}",
               f"bw={_bw(ring_bw)}", f"lat={ring_lat * 1e6:.3g} us"]
    in_out = ps_busiest_bytes is not None and n > 1 and (ps_in, ps_out) != (ps_bw, ps_bw)
    if in_out:
        figures.append(f"ps bw={_bw(ps_bw)} bw_in={_bw(ps_in)} bw_out={_bw(ps_out)} "
                       f"lat={ps_lat * 1e6:.3g} us")
    elif (ps_bw, ps_lat) != (ring_bw, ring_lat):
        figures.append(f"ps bw={_bw(ps_bw)} lat={ps_lat * 1e6:.3g} us")
    if o:
        figures.append(f"k={k} o={o * 1e6:.3g} us")
    if host_ring or host_a2a:
        figures.append("host " + " ".join(f"{name}={_bw(v)}" for name, v in (
            ("ring", host_ring), ("a2a", host_a2a), ("in", host_in), ("out", host_out)) if v))

    by_task: dict[str, list[str]] = {}
    for lead in leaders:
        by_task.setdefault(task_prefix(lead), []).append(lead)
    w, d = len(by_task), max(len(v) for v in by_task.values())
    if (w > 1 and d > 1) or requested == "hierarchical":
        in_bw, in_lat = _slowest(cluster, [p for v in by_task.values() for p in _ring_pairs(v)])
        out_bw, out_lat = _slowest(cluster, _ring_pairs([v[0] for v in by_task.values()]))
        costs["hierarchical"] = hierarchical_seconds(w, d, grad_bytes, in_bw, in_lat,
                                                     out_bw, out_lat)
        figures.append(f"W={w} d={d} bw_in={_bw(in_bw)} lat_in={in_lat * 1e6:.3g} us")
        if (out_bw, out_lat) != (ring_bw, ring_lat):
            figures.append(f"across workers bw={_bw(out_bw)} lat={out_lat * 1e6:.3g} us")

    order = sorted(costs, key=lambda m: (_tie_key(costs[m]), SYNC_METHODS.index(m)))
    method = order[0] if requested == "auto" else requested
    formula = dict(_FORMULAS, ps=_FORMULAS["ps_colocated" if shards == n else "ps"])
    if ps_busiest_bytes is not None and n > 1:
        formula["ps"] = "2(N-1)·L/bw + 2·lat"
        if in_out:
            formula["ps"] = ("(N-1)·L·(1/bw_in + 1/bw_out) + 2·lat" if one_aggregator else
                             "max(2(N-1)·B/(N·bw), (N-1)·L·(1/bw_in + 1/bw_out)) + 2·lat")
        figures.append(f"L={_bytes(ps_busiest_bytes)} (busiest shard)")
    if o or host_ring or host_a2a:
        host_text = "host copies + " if host_ring or host_a2a else ""
        messages = {"ring": "2N(N-1)·k·o", "ps": "2(N-1)·k·o" if shards == n
                    or ps_busiest_bytes is not None else "2N·k·o"}
        for m, msgs in messages.items():
            wire_text, lat_text = formula[m].rsplit(" + ", 1)
            formula[m] = f"max({wire_text}, {host_text}{msgs}) + {lat_text}"
    chain = ""
    for i, m in enumerate(order):
        if i:
            chain += "  <  " if _tie_key(costs[m]) > _tie_key(costs[order[i - 1]]) else "  =  "
        chain += f"{m}: {formula[m]} = {_ms(costs[m])}"
    reason = f"{chain}  [{', '.join(figures)}]"
    if requested != "auto":
        reason = f"{requested} (requested); {reason}"
    return SyncDecision(method=method, costs=tuple(sorted(costs.items())),
                        exposed_seconds=max(0.0, costs[method] - backward_seconds), reason=reason)


def _ps_busiest(n: int, total: float, busiest: float, a2a: float, bw_in: float,
                bw_out: float, one_aggregator: bool) -> float:
    """Wire seconds of a ps whose busiest shard aggregates `busiest` bytes per replica:
    its pushes in and pulls out, (N-1)·L·(1/bw_in + 1/bw_out); with several shards at least
    all the traffic, 2(N-1)·B over the N nodes' all-to-all speed."""
    own = (n - 1) * busiest * (1 / bw_in + 1 / bw_out)
    return own if one_aggregator else max(own, 2 * (n - 1) * total / (n * a2a))


def plan_buckets(grad_bytes: Sequence[int], fusion_bytes: int) -> tuple[tuple[int, ...], ...]:
    """Pack gradient indices, in the given (production) order, into buckets of ~fusion_bytes.

    A bucket closes when adding the next gradient would take it over fusion_bytes; a gradient
    larger than fusion_bytes is a bucket on its own. Consecutive, so the first bucket can sync
    while backward still computes the rest.
    """
    if isinstance(fusion_bytes, bool) or not isinstance(fusion_bytes, int) or fusion_bytes < 1:
        raise PlanError(f"fusion_bytes={fusion_bytes!r} must be an int >= 1")
    negative = [i for i, b in enumerate(grad_bytes) if b < 0]
    if negative:
        raise PlanError(f"gradient sizes must be >= 0 bytes (negative at indices {negative})")
    buckets: list[tuple[int, ...]] = []
    current: list[int] = []
    size = 0
    for i, b in enumerate(grad_bytes):
        if current and size + b > fusion_bytes:
            buckets.append(tuple(current))
            current, size = [], 0
        current.append(i)
        size += b
    if current:
        buckets.append(tuple(current))
    return tuple(buckets)


def make_buckets(names: Sequence[str], grad_bytes: Sequence[int],
                 fusion_bytes: int) -> "tuple[Bucket, ...]":
    """plan_buckets over named gradients, as the Plan's `Bucket` values."""
    from tfplace.plan import Bucket
    if len(names) != len(grad_bytes):
        raise PlanError(f"{len(names)} gradient names but {len(grad_bytes)} sizes; "
                        "pass one size per gradient")
    return tuple(Bucket(tuple(names[i] for i in idx), sum(int(grad_bytes[i]) for i in idx))
                 for idx in plan_buckets(grad_bytes, fusion_bytes))


def default_fusion_bytes(n: int, bandwidth: float, latency: float, total_bytes: int) -> int:
    """Bucket size whose ring latency is at most 10% of its transfer time.

    Per bucket of F bytes, the ring pays 2(n-1)·lat of latency and 2(n-1)/n · F/bw of transfer;
    2(n-1)·lat <= 0.1 · 2(n-1)/n · F/bw  <=>  F >= 10·n·lat·bw. So

        F = clamp(ceil(10·n·lat·bw), 1 MiB, 64 MiB), then at most total_bytes, at least 1.

    The upper clamp keeps enough buckets to overlap with backward; a smaller total needs one.
    """
    _check(n, total_bytes, bandwidth, latency)
    # round() drops float noise (10·4·1e-4·1e9 must be 4000000, not 4000000.000001).
    wanted = math.ceil(round(TRANSFER_PER_LATENCY * n * latency * bandwidth, 6))
    return max(1, min(int(total_bytes), max(MIN_FUSION_BYTES, min(MAX_FUSION_BYTES, wanted))))


def gradient_sync_plan(decision: SyncDecision, *, replicas: int, fusion_bytes: int,
                       backend: str = "tf") -> "GradientSyncPlan":
    """The Plan's record of a SyncDecision."""
    from tfplace.plan import GradientSyncPlan
    return GradientSyncPlan(method=decision.method, backend=backend, replicas=replicas,
                            fusion_bytes=fusion_bytes, reason=decision.reason,
                            costs=decision.costs, exposed_seconds=decision.exposed_seconds)
