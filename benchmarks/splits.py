"""Model-parallel splits: a Megatron-style MLP block split over 2 core-pinned gRPC workers vs the
unsplit block on 1 worker, per hidden width; bytes moved between the workers against the minimum.

    python benchmarks/splits.py [--rounds 2] [--steps 15] [--warmup 3]
                                [--widths 1024,2048,4096,8192] [--batch 128] [--dmodel 512]
                                [--no-plain] [--quick]

The model is one transformer-style MLP block, x[B, d] -> Dense(width, relu) -> Dense(d), trained
on a mean squared error with SGD + momentum. The split run gives the first Dense S(1) (column
split: each worker holds width/2 columns and computes its half of the hidden layer from the whole
input) and the second S(0) (row split: each worker multiplies its hidden half by its rows, giving
a partial sum P of the output), so the only communication the layout needs is one all-reduce of
the [B, d] output in the forward pass; the backward pass needs none (the output gradient is whole on
both workers, every weight gradient is local to its shard, and x has no gradient). This is the
cheapest layout for a split hidden layer (the bytes table shows what the rewrite moves on top of
it): a single S(1) Dense followed by an all-gather moves [B, width] instead of [B, d] and then
runs the second layer unsplit.

  unsplit 1w   launch_local(workers=1), placer="single", no splits
  split 2w     launch_local(workers=2, devices_per_worker=1), splits="<dense_a>:S(1);<dense_b>:S(0)"

Both use writeback="manual" (the default "step" would copy every weight and slot back to the
client after each step; the split and the unsplit run would both be timing that copy). Each
configuration runs in its own subprocess; rounds alternate the order; the table reports the
median over all timed steps of all rounds, and speed-up = unsplit median / split median; "per
round" is the median over rounds of each round's own ratio (the two runs of a round are next to
each other in time, so a load change between rounds cancels), and "CPU ratio" is the unsplit
worker's CPU ms per step over the busier split worker's (what the speed-up would be if each
worker had its core to itself and waited for nothing). The split run's per-step losses are
checked against the unsplit run's (same seed, same data).

Bytes between the workers, per step, three ways:
  measured   TCP payload bytes on the loopback connections whose two ends are the two worker
             processes (``ss -tinp``: tcp_info bytes_sent of each end), before and after the timed
             steps, divided by the steps; this includes gRPC/HTTP2 framing and any control RPCs.
             Client <-> worker bytes are counted the same way and reported apart.
  graph      the rewritten GraphDef: every data edge whose two ends sit on different tasks, at its
             static shape, once per (tensor, destination task), step arguments excepted (the
             client feeds them to each task); plus the plan's all_reduce steps at the ring
             algorithm's 2(n-1)/n T per device (a CollectiveReduceV2 has no edge to count).
  minimum    the SplitPlan's boxing bytes (tfplace.splits.boxing: bytes each device sends,
             all_reduce 2(n-1)/n T) times n devices; from first principles the [B, d] partial sum
             has to cross once each way (2T for n = 2) whatever the algorithm, the same figure.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

from _procs import children as _children  # noqa: E402
from _procs import cpu_seconds, kill_children as _kill_children, pin_process, read_result  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.abspath(__file__)
RESULT = "SPLITBENCH_RESULT "
LOSS_RTOL = 1e-4


# ---------------------------------------------------------------------------------------------
# the model and the step (shared by every child)

def build_step(keras, tf, dmodel: int, width: int):
    """The MLP block, its optimizer and the plain training step; names of the two Dense layers."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((dmodel,))
    up = L.Dense(width, activation="relu", name="mlp_up")
    down = L.Dense(dmodel, name="mlp_down")
    model = keras.Model(inp, down(up(inp)))
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    opt.build(model.trainable_variables)       # slots exist before the first trace

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step, up.name, down.name


def make_data(tf, batch: int, dmodel: int):
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, dmodel)).astype("float32")
    y = rng.standard_normal((batch, dmodel)).astype("float32")
    return tf.constant(x), tf.constant(y)


# ---------------------------------------------------------------------------------------------
# bytes on the loopback connections, from the kernel's tcp_info

_SOCK = re.compile(r"^\S+\s+\d+\s+\d+\s+(\S+)\s+(\S+)\s+.*pid=(\d+),")
_SENT = re.compile(r"\bbytes_sent:(\d+)")


def tcp_sent(pids: set[int]) -> dict[tuple[str, str], tuple[int, int]]:
    """{(local, peer): (pid, bytes_sent)} of every TCP socket one of ``pids`` holds."""
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, check=True).stdout
    socks: dict[tuple[str, str], tuple[int, int]] = {}
    head = None
    for line in out.splitlines():
        if not line[:1].isspace():
            m = _SOCK.match(line)
            head = (m.group(1), m.group(2), int(m.group(3))) if m else None
        elif head is not None and head[2] in pids:
            s = _SENT.search(line)
            socks[(head[0], head[1])] = (head[2], int(s.group(1)) if s else 0)
            head = None
    return socks


def bytes_between(before: dict, after: dict, roles: dict[int, str]) -> dict[str, int]:
    """Bytes sent on each connection between the snapshots, summed by the pair of roles of its
    two ends ("w0-w1", "client-w0", ...); a connection whose peer is not ours is "other"."""
    pid_of = {local: pid for (local, _peer), (pid, _n) in after.items()}
    totals: dict[str, int] = {}
    for (local, peer), (pid, sent) in after.items():
        delta = sent - before.get((local, peer), (pid, 0))[1]
        ends = sorted((roles[pid], roles.get(pid_of.get(peer, -1), "other")))
        key = "-".join(ends)
        totals[key] = totals.get(key, 0) + max(delta, 0)
    return totals


# ---------------------------------------------------------------------------------------------
# bytes the rewritten graph moves between tasks

def _task(device: str) -> str:
    return device.split("/device:")[0]


def _out_bytes(node, index: int) -> int | None:
    """Bytes of a node's output from its _output_shapes and dtype; None when unknown."""
    from tfplace.graphdef_attrs import nbytes, out_dtypes, output_shapes
    shapes = output_shapes(node.attr)
    if index >= len(shapes) or shapes[index] is None or min(shapes[index], default=0) < 0:
        return None
    dtype = out_dtypes(node.op, node.attr, len(shapes))[index]
    return nbytes(shapes[index], dtype, 0)


def graph_bytes(graph_def, split_plan) -> tuple[int, int]:
    """(bytes, edges of unknown size) the rewritten graph moves between tasks per step.

    A data edge counts once per (tensor, destination task): TF sends a tensor once per device
    that reads it. Step arguments (Placeholders) are skipped: the client feeds each task that
    reads one directly. A CollectiveReduceV2 has no edge to count; each all_reduce boxing step
    of the plan counts at the ring algorithm's 2(n-1)/n T per device, times n devices (its
    input's shape is not recorded in the rewritten graph)."""
    nodes = {n.name: n for n in graph_def.node}
    total, unknown, seen = 0, 0, set()
    if any(n.op.startswith("Collective") for n in graph_def.node):
        total += sum(b.bytes for b in split_plan.boxing
                     if b.collective == "all_reduce") * len(split_plan.devices)
    for n in graph_def.node:
        for name in n.input:
            node, _, idx = name.partition(":")
            src = nodes.get(node)
            if (name.startswith("^") or src is None or src.op == "Placeholder"
                    or not src.device or not n.device or _task(src.device) == _task(n.device)
                    or (name, _task(n.device)) in seen):
                continue
            seen.add((name, _task(n.device)))
            t = _out_bytes(src, int(idx or 0))
            if t is None:
                unknown += 1
            else:
                total += t
    return total, unknown


def cross_edges(graph_def, min_bytes: int = 1024) -> list[str]:
    """The cross-task data edges of at least ``min_bytes``: "src (op) -> task, bytes"."""
    nodes = {n.name: n for n in graph_def.node}
    out = set()
    for n in graph_def.node:
        for name in n.input:
            src = nodes.get(name.partition(":")[0])
            if (name.startswith("^") or src is None or src.op == "Placeholder"
                    or _task(src.device) == _task(n.device)):
                continue
            t = _out_bytes(src, int(name.partition(":")[2] or 0)) or 0
            if t >= min_bytes:
                out.add(f"{name} ({src.op}, {_task(src.device)[-6:]} -> "
                        f"{_task(n.device)[-6:]}) {t} B")
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# children

def child(a: argparse.Namespace) -> None:
    import tfplace
    t0 = time.perf_counter()
    cluster = tfplace.Cluster.launch_local(workers=a.workers, devices_per_worker=1)
    try:
        import keras
        import tensorflow as tf
        train_step, up, down = build_step(keras, tf, a.dmodel, a.width)
        kw = {"splits": f"{up}:S(1);{down}:S(0)"} if a.workers > 1 else {}
        step = tfplace.parallelize(train_step, cluster=cluster, placer="single",
                                   writeback="manual", **kw)
        x, y = make_data(tf, a.batch, a.dmodel)
        losses = [float(step(x, y))]                 # traces, plans, rewrites, copies weights
        setup = time.perf_counter() - t0
        for _ in range(a.warmup - 1):
            losses.append(float(step(x, y)))
        workers = [p.pid for p in cluster._launcher.procs]  # noqa: SLF001 - for accounting
        roles = {os.getpid(): "client", **{p: f"w{i}" for i, p in enumerate(workers)}}
        pids = (None, *workers)
        sock0, cpu0 = tcp_sent(set(roles)), [cpu_seconds(p) for p in pids]
        times = []
        for _ in range(a.steps):
            t = time.perf_counter()
            losses.append(float(step(x, y)))
            times.append(time.perf_counter() - t)
        cpu1, sock1 = [cpu_seconds(p) for p in pids], tcp_sent(set(roles))
        moved = bytes_between(sock0, sock1, roles)
        sp = step.plan.splits
        emit({"times": times, "losses": losses, "setup_s": setup,
              "cpu_ms": {r: (c1 - c0) * 1e3 / a.steps
                         for r, c0, c1 in zip(roles.values(), cpu0, cpu1)},
              "tcp_per_step": {k: v / a.steps for k, v in sorted(moved.items())},
              "graph_bytes": graph_bytes(step.executor.graph_def, sp)[0] if sp else 0,
              "graph_unknown": graph_bytes(step.executor.graph_def, sp)[1] if sp else 0,
              "cross_edges": cross_edges(step.executor.graph_def),
              "boxing_bytes": sp.boxing_bytes if sp else 0,
              "group": len(sp.devices) if sp else 1,
              "collectives": sp.collectives() if sp else {},
              "shards": len(step.executor.shards)})
    finally:
        cluster.shutdown()


def child_plain(a: argparse.Namespace) -> None:
    """The same step as a plain tf.function, pinned to one core, one intra-op thread."""
    pin_process(0)
    import keras
    import tensorflow as tf
    train_step, _up, _down = build_step(keras, tf, a.dmodel, a.width)
    x, y = make_data(tf, a.batch, a.dmodel)
    losses = [float(train_step(x, y)) for _ in range(a.warmup)]
    cpu0, times = cpu_seconds(), []
    for _ in range(a.steps):
        t = time.perf_counter()
        losses.append(float(train_step(x, y)))
        times.append(time.perf_counter() - t)
    emit({"times": times, "losses": losses,
          "cpu_ms": {"proc": (cpu_seconds() - cpu0) * 1e3 / a.steps}})


def emit(obj: dict) -> None:
    print(RESULT + json.dumps(obj), flush=True)


# ---------------------------------------------------------------------------------------------
# the parent

def run_config(cfg: dict, width: int, a: argparse.Namespace) -> dict:
    args = ["--child", cfg["kind"], "--workers", str(cfg["workers"]), "--width", str(width),
            "--steps", str(a.steps), "--warmup", str(a.warmup), "--batch", str(a.batch),
            "--dmodel", str(a.dmodel)]
    p = subprocess.Popen([sys.executable, HERE, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    _children.append(p)
    try:
        out, err = p.communicate(timeout=a.timeout)
    finally:
        _kill_children()
    return read_result(p, out, err, RESULT, args)


CONFIGS = [{"name": "unsplit 1w", "kind": "tfplace", "workers": 1},
           {"name": "split 2w", "kind": "tfplace", "workers": 2},
           {"name": "plain 1 core", "kind": "plain", "workers": 1}]


def _kib(n: float) -> str:
    return f"{n / 1024:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["tfplace", "plain"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--widths", default=None, help="default 1024,2048,4096,8192")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--dmodel", type=int, default=512)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-plain", action="store_true", help="skip the plain 1-core diagnostic row")
    ap.add_argument("--quick", action="store_true",
                    help="widths 512,1024 (unless --widths), batch 64, 1 round of 5 steps "
                         "after 2 warm-up")
    ap.add_argument("--timeout", type=float, default=300.0, help="per configuration, seconds")
    a = ap.parse_args()
    if a.child:
        (child if a.child == "tfplace" else child_plain)(a)
        return
    if a.quick:
        a.widths, a.batch, a.rounds, a.steps, a.warmup = a.widths or "512,1024", 64, 1, 5, 2
    a.widths = a.widths or "1024,2048,4096,8192"

    atexit.register(_kill_children)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_kill_children(), sys.exit(1)))

    widths = [int(w) for w in a.widths.split(",") if w]
    configs = [c for c in CONFIGS if not (a.no_plain and c["kind"] == "plain")]
    print(f"splits: MLP block x[{a.batch}, {a.dmodel}] -> Dense(width, relu) -> "
          f"Dense({a.dmodel}), SGD momentum, widths {widths}; {a.steps} timed steps after "
          f"{a.warmup} warm-up, {a.rounds} round(s) alternating order; python "
          f"{sys.version.split()[0]}, {len(os.sched_getaffinity(0))} cpus, load avg "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    runs = [(w, c) for w in widths for c in configs]
    samples: dict[tuple, list[float]] = {(w, c["name"]): [] for w, c in runs}
    res: dict[tuple, list[dict]] = {(w, c["name"]): [] for w, c in runs}
    t_start = time.perf_counter()
    for rnd in range(a.rounds):
        for w, cfg in (runs if rnd % 2 == 0 else runs[::-1]):
            t = time.perf_counter()
            r = run_config(cfg, w, a)
            key = (w, cfg["name"])
            samples[key] += r["times"]
            res[key].append(r)
            tcp = r.get("tcp_per_step", {})
            print(f"  round {rnd + 1} width {w:>5} {cfg['name']:<13} median "
                  f"{statistics.median(r['times']) * 1e3:7.1f} ms  loss {r['losses'][0]:.5f}->"
                  f"{r['losses'][-1]:.5f}  cpu ms/step "
                  + " ".join(f"{k} {v:.0f}" for k, v in r["cpu_ms"].items())
                  + (f"  w0-w1 {_kib(tcp.get('w0-w1', 0))} KiB/step" if cfg["workers"] > 1
                     else "")
                  + f"  ({time.perf_counter() - t:.0f} s, load {os.getloadavg()[0]:.1f})",
                  flush=True)

    print()
    print(f"{'width':>5} {'unsplit 1w ms':>13} {'split 2w ms':>11} {'speed-up':>8} "
          f"{'per round':>9} {'CPU ratio':>9} {'plain 1c ms':>11} {'GFLOP/step':>10}  "
          f"max rel loss diff  "
          f"CPU ms/step: unsplit | split (mean of rounds)")
    all_ok = True
    for w in widths:
        base, split = (statistics.median(samples[(w, n)]) for n in ("unsplit 1w", "split 2w"))
        plain = (f"{statistics.median(samples[(w, 'plain 1 core')]) * 1e3:11.1f}"
                 if not a.no_plain else f"{'-':>11}")
        diffs = [abs(p - q) / max(abs(p), 1e-12)
                 for ru, rs in zip(res[(w, "unsplit 1w")], res[(w, "split 2w")])
                 for p, q in zip(ru["losses"], rs["losses"])]
        all_ok &= max(diffs) <= LOSS_RTOL
        flops = 12 * a.batch * a.dmodel * w / 1e9        # 2 layers x (fwd + 2 bwd) x 2BdW
        per_round = statistics.median(
            statistics.median(ru["times"]) / statistics.median(rs["times"])
            for ru, rs in zip(res[(w, "unsplit 1w")], res[(w, "split 2w")]))
        cpu_ratio = statistics.mean(r["cpu_ms"]["w0"] for r in res[(w, "unsplit 1w")]) / max(
            statistics.mean(r["cpu_ms"][k] for r in res[(w, "split 2w")]) for k in ("w0", "w1"))
        cpu = [" ".join(f"{k} {statistics.mean(r['cpu_ms'][k] for r in res[(w, n)]):.0f}"
                        for k in res[(w, n)][0]["cpu_ms"]) for n in ("unsplit 1w", "split 2w")]
        print(f"{w:>5} {base * 1e3:13.1f} {split * 1e3:11.1f} {base / split:7.2f}x "
              f"{per_round:8.2f}x "
              f"{cpu_ratio:8.2f}x {plain} "
              f"{flops:10.2f}  {max(diffs):.1e}{'' if max(diffs) <= LOSS_RTOL else ' FAIL':5}"
              f"       {cpu[0]} | {cpu[1]}")

    print()
    print("bytes per step between the two workers, KiB (split group n = 2; min = the plan's "
          "boxing bytes x n):")
    print(f"{'width':>5} {'TCP w0<->w1':>11} {'graph':>7} {'min':>7} {'TCP/min':>7} "
          f"{'graph/min':>9}  {'TCP client<->workers':>20} {'(1w)':>7}  plan's boxing")
    for w in widths:
        rs = res[(w, "split 2w")]
        ww = statistics.median(r["tcp_per_step"].get("w0-w1", 0) for r in rs)
        cw, c1 = (statistics.median(sum(v for k, v in r["tcp_per_step"].items() if "client" in k)
                                    for r in res[(w, n)]) for n in ("split 2w", "unsplit 1w"))
        minimum, graph = rs[0]["boxing_bytes"] * rs[0]["group"], rs[0]["graph_bytes"]
        unknown = f" (+{rs[0]['graph_unknown']} edges of unknown size)" \
            if rs[0]["graph_unknown"] else ""
        print(f"{w:>5} {_kib(ww):>11} {_kib(graph):>7} {_kib(minimum):>7} "
              f"{ww / minimum if minimum else float('nan'):6.2f}x "
              f"{graph / minimum if minimum else float('nan'):8.2f}x  {_kib(cw):>20} "
              f"{_kib(c1):>7}  {rs[0]['collectives']}{unknown}")
    t = a.batch * a.dmodel * 4
    print(f"T = the [B, d] output = {_kib(t)} KiB; the one all-reduce's minimum is 2(n-1)/n T per "
          f"device x n = {_kib(2 * t)} KiB per step. Cross-task data edges >= 1 KiB of the "
          f"rewritten graph (width {widths[-1]}), besides the collective:")
    for e in res[(widths[-1], "split 2w")][0]["cross_edges"]:
        print(f"  {e}")
    print(f"{'PASS' if all_ok else 'FAIL'}  split losses match the unsplit run's within "
          f"{LOSS_RTOL:g} relative at every step")
    print(f"total {time.perf_counter() - t_start:.0f} s, load avg "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
