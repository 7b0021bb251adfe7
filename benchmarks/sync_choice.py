"""Does sync="auto" pick the faster gradient sync? Measured ring vs ps against
``tfplace.sync_cost.choose_sync`` over a grid of replicas x gradient bytes x link bandwidth.

    python benchmarks/sync_choice.py [--replicas 2,3,4] [--payloads-kb 256,1024,4096,16384,65536]
                                     [--rates unshaped,1gbit,100mbit] [--rounds 3]
                                     [--tie 0.05] [--budget 1500] [--no-netns]
                                     [--save FILE] [--rescore FILE]

Grid: N replicas (one gRPC worker = one device = one replica each) x float32 gradient bytes B x
link rate. First a CALIBRATION phase measures the links (below); then at every point both sync
methods are MEASURED as tfplace runs them, ``choose_sync(groups, cluster, B, requested="auto",
ps_busiest_bytes=L, buckets=k, profile=...)`` is asked, and the point is OK when auto picked
the measured-faster method (median over all calls of all rounds), or a "tie" when the two
medians are within --tie (|ring - ps| / min < 5%): then either choice is within the noise and
counts as correct; ties are counted and printed separately, and so is the strict rate.
``--save`` writes the calibration and every timing as JSON; ``--rescore`` reports such a file
again with the current model (development only: a rescored run is in-sample).

Network. Each worker runs in its own network namespace ``tfpsc_w<i>``, joined by a veth pair
(``tfpsc_n<i>`` inside, ``tfpsc_h<i>`` outside) to a bridge ``tfpsc_br`` in the root namespace;
addresses on 10.231.77.0/24, which exists only on these interfaces (bridge 10.231.77.1 = the
client, worker i = 10.231.77.1<i>). Worker-to-worker traffic is bridged (L2, no IP forwarding);
the client talks to the workers from the root namespace through the bridge. A shaped rate puts
``tbf rate R burst max(16 KiB, 0.5 ms of R) latency 50ms`` on BOTH ends of every veth (worker
side = its upload, bridge side = its download): every worker gets a full-duplex link of rate R,
which is what the alpha-beta model in sync_cost assumes. "unshaped" = the same veths with no
qdisc. The script removes leftovers of a crashed run (anything named tfpsc_*) at start, and its
namespaces, links and qdiscs on exit (try/finally, atexit, SIGTERM/SIGINT). Without ``ip``/``tc``
or when the kernel refuses, it falls back to 127.0.0.1 loopback, unshaped only, and says so.
No traffic goes anywhere but these namespaces and loopback.

Per N, one child process (its own session; killed at the end or on failure) starts N
``tfplace.runtime.worker`` processes (``ip netns exec tfpsc_w<i> python -m
tfplace.runtime.worker --spec ... --task i --devices 1 --cores i%ncpu``), connects to them
(its own ``localhost`` task at the bridge address, so workers could reach it), and creates one
float32 variable of B bytes ON each worker (no payload travels from the client). It then
applies each rate with ``tc`` in turn (rounds alternate the order) and times, per gradient
size, calls of ring and ps alternately (ABAB..., so noise hits both alike): at least 2-3 calls
each, more for fast ones up to ~0.8 s per method, round and cell.

What is timed: the sync as tfplace's data-parallel rewrite builds it. The B bytes are treated as
256 KiB gradients, packed into buckets by ``sync_cost.plan_buckets`` with the planner's
``default_fusion_bytes(N, bw, lat, B)`` for that link (both as ``plan_data_parallel`` does).
Each bucket is reduced by ``REDUCERS[method]``:
  ring  ``allreduce.ring`` over the N devices, per bucket;
  ps    ``allreduce.central`` with one target per bucket, greedy least-loaded over the
        replicas' devices (= round-robin for equal buckets) - ``replication_spec``'s default
        COLOCATED sharding, not a single PS target. With fewer buckets than replicas (e.g. one
        256 KiB bucket) that is fewer shards than replicas.
then concatenated on each device, summed there, and the N scalars AddN'ed on the client;
timed = call + ``.numpy()``, by the client. Correctness is checked after warm-up.

Calibration (``calibrate_child``, one child with max(N) workers, per rate, before any grid
point, over the same TF gRPC path; no reducer graph is involved): a 4-byte ping-pong gives the
latency per hop, a 512 KiB vs 4 MiB transfer w0 -> w1 the bandwidth, 33 tiny tensors at once
the host seconds per message, and transfers of 512 KiB vs 4 MiB in four patterns the contended
bandwidths: m ring flows at once, all-to-all among m, fan-in k -> 1 and fan-out 1 -> k.

Cluster for choose_sync: devices/tasks = the workers (``grpc_cluster(tasks, 1)``), with
``default_bandwidth`` / ``default_latency`` = the calibrated bandwidth and hop latency of that
rate (what ``tfplace profile`` would write into a cluster spec), and a ``sync_cost.LinkProfile``
of the rest: the link calibration's message seconds, and bandwidths of the sync MECHANISMS
measured per N in the grid's own rounds at two sizes that are not grid payloads (96 KB and
6 MB; the slope between them, free of per-call and per-message costs): the ring per flow, ps
over N balanced shards per node in, ps through one shard in = out. The same figures measured
unshaped are the host figures (what the shared cores can copy; on a slow link they hide behind
the wire, on loopback they are the wire). Nothing in the model is fitted to the grid's timings. The fusion size of each point uses the same
calibrated figures. A raw-TCP probe (bulk throughput and 1-byte ping-pong RTT between
namespaces w0 and w1) is printed per rate for reference only.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Iterator
from _procs import children as _children, kill_children as _kill_children  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULT = "SYNCCHOICE_RESULT "
KB = 1 << 10
GRAD = 256 * KB                     # the size of one "gradient" the payload is made of
PREFIX = "tfpsc"
BRIDGE = f"{PREFIX}_br"
SUBNET = "10.231.77"
CLIENT_IP = f"{SUBNET}.1"
WORKER_PORT = 7100
METHODS = ("ring", "ps")
CAL_SMALL = 512 * KB               # calibration transfer sizes: the slope between them
CAL_BIG = 4096 * KB
CAL_MESSAGES = 33                  # tiny tensors sent at once, to time one message's cost
# per N, the sync mechanisms themselves: ring (one bucket), ps with N balanced shards ("psbal")
# and ps with one shard ("ps1"), timed at two sizes that are not grid payloads; the slope
# between them is the pattern's bandwidth, free of per-call and per-message costs
MECH_SMALL = 96 * KB
MECH_BIG = 6144 * KB
MECHANISMS = ("ring", "psbal", "ps1")
_FIGURES: dict[str, list[float]] = {}     # rate -> [bandwidth, latency], from the calibration


def worker_ip(i: int) -> str:
    return f"{SUBNET}.{10 + i}"


def rate_bytes(rate: str) -> float | None:
    """'100mbit' -> 1.25e7 bytes/s; 'unshaped' -> None."""
    if rate == "unshaped":
        return None
    r = rate.lower()
    for suffix, mult in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if r.endswith(suffix):
            return float(r[: -len(suffix)]) * mult / 8
    raise ValueError(f"rate {rate!r}: use e.g. 1gbit, 100mbit or unshaped")


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def emit(obj: dict) -> None:
    print(RESULT + json.dumps(obj), flush=True)


# ---------------------------------------------------------------------------------------------
# network namespaces and shaping

def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def netns_cleanup() -> list[str]:
    """Remove every tfpsc_* namespace and link (ours, from this or a crashed earlier run)."""
    removed = []
    if not shutil.which("ip"):
        return removed
    r = _run(["ip", "netns", "list"], check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{PREFIX}_"):
            _run(["ip", "netns", "del", name], check=False)      # also deletes its veth ends
            removed.append(name)
    r = _run(["ip", "-o", "link", "show"], check=False)
    for line in r.stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(f"{PREFIX}_"):
                _run(["ip", "link", "del", name], check=False)
                removed.append(name)
    return removed


def netns_setup(n: int) -> None:
    _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    _run(["ip", "addr", "add", f"{CLIENT_IP}/24", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    for i in range(n):
        ns, inner, outer = f"{PREFIX}_w{i}", f"{PREFIX}_n{i}", f"{PREFIX}_h{i}"
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
        _run(["ip", "link", "set", inner, "netns", ns])
        _run(["ip", "link", "set", outer, "master", BRIDGE])
        _run(["ip", "link", "set", outer, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{worker_ip(i)}/24", "dev", inner])
        _run(["ip", "-n", ns, "link", "set", inner, "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])


def shape(n: int, rate: str) -> None:
    """tbf at `rate` on both ends of the veths of workers 0..n-1; 'unshaped' removes it."""
    bps = rate_bytes(rate)
    for i in range(n):
        for prefix, dev in (([], f"{PREFIX}_h{i}"),
                            (["ip", "netns", "exec", f"{PREFIX}_w{i}"], f"{PREFIX}_n{i}")):
            if bps is None:
                _run(prefix + ["tc", "qdisc", "del", "dev", dev, "root"], check=False)
            else:
                burst = max(16 * KB, int(bps * 0.0005))
                _run(prefix + ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate",
                               rate, "burst", str(burst), "latency", "50ms"])


_PROBE = r"""
import socket, sys, time
role, host, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "s":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 5999)); s.listen(1); s.settimeout(20)
    c, _ = s.accept(); c.settimeout(20); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(200): c.sendall(c.recv(1))
    got = 0
    while got < nbytes:
        d = c.recv(1 << 20)
        if not d: break
        got += len(d)
    c.sendall(b"k"); c.close()
else:
    c = socket.create_connection((host, 5999), timeout=20)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for _ in range(200):
        t = time.perf_counter(); c.sendall(b"p"); c.recv(1); rtts.append(time.perf_counter() - t)
    buf = b"x" * (1 << 20); t = time.perf_counter(); left = nbytes
    while left > 0:
        c.sendall(buf[:min(left, len(buf))]); left -= len(buf)
    c.recv(1); dt = time.perf_counter() - t
    rtts.sort()
    print(f"{nbytes / dt:.6g} {rtts[len(rtts) // 2]:.6g}")
"""


def tcp_probe(rate: str) -> tuple[float, float] | None:
    """(bulk bytes/s, median 1-byte RTT s) from namespace w0 to w1 over raw TCP, or None."""
    bps = rate_bytes(rate)
    nbytes = int(min(256 * 2**20, 0.4 * bps)) if bps else 256 * 2**20
    server = subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}_w1", sys.executable, "-c", _PROBE,
                               "s", worker_ip(1), str(nbytes)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        r = subprocess.run(["ip", "netns", "exec", f"{PREFIX}_w0", sys.executable, "-c", _PROBE,
                            "c", worker_ip(1), str(nbytes)], capture_output=True, text=True,
                           timeout=30)
        bw, rtt = (float(x) for x in r.stdout.split())
        return bw, rtt
    except Exception:
        return None
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# the cost-model side (also used by the child to build the graphs tfplace would run)

def figures(rate: str) -> tuple[float, float]:
    """(bandwidth bytes/s, latency s) the Cluster for choose_sync gets for this rate: the
    calibration's (bw, hop_s) when there is one, else the nominal rate / GRPC_* defaults."""
    if rate in _FIGURES:
        bw, lat = _FIGURES[rate]
        return float(bw), float(lat)
    from tfplace.cluster import GRPC_BANDWIDTH, GRPC_LATENCY
    bps = rate_bytes(rate)
    return (GRPC_BANDWIDTH if bps is None else bps), GRPC_LATENCY


def layout(n: int, nbytes: int, rate: str) -> tuple[list[int], list[int]]:
    """(bucket sizes in bytes, ps target replica per bucket), as plan_data_parallel and
    replication_spec would make them for `nbytes` of 256 KiB gradients."""
    from tfplace.sync_cost import default_fusion_bytes, plan_buckets
    bw, lat = figures(rate)
    grads = [GRAD] * (nbytes // GRAD) + ([nbytes % GRAD] if nbytes % GRAD else [])
    fusion = default_fusion_bytes(n, bw, lat, max(nbytes, 1))
    sizes = [sum(grads[i] for i in idx) for idx in plan_buckets(grads, fusion)]
    load = {i: 0 for i in range(n)}
    targets = []
    for s in sizes:             # greedy: the least-loaded shard next (ties: the first replica)
        t = min(load, key=lambda d: (load[d], d))
        load[t] += s
        targets.append(t)
    return sizes, targets


def mechanism_layouts(n: int, nbytes: int) -> dict[str, tuple[str, tuple[list[int], list[int]]]]:
    """The calibration's patterns: name -> (reducer, (bucket sizes, ps targets))."""
    return {"ring": ("ring", ([nbytes], [0])),
            "psbal": ("ps", ([nbytes // n] * n, list(range(n)))),
            "ps1": ("ps", ([nbytes], [0]))}


def mechanism_profile(n: int, times: dict, rate: str) -> dict[str, float] | None:
    """Bandwidths of the N-node patterns at `rate` from the slope between the two mechanism
    sizes (None when not measured): ring per flow (2(N-1)/N·B moved per node), ps all-to-all
    per node in (2(N-1)·B/N), ps single-shard in = out (2(N-1)·B through one node)."""
    def slope(name: str) -> float | None:
        try:
            big = statistics.median(times[f"mech|{rate}|{MECH_BIG}|{name}"])
            small = statistics.median(times[f"mech|{rate}|{MECH_SMALL}|{name}"])
        except KeyError:
            return None
        return (big - small) if big > small else None
    d = MECH_BIG - MECH_SMALL
    moved = {"ring": 2 * (n - 1) / n * d, "psbal": 2 * (n - 1) * d / n, "ps1": 2 * (n - 1) * d}
    out = {}
    for name, b in moved.items():
        t = slope(name)
        if t is None:
            return None
        out[name] = b / t
    return out


def cluster_for(n: int, rate: str):
    from tfplace.cluster import Task, grpc_cluster
    bw, lat = figures(rate)
    tasks = tuple(Task("worker", i, f"{worker_ip(i)}:{WORKER_PORT + i}") for i in range(n))
    return dataclasses.replace(grpc_cluster(tasks, 1), default_bandwidth=bw, default_latency=lat)


# ---------------------------------------------------------------------------------------------
# child: one cluster of N workers, every payload and rate

@contextlib.contextmanager
def workers_up(n: int, netns: bool) -> Iterator[tuple]:
    """N tfplace workers (one device each, worker i pinned to cpu i % ncpu, in namespace w<i>
    when `netns`), this process connected to them as task ``localhost``; yields (tf, devices).
    The workers are killed on exit."""
    from tfplace.cluster import Task
    from tfplace.runtime.launcher import LocalWorkers, _wait_ready
    cpus = _cpus()
    if netns:
        tasks = tuple(Task("worker", i, f"{worker_ip(i)}:{WORKER_PORT + i}") for i in range(n))
    else:
        ports = []
        for _ in range(n + 1):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(int(s.getsockname()[1]))
        tasks = tuple(Task("worker", i, f"127.0.0.1:{ports[i]}") for i in range(n))
    spec = {"worker": [t.address for t in tasks]}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    procs = []
    for t in tasks:
        cmd = [sys.executable, "-m", "tfplace.runtime.worker", "--spec", json.dumps(spec),
               "--task", str(t.index), "--devices", "1", "--cores", str(cpus[t.index % len(cpus)]),
               "--parent", str(os.getpid())]
        if netns:
            cmd = ["ip", "netns", "exec", f"{PREFIX}_w{t.index}"] + cmd
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=env, text=True, cwd=ROOT))
    handle = LocalWorkers(procs, tasks)
    try:
        _wait_ready(procs, tasks, 120.0)
        import tensorflow as tf
        # the client's own task at an address the workers can reach (not 'localhost' - in a
        # worker's namespace that is the worker itself)
        with socket.socket() as s:
            s.bind((CLIENT_IP if netns else "127.0.0.1", 0))
            cport = int(s.getsockname()[1])
        full = dict(spec, localhost=[f"{CLIENT_IP if netns else '127.0.0.1'}:{cport}"])
        tf.config.experimental_connect_to_cluster(tf.train.ClusterSpec(full),
                                                  job_name="localhost")
        yield tf, [f"{t.prefix}/device:CPU:0" for t in tasks]
    finally:
        handle.shutdown()


def _paired(fa, fb, min_pairs: int, max_pairs: int, seconds: float) -> list[float]:
    """Per-pair differences t(fb) - t(fa), calls alternating (ABAB..., so noise hits both)."""
    fa().numpy(), fb().numpy()
    diffs, spent, k = [], 0.0, 0
    while k < max_pairs and (k < min_pairs or spent < seconds):
        t = time.perf_counter()
        fa().numpy()
        ta = time.perf_counter() - t
        t = time.perf_counter()
        fb().numpy()
        tb = time.perf_counter() - t
        diffs.append(tb - ta)
        spent += ta + tb
        k += 1
    return diffs


def calibrate_child(a: argparse.Namespace) -> None:
    """The link calibration, before any grid point: what `tfplace profile` would measure on
    the links and write into the cluster spec, over the same TF gRPC path, per rate:

      hop_s   one-way seconds of a 4-byte tensor hop w0 -> w1 (slope of a 2- vs 22-hop
              ping-pong chain of AddV2s alternating between the two workers; per-call cost
              cancels): the latency per message, gRPC overhead included.
      bw      bytes/s of one tensor w0 -> w1 (slope between CAL_SMALL and CAL_BIG bytes:
              per-call cost and tbf's initial burst cancel).
      fanin   {k: aggregate bytes/s into w0 from k senders at once}, k = 1..n-1.
      fanout  {k: aggregate bytes/s out of w0 to k receivers at once}, k = 1..n-1.
      message_s  host seconds per message when many are in flight: the slope of 1 vs
              CAL_MESSAGES 4-byte tensors sent w1 -> w0 at once.
      ring_bw  {m: bytes/s per flow while m transfers w_i -> w_(i+1 mod m) run at once}.
      alltoall_bw {m: bytes/s into each node while each of m nodes sends to every other}.
    """
    n = a.n
    rates = a.rates.split(",")
    out: dict[str, dict] = {}
    with workers_up(n, a.netns) as (tf, devices):
        tiny = []
        for d in devices:
            with tf.device(d):
                tiny.append(tf.Variable([1.0]))
        big: dict[int, list] = {}
        flow: dict[tuple[int, int, int], Any] = {}     # (size, i, j): what w_i sends w_j
        for size in (CAL_SMALL, CAL_BIG):
            big[size] = []
            for i, d in enumerate(devices):
                with tf.device(d):
                    big[size].append(tf.Variable(tf.ones([size // 4])))
                    for j in range(n):
                        if j != i:      # a tensor of its own per flow: nothing can be shared
                            flow[(size, i, j)] = tf.Variable(tf.fill([size // 4], float(j)))

        def chain(hops: int):
            @tf.function
            def f():
                x = tiny[0].read_value()
                for i in range(hops):
                    j = (i + 1) % 2
                    with tf.device(devices[j]):
                        x = x + tiny[j]
                return x
            return f

        def fanin(size: int, k: int):
            @tf.function
            def f():
                with tf.device(devices[0]):
                    got = [tf.reduce_sum(tf.identity(big[size][i].read_value()))
                           for i in range(1, k + 1)]
                    return tf.add_n(got)
            return f

        def fanout(size: int, k: int):
            @tf.function
            def f():
                got = []
                for i in range(1, k + 1):
                    with tf.device(devices[i]):
                        got.append(tf.reduce_sum(tf.identity(flow[(size, 0, i)].read_value())))
                with tf.device(devices[0]):
                    return tf.add_n(got)
            return f

        def messages(m: int):
            @tf.function
            def f():
                with tf.device(devices[0]):
                    return tf.add_n([tf.identity(v.read_value()) for v in many[:m]])
            return f

        def ring_flows(size: int, m: int):
            @tf.function
            def f():
                got = []
                for i in range(m):
                    with tf.device(devices[(i + 1) % m]):
                        got.append(tf.reduce_sum(tf.identity(big[size][i].read_value())))
                with tf.device(devices[0]):
                    return tf.add_n(got)
            return f

        def alltoall(size: int, m: int):
            @tf.function
            def f():
                got = []
                for i in range(m):
                    for j in range(m):
                        if i != j:
                            with tf.device(devices[j]):
                                got.append(tf.reduce_sum(
                                    tf.identity(flow[(size, i, j)].read_value())))
                with tf.device(devices[0]):
                    return tf.add_n(got)
            return f

        with tf.device(devices[1]):
            many = [tf.Variable([1.0]) for _ in range(CAL_MESSAGES)]
        short, long_ = chain(2), chain(22)
        one, all_ = messages(1), messages(CAL_MESSAGES)
        ring_f = {m: (ring_flows(CAL_SMALL, m), ring_flows(CAL_BIG, m)) for m in range(2, n + 1)}
        a2a_f = {m: (alltoall(CAL_SMALL, m), alltoall(CAL_BIG, m)) for m in range(2, n + 1)}
        pairs = {k: (fanin(CAL_SMALL, k), fanin(CAL_BIG, k)) for k in range(1, n)}
        outs = {k: (fanout(CAL_SMALL, k), fanout(CAL_BIG, k)) for k in range(1, n)}
        for rate in rates:
            if a.netns:
                shape(n, rate)
            hop = statistics.median(_paired(short, long_, 5, 40, 1.0)) / 20
            msg = statistics.median(_paired(one, all_, 5, 40, 1.0)) / (CAL_MESSAGES - 1)
            agg, ring_bw, a2a_bw, out_bw = {}, {}, {}, {}
            for k, (fs, fb) in pairs.items():
                dt = statistics.median(_paired(fs, fb, 3, 30, 1.5))
                agg[k] = k * (CAL_BIG - CAL_SMALL) / max(dt, 1e-9)
            for k, (fs, fb) in outs.items():
                dt = statistics.median(_paired(fs, fb, 3, 30, 1.5))
                out_bw[k] = k * (CAL_BIG - CAL_SMALL) / max(dt, 1e-9)
            for m, (fs, fb) in ring_f.items():          # per flow, m flows at once
                dt = statistics.median(_paired(fs, fb, 3, 30, 1.5))
                ring_bw[m] = (CAL_BIG - CAL_SMALL) / max(dt, 1e-9)
            for m, (fs, fb) in a2a_f.items():           # per node's ingress, m(m-1) flows
                dt = statistics.median(_paired(fs, fb, 3, 30, 1.5))
                a2a_bw[m] = (m - 1) * (CAL_BIG - CAL_SMALL) / max(dt, 1e-9)
            out[rate] = {"hop_s": max(hop, 1e-6), "bw": agg[1], "fanin": agg,
                         "message_s": max(msg, 0.0), "ring_bw": ring_bw, "alltoall_bw": a2a_bw,
                         "fanout": out_bw}
        if a.netns:
            shape(n, "unshaped")
    emit({"calibration": out})


def child(a: argparse.Namespace) -> None:
    deadline = time.monotonic() + a.child_budget
    n = a.n
    payloads = [int(float(p) * KB) for p in a.payloads_kb.split(",")]
    rates = a.rates.split(",")
    global _FIGURES
    _FIGURES = json.loads(a.figures)
    t0 = time.perf_counter()
    with workers_up(n, a.netns) as (tf, devices):
        from tfplace.rewrite.allreduce import REDUCERS
        from tfplace.rewrite.nodes import DT_FLOAT, DT_INT32, DT_RESOURCE, NodeBuilder
        client = "/job:localhost/replica:0/task:0/device:CPU:0"
        variables = {}
        for nbytes in payloads + [MECH_SMALL, MECH_BIG]:
            vs = []
            for i, d in enumerate(devices):
                with tf.device(d):                  # created on the worker, not shipped
                    vs.append(tf.Variable(tf.fill([nbytes // 4], float(i + 1))))
            variables[nbytes] = vs

        def build(nbytes: int, method: str, sizes: list[int], targets: list[int]):
            gd = tf.compat.v1.GraphDef()
            b = NodeBuilder(gd, "sc")
            handles, flats = [], []
            for i, d in enumerate(devices):
                h = b.add(f"handle{i}", "Placeholder", [], d, dtype=DT_RESOURCE)
                handles.append(h)
                r = b.add(f"read{i}", "ReadVariableOp", [h], d, dtype=DT_FLOAT)
                flats.append(b.flatten(r, DT_FLOAT, d))
            elems = [s // 4 for s in sizes]
            if len(elems) == 1:
                parts = [[f] for f in flats]
            else:
                parts = [b.split(f, elems, DT_FLOAT, d) for f, d in zip(flats, devices)]
            red = []
            for k, size in enumerate(elems):
                kw = {"target": devices[targets[k]]} if method == "ps" else {}
                red.append(REDUCERS[method](b, [p[k] for p in parts], devices, size, DT_FLOAT,
                                            1.0 / n, **kw))
            outs = [red[0][i] if len(red) == 1 else b.concat([r[i] for r in red], DT_FLOAT, d)
                    for i, d in enumerate(devices)]
            sums = [b.add("sum", "Sum", [o, b.const_ints("axis", [0], d)], d, T=DT_FLOAT,
                          Tidx=DT_INT32) for o, d in zip(outs, devices)]
            total = b.add("total", "AddN", sums, client, N=n, T=DT_FLOAT)
            vs = variables[nbytes]

            def body():
                g = tf.compat.v1.get_default_graph()
                input_map = {f"{h}:0": g.capture(v.handle) for h, v in zip(handles, vs)}
                return tf.graph_util.import_graph_def(gd, input_map=input_map,
                                                      return_elements=[f"{total}:0"],
                                                      name="sc")[0]
            return tf.function(body).get_concrete_function()

        fns, layouts = {}, {}
        cells: dict[str, list] = {}       # rate -> [(cell key, [(name, fn), ...]), ...]
        for rate in rates:
            for nbytes in payloads:
                lay = layout(n, nbytes, rate)
                layouts[f"{rate}|{nbytes}"] = lay
                named = []
                for m in METHODS:
                    key = (m, nbytes, json.dumps(lay))
                    if key not in fns:
                        fns[key] = build(nbytes, m, *lay)
                    named.append((m, fns[key]))
                cells.setdefault(rate, []).append((f"{rate}|{nbytes}", named))
            for nbytes in (MECH_SMALL, MECH_BIG):
                named = []
                for name, (m, lay) in mechanism_layouts(n, nbytes).items():
                    key = (m, nbytes, json.dumps(lay))
                    if key not in fns:
                        fns[key] = build(nbytes, m, *lay)
                    named.append((name, fns[key]))
                cells[rate].append((f"mech|{rate}|{nbytes}", named))
        bad = []
        for (m, nbytes, _), fn in fns.items():      # warm-up (unshaped) and correctness
            want = n * (nbytes // 4) * (n + 1) / 2
            for _ in range(2):
                got = float(fn().numpy())
            if abs(got - want) > 1e-3 * want:
                bad.append(f"{m} {nbytes}: {got} != {want}")
        setup = time.perf_counter() - t0
        times: dict[str, list[float]] = {}
        rounds_done = 0
        for rnd in range(a.rounds):
            if rnd and time.monotonic() > deadline - a.round_reserve:
                break
            for rate in (rates if rnd % 2 == 0 else rates[::-1]):
                if a.netns:
                    shape(n, rate)
                for cell, named in (cells[rate] if rnd % 2 == 0 else cells[rate][::-1]):
                    pair = list(named[::-1] if rnd % 2 else named)
                    fn0 = pair[0][1]
                    fn0().numpy()                    # one untimed call after a rate change
                    spent = {m: 0.0 for m, _ in pair}
                    k = 0
                    while k < a.max_calls:
                        for m, fn in pair:
                            t = time.perf_counter()
                            fn().numpy()
                            dt = time.perf_counter() - t
                            spent[m] += dt
                            times.setdefault(f"{cell}|{m}", []).append(dt)
                        k += 1
                        if k >= a.min_calls and (min(spent.values()) >= a.cell_seconds
                                                 or time.monotonic() > deadline - 5):
                            break
            rounds_done += 1
        if a.netns:
            shape(n, "unshaped")
        emit({"n": n, "times": times, "bad": bad, "setup_s": setup, "rounds": rounds_done,
              "layouts": layouts})


# ---------------------------------------------------------------------------------------------
# the parent

_netns_used = False


def _teardown() -> None:
    _kill_children()
    if _netns_used:
        netns_cleanup()


def run_child(n: int, a: argparse.Namespace, netns: bool, rates: list[str],
              budget: float, calibrate: bool = False) -> dict:
    cmd = [sys.executable, HERE, "--calibrate" if calibrate else "--child", "--n", str(n),
           "--payloads-kb", a.payloads_kb, "--figures", json.dumps(_FIGURES),
           "--rates", ",".join(rates), "--rounds", str(a.rounds), "--child-budget", str(budget),
           "--min-calls", str(a.min_calls), "--max-calls", str(a.max_calls),
           "--cell-seconds", str(a.cell_seconds)] + (["--netns"] if netns else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    _children.append(p)
    try:
        out, err = p.communicate(timeout=budget + 30)
    except subprocess.TimeoutExpired:
        _kill_children()
        raise RuntimeError(f"N={n}: timed out after {budget + 30:.0f} s")
    finally:
        _kill_children()
    lines = [ln[len(RESULT):] for ln in out.splitlines() if ln.startswith(RESULT)]
    if p.returncode != 0 or not lines:
        tail = "\n".join(err.strip().splitlines()[-12:])
        raise RuntimeError(f"N={n} child failed (exit {p.returncode}):\n{tail}")
    return json.loads(lines[-1])


def _kb(nbytes: int) -> str:
    return f"{nbytes // 2**20} MB" if nbytes >= 2**20 else f"{nbytes // KB} KB"


def main() -> None:
    global _netns_used
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--figures", default="{}")
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--netns", action="store_true")
    ap.add_argument("--child-budget", type=float, default=200.0)
    ap.add_argument("--replicas", default="2,3,4")
    ap.add_argument("--payloads-kb", default="256,1024,4096,16384,65536")
    ap.add_argument("--rates", default="unshaped,1gbit,100mbit")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-calls", type=int, default=2)
    ap.add_argument("--max-calls", type=int, default=25)
    ap.add_argument("--cell-seconds", type=float, default=0.8,
                    help="stop a cell's ABAB calls once each method has used this long")
    ap.add_argument("--round-reserve", type=float, default=60.0)
    ap.add_argument("--tie", type=float, default=0.05,
                    help="|ring - ps| / min below this = a tie (either choice OK)")
    ap.add_argument("--budget", type=float, default=1500.0, help="whole run, seconds")
    ap.add_argument("--rescore", default="", help="report a --save file again (no measuring)")
    ap.add_argument("--save", default="", help="write the calibration and raw times here (JSON)")
    ap.add_argument("--no-netns", action="store_true", help="loopback only, no shaping")
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    if a.calibrate:
        calibrate_child(a)
        return
    if a.rescore:
        saved = json.load(open(a.rescore))
        results = {int(k): v for k, v in saved["results"].items()}
        for rate, c in saved["calibration"].items():
            _FIGURES[rate] = [c["bw"], c["hop_s"]]
        print(f"RESCORED from {a.rescore} (the model was not fitted on a fresh run)")
        report(a, [int(x) for x in a.replicas.split(",")],
               [int(float(p) * KB) for p in a.payloads_kb.split(",")],
               list(saved["calibration"]), results, saved["netns"], saved["calibration"])
        return

    t_start = time.monotonic()
    atexit.register(_teardown)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_teardown(), sys.exit(1)))
    replicas = [int(x) for x in a.replicas.split(",")]
    payloads = [int(float(p) * KB) for p in a.payloads_kb.split(",")]
    rates = a.rates.split(",")
    ncpu = len(_cpus())
    print(f"sync_choice: N {a.replicas}, gradient bytes {', '.join(_kb(p) for p in payloads)} "
          f"(float32, in 256 KB gradients), rates {a.rates}; {a.rounds} round(s); "
          f"{ncpu} cpus, load avg {os.getloadavg()[0]:.2f}", flush=True)

    netns, why = False, ""
    if a.no_netns:
        why = "--no-netns"
    elif os.geteuid() != 0:
        why = "not root"
    elif not (shutil.which("ip") and shutil.which("tc")):
        why = "no ip/tc binary (apt-get install -y iproute2)"
    else:
        _netns_used = True
        left = netns_cleanup()
        if left:
            print(f"removed leftovers of an earlier run: {', '.join(left)}", flush=True)
        try:
            netns_setup(max(replicas))
            shaped = [r for r in rates if r != "unshaped"]
            if shaped:                                  # does the kernel take tbf?
                shape(max(replicas), shaped[0])
                shape(max(replicas), "unshaped")
            netns = True
        except Exception as e:                      # the kernel refused: loopback only
            why = f"namespaces/tc unavailable: {e}"
            netns_cleanup()
            _netns_used = False
    try:
        if not netns:
            rates = ["unshaped"]
            print(f"FALLBACK: {why}; running on 127.0.0.1 loopback, UNSHAPED ONLY", flush=True)
        else:
            print(f"network: namespaces {PREFIX}_w0..{max(replicas) - 1} on bridge {BRIDGE} "
                  f"({SUBNET}.0/24, client {CLIENT_IP}); shaped = tbf on both veth ends",
                  flush=True)
            for rate in rates:
                shape(2, rate)
                pr = tcp_probe(rate)
                shape(2, "unshaped")
                print(f"  raw TCP w0->w1 at {rate:>9}: "
                          + (f"{pr[0] * 8 / 1e6:8.0f} Mbit/s, 1-byte RTT {pr[1] * 1e6:.0f} us"
                             if pr else "probe failed"), flush=True)
        t = time.monotonic()
        cal = run_child(max(replicas), a, netns, rates, 240.0, calibrate=True)["calibration"]
        print(f"calibration ({time.monotonic() - t:.0f} s, {max(replicas)} workers, TF gRPC "
              f"between the workers, before any grid point):", flush=True)
        for rate in rates:
            c = cal[rate]
            _FIGURES[rate] = [c["bw"], c["hop_s"]]
            fan = ", ".join(f"{k}->1 {v / 1e6:.1f}" for k, v in c["fanin"].items()) + \
                "; fan-out: " + ", ".join(f"1->{k} {v / 1e6:.1f}" for k, v in c["fanout"].items())
            print(f"  {rate:>9}: hop (latency) {c['hop_s'] * 1e6:.0f} us, bandwidth "
                  f"{c['bw'] / 1e6:.1f} MB/s; per message {c['message_s'] * 1e6:.0f} us; "
                  f"fan-in aggregate MB/s: {fan}", flush=True)
            print("             per flow with m ring flows at once MB/s: " + ", ".join(
                f"m={k} {v / 1e6:.1f}" for k, v in c["ring_bw"].items()) +
                "; per node in, all-to-all of m: " + ", ".join(
                f"m={k} {v / 1e6:.1f}" for k, v in c["alltoall_bw"].items()), flush=True)
        for rate in rates:
            bw, lat = figures(rate)
            print(f"  cluster for choose_sync at {rate:>9}: default_bandwidth {bw:.3g} B/s, "
                  f"default_latency {lat:.3g} s", flush=True)

        results: dict[int, dict] = {}
        for idx, n in enumerate(replicas):
            left = a.budget - (time.monotonic() - t_start) - 15
            share = left / (len(replicas) - idx)
            if share < 60:
                print(f"  N={n}: SKIPPED (over the {a.budget:.0f} s budget)", flush=True)
                continue
            t = time.monotonic()
            try:
                r = run_child(n, a, netns, rates, share)
            except Exception as e:
                print(f"  N={n}: FAILED: {e}", flush=True)
                continue
            results[n] = r
            print(f"  ran N={n}: {r['rounds']} round(s), setup {r['setup_s']:.0f} s, "
                  f"{time.monotonic() - t:.0f} s"
                  + (f"  WRONG RESULTS {r['bad']}" if r["bad"] else ""), flush=True)
    finally:
        _teardown()
        if netns:
            print(f"network namespaces removed; leftovers: "
                  f"{netns_cleanup() or 'none'}", flush=True)

    if a.save:
        with open(a.save, "w") as f:
            json.dump({"calibration": cal, "results": results, "netns": netns}, f)
    report(a, replicas, payloads, rates, results, netns, cal)
    print(f"total {time.monotonic() - t_start:.0f} s")


def profile_for(c: dict):
    """The calibration's LinkProfile for choose_sync (JSON keys are strings)."""
    from tfplace.sync_cost import LinkProfile
    return LinkProfile(
        message_seconds=float(c["message_s"]),
        ring_bandwidth=tuple(sorted((int(m), float(v)) for m, v in c["ring_bw"].items())),
        alltoall_bandwidth=tuple(sorted((int(m), float(v)) for m, v in c["alltoall_bw"].items())),
        fanin_bandwidth=tuple(sorted((int(k), float(v)) for k, v in c["fanin"].items())),
        fanout_bandwidth=tuple(sorted((int(k), float(v)) for k, v in c.get("fanout", {}).items())))


def mechanism_link_profile(n: int, r: dict, rate: str, c: dict):
    """choose_sync's LinkProfile for N at `rate`: the calibration's message seconds, the N-node
    mechanism bandwidths measured at this rate, and as host figures the same measured unshaped
    (loopback: what the hosts' cores can move). Falls back to the link calibration's patterns
    (profile_for) when the mechanisms were not measured (an older --save file)."""
    from tfplace.sync_cost import LinkProfile

    def pat(m: dict) -> dict:
        return dict(ring_bandwidth=((n, m["ring"]),), alltoall_bandwidth=((n, m["psbal"]),),
                    fanin_bandwidth=((n - 1, m["ps1"]),), fanout_bandwidth=((n - 1, m["ps1"]),))
    mech = mechanism_profile(n, r["times"], rate)
    if mech is None:
        return profile_for(c)
    host = mechanism_profile(n, r["times"], "unshaped")
    return LinkProfile(message_seconds=float(c["message_s"]), **pat(mech),
                       host=LinkProfile(**pat(host)) if host else None)


def report(a, replicas, payloads, rates, results, netns, cal) -> None:
    from tfplace.sync_cost import choose_sync
    print()
    print("mechanism calibration (MB/s, slope between "
          f"{_kb(MECH_SMALL)} and {_kb(MECH_BIG)}, timed in the same rounds as the "
          "grid cells): ring per flow / ps all-to-all per node in / ps single shard in=out")
    for n in replicas:
        r = results.get(n)
        if r is None:
            continue
        row = []
        for rate in rates:
            m = mechanism_profile(n, r["times"], rate)
            row.append(f"{rate} " + ("-" if m is None else "/".join(
                f"{m[k] / 1e6:.0f}" for k in MECHANISMS)))
        print(f"  N={n}: " + ",  ".join(row))
    print()
    print(f"{'N':>2} {'bytes':>7} {'link':>9} {'bkts':>4} {'ps shards':>9} {'ring ms':>9} "
          f"{'ps ms':>9} {'ps/ring':>7} {'faster':>7} {'model ring':>10} {'model ps':>9} "
          f"{'auto':>5} {'':>4} {'plain':>5} {'':>4}")
    hits = strict = ties = total = plain_hits = 0
    misses = []
    for rate in rates:
        for n in replicas:
            r = results.get(n)
            profile = mechanism_link_profile(n, r, rate, cal[rate]) if r else None
            for nb in payloads:
                if r is None:
                    print(f"{n:>2} {_kb(nb):>7} {rate:>9}  (not measured)")
                    continue
                ring_t = r["times"].get(f"{rate}|{nb}|ring")
                ps_t = r["times"].get(f"{rate}|{nb}|ps")
                if not ring_t or not ps_t:
                    print(f"{n:>2} {_kb(nb):>7} {rate:>9}  (not measured: out of time)")
                    continue
                ring_ms = statistics.median(ring_t) * 1e3
                ps_ms = statistics.median(ps_t) * 1e3
                sizes, targets = r["layouts"][f"{rate}|{nb}"]
                # the profile rides on the cluster, as a cluster YAML's link_profile does
                cluster = dataclasses.replace(cluster_for(n, rate), link_profile=profile)
                groups = [[d] for d in cluster.names]
                load = [0] * n
                for s_, t_ in zip(sizes, targets):
                    load[t_] += s_
                # as plan_data_parallel asks it (ps costed on the busiest real shard), plus
                # the bucket count and the link calibration's profile
                dec = choose_sync(groups, cluster, nb, requested="auto",
                                  ps_busiest_bytes=max(load), buckets=len(sizes))
                plain = choose_sync(groups, cluster_for(n, rate), nb, requested="auto",
                                    ps_busiest_bytes=max(load)).method
                costs = dict(dec.costs)
                ratio = ps_ms / ring_ms
                faster = "ring" if ring_ms < ps_ms else "ps"
                tie = max(ratio, 1 / ratio) - 1 < a.tie
                ok_strict = dec.method == faster
                total += 1
                strict += ok_strict
                ties += tie and not ok_strict
                hits += ok_strict or tie
                plain_hits += plain == faster or tie
                verdict = "OK" if ok_strict else ("tie" if tie else "MISS")
                pverdict = "OK" if plain == faster else ("tie" if tie else "MISS")
                if not (ok_strict or tie):
                    misses.append((n, nb, rate, ring_ms, ps_ms, costs, sizes, targets))
                print(f"{n:>2} {_kb(nb):>7} {rate:>9} {len(sizes):>4} {len(set(targets)):>9} "
                      f"{ring_ms:>9.2f} {ps_ms:>9.2f} {ratio:>7.2f} "
                      f"{(faster if not tie else '~' + faster):>7} "
                      f"{costs['ring'] * 1e3:>10.2f} {costs['ps'] * 1e3:>9.2f} {dec.method:>5} "
                      f"{verdict:>4} {plain:>5} {pverdict:>4}")
    print()
    print(f"faster '~x' = medians within the tie band (|ps - ring| / min < {a.tie:.0%}); "
          f"verdict 'tie' = auto chose the other one, which is within {a.tie:.0%}")
    print("bkts = fusion buckets (default_fusion_bytes on the calibrated link); ps shards = "
          "distinct ps targets (greedy least-loaded per bucket over the replicas' devices)")
    print("model ring/ps = choose_sync(groups, cluster, B, ps_busiest_bytes=L, buckets=k, "
          "profile=...): the cluster's bandwidth/latency = the link calibration's hop and "
          "bandwidth; the profile = its message seconds and the N-node mechanism bandwidths "
          "above at this rate, with the unshaped ones as the host figures")
    print("plain = choose_sync's pick without buckets/profile (calibrated bw/lat only), for "
          "comparison")
    if not netns:
        print("NOTE: loopback only - no bandwidth shaping was possible on this machine")
    if total:
        print(f"hit rate: {hits}/{total} = {hits / total:.1%} (target >= 95%): "
              f"{strict} picked the faster median, {ties} tie(s) (auto picked the other one, "
              f"within {a.tie:.0%}), {total - hits} miss(es)")
        print(f"strict (median only, no ties): {strict}/{total} = {strict / total:.1%};  "
              f"plain (no profile): {plain_hits}/{total} = {plain_hits / total:.1%} with ties")
    for n, nb, rate, ring_ms, ps_ms, costs, sizes, targets in misses:
        print(f"MISS N={n} {_kb(nb)} {rate}: measured ring {ring_ms:.2f} ms, ps {ps_ms:.2f} ms; "
              f"model ring {costs['ring'] * 1e3:.2f} ms, ps {costs['ps'] * 1e3:.2f} ms; "
              f"{len(sizes)} bucket(s) on {len(set(targets))} ps shard(s)")


if __name__ == "__main__":
    main()
