"""All-reduce throughput: tfplace's dataflow ring / ps / hierarchical sync vs
tf.distribute.MultiWorkerMirroredStrategy (RING collectives) [vs Horovod, if it is built],
on loopback gRPC workers, float32 payloads of 1, 16 and 64 MB.

    python benchmarks/allreduce.py [--workers 2,4] [--payloads-mb 1,16,64] [--rounds 2]
                                   [--no-2x2] [--timeout 240]

Metric: "algorithm bandwidth" = payload bytes / median seconds per all-reduce (the payload is
the tensor every replica holds; MEAN over replicas, every replica gets the result).

  tfplace <method>  One child process per cluster configuration. It starts W loopback
                    ``tfplace.runtime.worker`` processes (1 intra-op thread each; worker i pinned
                    to core i % ncpu - with 4 workers on 2 cores, workers 0,2 share core 0 and
                    1,3 core 1), connects to them as ``Cluster.launch_local`` does, and creates
                    one float32 variable per device ON that device (value i+1 on replica i; no
                    payload travels from the client). The GraphDef: a resource Placeholder per
                    device (fed with the variable's captured handle, as tfplace's Executor
                    does) -> ReadVariableOp -> flatten -> ``REDUCERS[method](builder, flats,
                    devices, n, DT_FLOAT, 1/R)`` -> Sum on each replica's own device -> AddN of
                    the R scalars on the client, imported with ``tf.graph_util.import_graph_def``
                    into a ``tf.function``; the client receives R scalars per call. Timed: the
                    call plus ``.numpy()`` of that scalar, by the (unpinned) client.
  MWMS              W processes with TF_CONFIG on 127.0.0.1 free ports, worker i pinned to core
                    i % ncpu, 1 intra-op thread; MultiWorkerMirroredStrategy(RING); the same kind
                    of variable (value i+1); in a tf.function:
                    ``strategy.run(lambda: reduce_sum(replica_ctx.all_reduce(MEAN, v)))``
                    (the all-reduce Keras uses for gradients). Each worker times its own calls;
                    the per-call time is the slower worker's; they report via stdout JSON.
  Horovod           ``horovodrun --gloo -np W`` with the same payload and hvd.allreduce(Average),
                    only when ``import horovod.tensorflow`` works in this interpreter.
  2x2 hierarchical  A second tfplace configuration: 2 workers x 2 devices (R = 4 replicas on 2
                    processes): reduce within each worker, ring across, copy back. Its "vs MWMS"
                    column is relative to MWMS on 2 workers (same processes and cores, half the
                    replicas), so read it as an indication only.

Every configuration runs in its own subprocess (group), one after another; each child
interleaves payloads and methods and repeats them ``--rounds`` times in alternating order, so
noise on the shared machine hits every method alike. All children are killed at the end or on
failure. Target: tfplace ring >= 1.0x MWMS throughput for every (workers, payload).
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from _procs import children as _children, free_port as _free_port  # noqa: E402
from _procs import kill_children as _kill_children, pin_process  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.abspath(__file__)
RESULT = "ARBENCH_RESULT "
MB = 1 << 20
METHODS = ("ring", "ps", "hierarchical")


def iters_for(nbytes: int, scale: float) -> int:
    """Timed calls per payload and round: more for small payloads (they are short and noisy)."""
    base = 40 if nbytes <= 2 * MB else 12 if nbytes <= 20 * MB else 6
    return max(3, int(base * scale))


def emit(obj: dict) -> None:
    print(RESULT + json.dumps(obj), flush=True)


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))




# ---------------------------------------------------------------------------------------------
# child: tfplace dataflow all-reduce

def _launch_workers(workers: int, dpw: int):
    """Like Cluster.launch_local, but pins worker i to core i % ncpu even when workers > ncpu."""
    from tfplace.cluster import Task, grpc_cluster
    from tfplace.runtime.devices import prepare
    from tfplace.runtime.launcher import LocalWorkers, _wait_ready
    tasks = tuple(Task("worker", i, f"127.0.0.1:{_free_port()}") for i in range(workers))
    spec = json.dumps({"worker": [t.address for t in tasks]})
    cpus = _cpus()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    procs = [subprocess.Popen([sys.executable, "-m", "tfplace.runtime.worker", "--spec", spec,
                               "--task", str(t.index), "--devices", str(dpw),
                               "--cores", str(cpus[t.index % len(cpus)]),
                               "--parent", str(os.getpid())],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
             for t in tasks]
    handle = LocalWorkers(procs, tasks)
    try:
        _wait_ready(procs, tasks, 90.0)
    except BaseException:
        handle.shutdown()
        raise
    cluster = grpc_cluster(tasks, dpw, launcher=handle)
    prepare(cluster, cluster.names)
    return cluster, handle


def child_tfplace(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    cluster, handle = _launch_workers(a.workers, a.dpw)
    try:
        import tensorflow as tf
        from tfplace.rewrite.allreduce import REDUCERS
        from tfplace.rewrite.nodes import DT_FLOAT, DT_INT32, DT_RESOURCE, NodeBuilder
        devices = list(cluster.names)
        R = len(devices)
        client = "/job:localhost/replica:0/task:0/device:CPU:0"
        payloads = [int(float(p) * MB) for p in a.payloads_mb.split(",")]
        methods = a.methods.split(",")
        variables = {}
        for nbytes in payloads:
            n = nbytes // 4
            vs = []
            for i, d in enumerate(devices):
                with tf.device(d):                 # created on the worker, not shipped
                    vs.append(tf.Variable(tf.fill([n], float(i + 1)), name=f"payload{i}"))
            variables[nbytes] = vs

        def build(nbytes: int, method: str):
            n = nbytes // 4
            gd = tf.compat.v1.GraphDef()
            b = NodeBuilder(gd, "bench")
            handles, flats = [], []
            for i, d in enumerate(devices):
                h = b.add(f"handle{i}", "Placeholder", [], d, dtype=DT_RESOURCE)
                handles.append(h)
                r = b.add(f"read{i}", "ReadVariableOp", [h], d, dtype=DT_FLOAT)
                flats.append(b.flatten(r, DT_FLOAT, d))
            base, _, piece_mb = method.partition("@")
            if not piece_mb:
                outs = REDUCERS[base](b, flats, devices, n, DT_FLOAT, 1.0 / R)
            else:       # diagnostic: the payload in pieces of piece_mb MB, each reduced alone
                per = int(float(piece_mb) * MB) // 4
                sizes = [per] * (n // per) + ([n % per] if n % per else [])
                parts = [b.split(f, sizes, DT_FLOAT, d) for f, d in zip(flats, devices)]
                red = [REDUCERS[base](b, [p[k] for p in parts], devices, size, DT_FLOAT, 1.0 / R)
                       for k, size in enumerate(sizes)]
                outs = [b.concat([r[i] for r in red], DT_FLOAT, d) for i, d in enumerate(devices)]
            sums = [b.add("sum", "Sum", [o, b.const_ints("axis", [0], d)], d, T=DT_FLOAT,
                          Tidx=DT_INT32) for o, d in zip(outs, devices)]
            total = b.add("total", "AddN", sums, client, N=R, T=DT_FLOAT)
            vs = variables[nbytes]

            def body():
                g = tf.compat.v1.get_default_graph()
                input_map = {f"{h}:0": g.capture(v.handle) for h, v in zip(handles, vs)}
                return tf.graph_util.import_graph_def(gd, input_map=input_map,
                                                      return_elements=[f"{total}:0"],
                                                      name="ar")[0]
            fn = tf.function(body).get_concrete_function()
            ops = {}
            for node in gd.node:
                ops[node.op] = ops.get(node.op, 0) + 1
            return fn, ops

        fns, graph_ops = {}, {}
        for nbytes in payloads:
            for m in methods:
                fns[(nbytes, m)], graph_ops[m] = build(nbytes, m)
        expected = {nb: R * (nb // 4) * (R + 1) / 2 for nb in payloads}
        bad = []
        for key, fn in fns.items():                # warm-up and correctness
            for _ in range(2):
                got = float(fn().numpy())
            if abs(got - expected[key[0]]) > 1e-3 * expected[key[0]]:
                bad.append(f"{key}: {got} != {expected[key[0]]}")
        setup = time.perf_counter() - t0
        times: dict[str, list[float]] = {f"{nb}|{m}": [] for nb in payloads for m in methods}
        order = [(nb, m) for nb in payloads for m in methods]
        for rnd in range(a.rounds):
            for nb, m in (order if rnd % 2 == 0 else order[::-1]):
                fn = fns[(nb, m)]
                for _ in range(iters_for(nb, a.iter_scale)):
                    t = time.perf_counter()
                    fn().numpy()
                    times[f"{nb}|{m}"].append(time.perf_counter() - t)
        emit({"times": times, "setup_s": setup, "bad": bad, "graph_ops": graph_ops,
              "devices": devices})
    finally:
        handle.shutdown()


# ---------------------------------------------------------------------------------------------
# child: one MultiWorkerMirroredStrategy worker

def _check_and_time(fns: dict, payloads: list[int], W: int,
                    a: argparse.Namespace) -> tuple[dict[str, list[float]], list[str]]:
    """Check each payload's reduced value twice (warm-up), then time calls, alternating the
    payload order by round. The same for MWMS and Horovod children."""
    bad: list[str] = []
    for nb, fn in fns.items():
        for _ in range(2):
            got = float(fn().numpy())
        want = (nb // 4) * (W + 1) / 2
        if abs(got - want) > 1e-3 * want:
            bad.append(f"{nb}: {got} != {want}")
    times: dict[str, list[float]] = {str(nb): [] for nb in payloads}
    for rnd in range(a.rounds):
        for nb in (payloads if rnd % 2 == 0 else payloads[::-1]):
            for _ in range(iters_for(nb, a.iter_scale)):
                t = time.perf_counter()
                fns[nb]().numpy()
                times[str(nb)].append(time.perf_counter() - t)
    return times, bad


def child_mwms(a: argparse.Namespace) -> None:
    cpus = _cpus()
    os.sched_setaffinity(0, {cpus[a.index % len(cpus)]})
    import tensorflow as tf
    if a.mwms_threads != "default":
        intra, inter = (int(x) for x in a.mwms_threads.split(","))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    comm = tf.distribute.experimental.CommunicationOptions(
        implementation=getattr(tf.distribute.experimental.CommunicationImplementation,
                               a.mwms_impl.upper()))
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
    W = strategy.num_replicas_in_sync
    payloads = [int(float(p) * MB) for p in a.payloads_mb.split(",")]
    fns = {}
    for nbytes in payloads:
        v = tf.Variable(tf.fill([nbytes // 4], float(a.index + 1)))

        def replica_fn(v=v):
            ctx = tf.distribute.get_replica_context()
            return tf.reduce_sum(ctx.all_reduce(tf.distribute.ReduceOp.MEAN, v.read_value()))

        @tf.function
        def step(replica_fn=replica_fn):
            return strategy.experimental_local_results(strategy.run(replica_fn))[0]
        fns[nbytes] = step
    times, bad = _check_and_time(fns, payloads, W, a)
    emit({"times": times, "bad": bad, "index": a.index, "replicas": W})


# ---------------------------------------------------------------------------------------------
# child: one Horovod rank (launched by horovodrun --gloo)

def child_horovod(a: argparse.Namespace) -> None:
    import horovod.tensorflow as hvd
    hvd.init()
    pin_process(hvd.rank())
    import tensorflow as tf
    W = hvd.size()
    payloads = [int(float(p) * MB) for p in a.payloads_mb.split(",")]
    fns = {}
    for nbytes in payloads:
        v = tf.Variable(tf.fill([nbytes // 4], float(hvd.rank() + 1)))

        @tf.function
        def step(v=v):
            return tf.reduce_sum(hvd.allreduce(v.read_value(), op=hvd.Average))
        fns[nbytes] = step
    times, bad = _check_and_time(fns, payloads, W, a)
    emit({"times": times, "bad": bad, "index": hvd.rank(), "replicas": W})


# ---------------------------------------------------------------------------------------------
# the parent



def _spawn(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True,
                         env=dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="2"))
    _children.append(p)
    return p


def _collect(procs: list[subprocess.Popen], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            lines = [ln[ln.index(RESULT) + len(RESULT):] for ln in out.splitlines()
                     if RESULT in ln]
            if p.returncode != 0 or not lines:
                tail = "\n".join(err.strip().splitlines()[-15:])
                raise RuntimeError(f"child {p.args[2:]} failed (exit {p.returncode}):\n{tail}")
            results.extend(json.loads(ln) for ln in lines)
    finally:
        _kill_children()
    return results


def _common(a: argparse.Namespace) -> list[str]:
    return ["--payloads-mb", a.payloads_mb, "--rounds", str(a.rounds),
            "--iter-scale", str(a.iter_scale)]


def run_tfplace(workers: int, dpw: int, methods: list[str], a) -> dict:
    p = _spawn([sys.executable, HERE, "--child", "tfplace", "--workers", str(workers),
                "--dpw", str(dpw), "--methods", ",".join(methods), *_common(a)])
    r = _collect([p], a.timeout)[0]
    return r


def _per_call_max(rs: list[dict]) -> dict[str, list[float]]:
    """Synchronous collectives: a call costs what the slowest rank saw."""
    return {k: [max(ts) for ts in zip(*(r["times"][k] for r in rs))] for k in rs[0]["times"]}


def run_mwms(workers: int, a) -> dict:
    ports = [_free_port() for _ in range(workers)]
    procs = []
    for i in range(workers):
        env = dict(os.environ, TF_CONFIG=json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": i}}))
        procs.append(_spawn([sys.executable, HERE, "--child", "mwms", "--index", str(i),
                             "--mwms-threads", a.mwms_threads, "--mwms-impl", a.mwms_impl,
                             *_common(a)], env=env))
    rs = _collect(procs, a.timeout)
    return {"times": _per_call_max(rs), "bad": sum((r["bad"] for r in rs), [])}


def horovod_status() -> str | None:
    """None when horovod.tensorflow imports here; otherwise why not."""
    r = subprocess.run([sys.executable, "-c", "import horovod.tensorflow"], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or ["import failed"])[-1]
    if not shutil.which("horovodrun") and not os.path.exists(
            os.path.join(os.path.dirname(sys.executable), "horovodrun")):
        return "horovodrun not found next to the interpreter"
    return None


def run_horovod(workers: int, a) -> dict:
    hr = shutil.which("horovodrun") or os.path.join(os.path.dirname(sys.executable), "horovodrun")
    p = _spawn([hr, "--gloo", "-np", str(workers), "-H", f"localhost:{workers}",
                sys.executable, HERE, "--child", "horovod", *_common(a)])
    rs = _collect([p], a.timeout)
    return {"times": _per_call_max(rs), "bad": sum((r["bad"] for r in rs), [])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["tfplace", "mwms", "horovod"])
    ap.add_argument("--workers", default="2,4")
    ap.add_argument("--dpw", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="tfplace methods; 'ring@8' = diagnostic: ring over 8 MB pieces")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--payloads-mb", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iter-scale", type=float, default=1.0,
                    help="multiply the timed calls per payload and round")
    ap.add_argument("--mwms-threads", default="1,2",
                    help="MWMS workers' intra,inter-op threads ('default': TF's choice)")
    ap.add_argument("--mwms-impl", default="ring", choices=["ring", "auto"])
    ap.add_argument("--no-2x2", action="store_true", help="skip the 2 workers x 2 devices runs")
    ap.add_argument("--timeout", type=float, default=240.0, help="per configuration, seconds")
    ap.add_argument("--budget", type=float, default=570.0,
                    help="whole run, seconds: later configurations are skipped past it")
    a = ap.parse_args()
    if a.child:
        a.workers = int(a.workers) if a.child == "tfplace" else 0
        {"tfplace": child_tfplace, "mwms": child_mwms, "horovod": child_horovod}[a.child](a)
        return

    atexit.register(_kill_children)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_kill_children(), sys.exit(1)))

    worker_counts = [int(w) for w in a.workers.split(",")]
    methods = a.methods.split(",")
    payloads = [int(float(p) * MB) for p in a.payloads_mb.split(",")]
    ncpu = len(_cpus())
    hvd_missing = horovod_status()
    print(f"allreduce: float32 payloads {a.payloads_mb} MB, {a.rounds} round(s) alternating "
          f"order, calls per payload and round "
          + "/".join(str(iters_for(nb, a.iter_scale)) for nb in payloads)
          + f"; python {sys.version.split()[0]}, {ncpu} cpus, "
          f"load avg {os.getloadavg()[0]:.2f}", flush=True)
    print(f"pinning: worker i -> core i % {ncpu}"
          + (f" (with {max(worker_counts)} workers, {max(worker_counts) // ncpu} workers share "
             "each core)" if max(worker_counts) > ncpu else "")
          + "; 1 intra-op thread per worker; the tfplace client is not pinned", flush=True)
    t_start = time.perf_counter()
    rows: list[tuple] = []          # (workers label, payload, method, times)
    notes: list[str] = []
    runs = []
    for w in worker_counts:
        runs.append((f"{w}", "tfplace", w, 1))
        runs.append((f"{w}", "mwms", w, 1))
        if hvd_missing is None:
            runs.append((f"{w}", "horovod", w, 1))
    if not a.no_2x2 and 2 in worker_counts:
        runs.append(("2x2", "tfplace", 2, 2))
    results: dict[tuple[str, str], dict] = {}
    for label, kind, w, dpw in runs:
        t = time.perf_counter()
        left = a.budget - (t - t_start)
        if left < 30:
            print(f"  {label} {kind}: SKIPPED (over the {a.budget:.0f} s budget)", flush=True)
            continue
        a.timeout = min(a.timeout, left)
        try:
            if kind == "tfplace":
                r = run_tfplace(w, dpw, methods, a)
                for m, ops in r["graph_ops"].items():
                    if label == f"{w}" and w == worker_counts[0] or label == "2x2":
                        notes.append(f"tfplace {label} {m} graph ops: "
                                     + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))
            elif kind == "mwms":
                r = run_mwms(w, a)
            else:
                r = run_horovod(w, a)
        except Exception as e:               # report and carry on with the other configurations
            print(f"  {label} {kind}: FAILED: {e}", flush=True)
            results[(label, kind)] = {"error": str(e)}
            continue
        results[(label, kind)] = r
        if r["bad"]:
            print(f"  {label} {kind}: WRONG RESULTS {r['bad']}", flush=True)
        print(f"  ran {label} workers {kind} ({time.perf_counter() - t:.0f} s)", flush=True)

    def med(label: str, kind: str, nb: int, method: str | None = None) -> float | None:
        r = results.get((label, kind))
        if not r or "error" in r:
            return None
        key = f"{nb}|{method}" if kind == "tfplace" else str(nb)
        return statistics.median(r["times"][key])

    print()
    print(f"{'workers':<8} {'payload':>8} {'method':<22} {'median ms':>10} {'GB/s':>7} "
          f"{'vs MWMS':>8}")
    verdicts = []
    for label in [str(w) for w in worker_counts] + (["2x2"] if ("2x2", "tfplace") in results
                                                     else []):
        base_label = "2" if label == "2x2" else label
        for nb in payloads:
            ref = med(base_label, "mwms", nb)
            entries = [(f"tfplace {m}", med(label, "tfplace", nb, m)) for m in methods]
            if label != "2x2":
                entries.append(("MWMS ring", ref))
                if hvd_missing is None:
                    entries.append(("horovod gloo", med(label, "horovod", nb)))
            for name, s in entries:
                if s is None:
                    print(f"{label:<8} {nb / MB:>6.0f}MB {name:<22} {'failed':>10}")
                    continue
                ratio = f"{ref / s:>7.2f}x" if ref else "      -"
                print(f"{label:<8} {nb / MB:>6.0f}MB {name:<22} {s * 1e3:>10.2f} "
                      f"{nb / s / 1e9:>7.3f} {ratio}")
            ring = med(label, "tfplace", nb, "ring")
            if label != "2x2":
                ok = ring is not None and ref is not None and ref / ring >= 1.0
                verdicts.append((ok, f"{label} workers {nb / MB:.0f} MB: tfplace ring "
                                     + (f"{ref / ring:.2f}x MWMS" if ring and ref else "n/a")))
        if label != "2x2":
            print()
    if hvd_missing is not None:
        print(f"\nhorovod: not built ({hvd_missing}); skipped")
    if ("2x2", "tfplace") in results:
        print("2x2 = tfplace on 2 workers x 2 devices (4 replicas); 'vs MWMS' is against MWMS on "
              "2 workers (2 replicas), same processes and cores")
    for n in notes:
        print(n)
    print()
    for ok, text in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  target tfplace ring >= 1.0x MWMS: {text}")
    print("ALL PASS" if verdicts and all(ok for ok, _ in verdicts) else
          f"{sum(not ok for ok, _ in verdicts)} of {len(verdicts)} FAIL")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
