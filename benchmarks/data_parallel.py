"""Data-parallel training throughput: a real CNN on 1 worker vs 2 core-pinned workers (tfplace)
vs tf.distribute.MultiWorkerMirroredStrategy on the same 2 core-pinned workers.

    python benchmarks/data_parallel.py [--blocks 16] [--block-steps 10] [--warmup 10] [--batch 64]
                                       [--sequential [--rounds 2] [--steps 40]]
                                       [--syncs ring,auto,ps] [--no-diagnostics] [--no-horovod]

Every configuration runs in its own subprocesses (a process can connect to only one gRPC cluster).
By default they are all set up at once and then timed interleaved (``_blocks``): ``--blocks``
blocks of ``--block-steps`` steps per configuration, taken in turn in alternating order, so
that every configuration meets the VM's drifting speed in the same minutes; the table reports the
median over all timed steps, and the ratios are also given paired block by block. The Horovod
row is timed alone afterwards (its idle ranks poll). ``--sequential`` is the older method: one
configuration after another in fresh processes, ``--rounds`` times. Weak scaling (as Horovod measures):
each worker gets ``--batch`` examples, so the global batch is workers x batch.

  tfplace 1w      launch_local(workers=1), placer="single", global batch = batch
  tfplace 2w      launch_local(workers=2), data_parallel=2, sync=ring|auto|ps, global batch 2 x batch
  MWMS 2w         2 processes, each pinned to its own core (intra-op threads 1), TF_CONFIG on
                  127.0.0.1, MultiWorkerMirroredStrategy with RING collectives; each reports its
                  median step time and the parent computes examples/s from the slower one
  tfplace horovod ``horovodrun --gloo -np 2``, each rank pinned and threaded like an MWMS worker,
                  the same step through tfplace.parallelize(sync_backend="horovod",
                  cluster=Cluster.local(1)); every rank is given the global batch and trains
                  its half (only when Horovod is built: `make horovod`); timed like MWMS
  tfplace 2w auto io2  (--interop2) as tfplace 2w auto, with TF_NUM_INTEROP_THREADS=2 for the
                  client's eager context on each worker (1 thread by default on a pinned core)
  plain 1 core    (diagnostic) the same step as a plain tf.function in one process pinned to one
                  core: the compute floor a worker can reach

The tfplace client process (the one that calls the step and receives the loss and, with
writeback="step", the variables) is not pinned and its CPU use is part of the cost. With
``--input worker`` (the default) each tfplace worker reads its replica's rows of the batch itself,
inside the step (``step.prefetch`` of a ``tf.data`` dataset of the batch, rebuilt on each worker),
as each MWMS worker reads its local batch; ``--input client`` passes the global batch from the
client at every step (the client then serves each worker's rows over gRPC).

Targets: tfplace 2w (ring) >= 1.7x tfplace 1w;  tfplace 2w (ring) >= 1.0x MWMS 2w.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from _procs import children as _children, free_port as _free_port  # noqa: E402
from _procs import cpu_seconds, kill_children as _kill_children, pin_process, read_result  # noqa: E402
from _blocks import Group, fifo, interleave, serve, spawn  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.abspath(__file__)
RESULT = "DPBENCH_RESULT "


# ---------------------------------------------------------------------------------------------
# the model and the step (shared by every child)

def build_model(keras, width: int = 16):
    """VGG-ish: strided stem to 16x16, three double-conv blocks, dense head (~143k params)."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((32, 32, 3))
    h = L.Conv2D(width, 3, strides=2, padding="same", activation="relu")(inp)
    for f in (width, 2 * width, 4 * width):
        h = L.Conv2D(f, 3, padding="same", activation="relu")(h)
        h = L.Conv2D(f, 3, padding="same", activation="relu")(h)
        h = L.MaxPooling2D(2)(h)
    h = L.Flatten()(h)
    h = L.Dense(256, activation="relu")(h)
    out = L.Dense(10)(h)
    return keras.Model(inp, out)


def make_data(tf, batch: int, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((batch, 32, 32, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=(batch,)).astype("int32"))
    return x, y


def timed(call, steps: int, warmup: int, pids: tuple = (), per_call: int = 1
          ) -> tuple[list[float], list[float], list[float]]:
    """Step times, losses, and CPU ms per timed step of this process and of each of ``pids``.
    ``call`` runs ``per_call`` steps and returns the last loss; each of its steps is counted
    at the call's time / per_call, and ``steps`` is rounded up to whole calls."""
    losses = []
    for _ in range(-(-warmup // per_call)):
        losses.append(float(call()))
    times = []
    calls = -(-steps // per_call)
    cpu0 = [cpu_seconds()] + [cpu_seconds(p) for p in pids]
    for _ in range(calls):
        t = time.perf_counter()
        losses.append(float(call()))
        times += [(time.perf_counter() - t) / per_call] * per_call
    cpu1 = [cpu_seconds()] + [cpu_seconds(p) for p in pids]
    return times, losses, [(b - a) * 1e3 / len(times) for a, b in zip(cpu0, cpu1)]


def emit(obj: dict) -> None:
    print(RESULT + json.dumps(obj), flush=True)


def measure(a: argparse.Namespace, call, pids: tuple = (), index: int = 0
            ) -> tuple[list[float], list[float], list[float]]:
    """``timed`` over --steps; with --control (interleaved), warm up and then time the blocks of
    steps the parent asks for, until it says stop: all blocks' step times, the losses, and the
    CPU ms per step of this process and of ``pids`` over the blocks."""
    k = a.steps_per_execution
    if not a.control:
        return timed(call, a.steps, a.warmup, pids, per_call=k)
    losses = [float(call()) for _ in range(-(-a.warmup // k))]

    def block(n: int) -> dict:
        times, more, cpu = timed(call, n, 0, pids, per_call=k)
        losses.extend(more)
        return {"times": times, "cpu_ms": cpu, "index": index}

    control = a.control if a.child != "horovod" else f"{a.control}.{index}"
    blocks = serve(control, block, emit, [os.getpid(), *pids])
    times = [t for b in blocks for t in b["times"]]
    cpu = [sum(b["cpu_ms"][k] * len(b["times"]) for b in blocks) / max(1, len(times))
           for k in range(1 + len(pids))]
    return times, losses, cpu


# ---------------------------------------------------------------------------------------------
# children

def child_tfplace(a: argparse.Namespace) -> None:
    import tfplace
    t0 = time.perf_counter()
    cluster = tfplace.Cluster.launch_local(workers=a.workers, devices_per_worker=1)
    try:
        import keras
        import tensorflow as tf
        model = build_model(keras)
        opt = keras.optimizers.SGD(0.01, momentum=0.9)
        if a.build_optimizer:     # optimizer slots exist before the first trace
            opt.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        kw = {"data_parallel": a.workers, "sync": a.sync} if a.workers > 1 else {}
        step = tfplace.parallelize(train_step, cluster=cluster, placer="single",
                                   writeback=a.writeback, **kw)
        x, y = make_data(tf, a.batch * a.workers)         # global batch, made on the client
        step(x, y)
        k = a.steps_per_execution
        if a.input == "worker":   # each worker reads its replica's rows itself, in the step
            batches = step.prefetch(tf.data.Dataset.from_tensors((x, y)).repeat())
            call = (lambda: step(*next(batches)).numpy()) if k == 1 else \
                (lambda: step.run(itertools.islice(batches, k), steps_per_execution=k)[-1]
                 .numpy())
        else:                     # the global batch passed from the client at every step
            call = (lambda: step(x, y).numpy()) if k == 1 else \
                (lambda: step.run([(x, y)] * k, steps_per_execution=k)[-1].numpy())
        setup = time.perf_counter() - t0
        pids = tuple(p.pid for p in cluster._launcher.procs)  # noqa: SLF001 - for CPU accounting
        times, losses, cpu = measure(a, call, pids)
        plan = step.plan
        sync = plan.sync
        emit({"times": times, "first_loss": losses[0], "last_loss": losses[-1],
              "global_batch": a.batch * a.workers, "setup_s": setup,
              "synced_gradients": sum(len(b.gradients) for b in step.plan.buckets),
              "synced_bytes": sum(b.bytes for b in step.plan.buckets),
              "cpu_ms": {"client": cpu[0], **{f"w{i}": c for i, c in enumerate(cpu[1:])}},
              "sync_method": sync.method if sync else None,
              "reason": sync.reason if sync else None,
              "moved_variables": step.executor.moved_variables})
    finally:
        cluster.shutdown()


def child_plain(a: argparse.Namespace) -> None:
    pin_process(0)
    import keras
    import tensorflow as tf
    model = build_model(keras)
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_steps(x, y):
        for _ in range(a.steps_per_execution):
            loss = train_step(x, y)
        return loss

    x, y = make_data(tf, a.batch)
    times, losses, cpu = measure(a, lambda: train_steps(x, y).numpy())
    emit({"times": times, "first_loss": losses[0], "last_loss": losses[-1],
          "global_batch": a.batch, "cpu_ms": {"proc": cpu[0]}})


def child_mwms(a: argparse.Namespace) -> None:
    """One MWMS worker: pinned to core ``index``, one intra-op thread (like tfplace's workers)."""
    pin_process(a.index)
    import keras
    import tensorflow as tf
    comm = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
    n = strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_model(keras)
        opt = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="none")
    global_batch = a.batch * n

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            per_example = loss_fn(y, model(x, training=True))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))   # Keras all-reduces (sum)
        return loss

    @tf.function
    def train_step(x, y):
        # --steps-per-execution K: K steps in one call, as Keras' steps_per_execution does
        for _ in range(a.steps_per_execution):
            per_replica = strategy.run(replica_step, args=(x, y))
            loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return loss

    # each worker its own shard of the global batch (worker i gets rows i*B:(i+1)*B)
    gx, gy = make_data(tf, global_batch)
    x, y = gx[a.index * a.batch:(a.index + 1) * a.batch], gy[a.index * a.batch:(a.index + 1) * a.batch]
    times, losses, cpu = measure(a, lambda: train_step(x, y).numpy(), index=a.index)
    checksum = float(sum(tf.reduce_sum(tf.cast(v, tf.float64)).numpy()
                         for v in model.trainable_variables))
    emit({"times": times, "first_loss": losses[0], "last_loss": losses[-1],
          "global_batch": global_batch, "checksum": checksum, "index": a.index,
          "cpu_ms": cpu[0]})


def child_horovod(a: argparse.Namespace) -> None:
    """One Horovod rank: pinned to core ``rank``, one intra-op thread (like an MWMS worker)."""
    rank = int(os.environ.get("HOROVOD_RANK", "0"))
    pin_process(rank)
    import keras
    import tensorflow as tf
    import tfplace
    cluster = tfplace.Cluster.local(1)
    model = build_model(keras)
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    step = tfplace.parallelize(train_step, cluster=cluster, placer="single",
                               data_parallel="auto", sync_backend="horovod")
    n = step.data_parallel
    x, y = make_data(tf, a.batch * n)                     # the global batch, on every rank
    k = a.steps_per_execution
    times, losses, cpu = measure(a, (lambda: step(x, y).numpy()) if k == 1 else
                                 (lambda: step.run([(x, y)] * k, steps_per_execution=k)[-1]
                                  .numpy()), index=rank)
    checksum = float(sum(tf.reduce_sum(tf.cast(v, tf.float64)).numpy()
                         for v in model.trainable_variables))
    emit({"times": times, "first_loss": losses[0], "last_loss": losses[-1],
          "global_batch": a.batch * n, "checksum": checksum, "index": rank, "cpu_ms": cpu[0]})


# ---------------------------------------------------------------------------------------------
# the parent

@functools.lru_cache(maxsize=None)
def horovodrun() -> str | None:
    """horovodrun beside this interpreter, when ``import horovod.tensorflow`` works here."""
    path = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    ok = subprocess.run([sys.executable, "-c", "import horovod.tensorflow"],
                        capture_output=True).returncode == 0
    return path if ok and os.path.exists(path) else None



def _spawn(args: list[str], env: dict | None = None) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, HERE, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="2"))
    _children.append(p)
    return p


def _collect(procs: list[subprocess.Popen], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(read_result(p, out, err, RESULT, p.args[2:]))
    finally:
        _kill_children()
    return results




def _collect_horovod(common: list[str], timeout: float) -> list[dict]:
    """Both ranks' results from one ``horovodrun --gloo -np 2`` of the horovod child."""
    p = subprocess.Popen([horovodrun(), "--gloo", "-np", "2", "-H", "localhost:2",
                          sys.executable, HERE, "--child", "horovod", *common],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    _children.append(p)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        _kill_children()
    rs = [json.loads(ln.split(RESULT, 1)[1]) for ln in out.splitlines() if RESULT in ln]
    if p.returncode != 0 or len(rs) != 2:
        tail = "\n".join((out + err).strip().splitlines()[-15:])
        raise RuntimeError(f"horovodrun failed (exit {p.returncode}):\n{tail}")
    return sorted(rs, key=lambda r: r["index"])


def run_config(cfg: dict, a: argparse.Namespace) -> dict:
    common = ["--steps", str(a.steps), "--warmup", str(a.warmup), "--batch", str(a.batch),
              "--steps-per-execution", str(cfg.get("k", 1))]
    if cfg["kind"] == "tfplace":
        p = _spawn(["--child", "tfplace", "--workers", str(cfg["workers"]), "--sync",
                    cfg.get("sync", "ring"), "--writeback", cfg.get("writeback", "step"),
                    "--input", a.input, *common],
                   env=dict(os.environ, **cfg.get("env", {})))
        r = _collect([p], a.timeout)[0]
        return {**r, "step_s": r["times"]}
    if cfg["kind"] == "plain":
        r = _collect([_spawn(["--child", "plain", *common])], a.timeout)[0]
        return {**r, "step_s": r["times"]}
    if cfg["kind"] == "horovod":
        rs = _collect_horovod(common, a.timeout)
    else:
        ports = [_free_port() for _ in range(2)]
        procs = []
        for i in range(2):
            env = dict(os.environ, TF_CONFIG=json.dumps({
                "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                "task": {"type": "worker", "index": i}}))
            procs.append(_spawn(["--child", "mwms", "--index", str(i), *common], env=env))
        rs = _collect(procs, a.timeout)
    # synchronous steps: the throughput is set by the slower worker's step, per step
    step_s = [max(ts) for ts in zip(*(r["times"] for r in rs))]
    c0, c1 = rs[0]["checksum"], rs[1]["checksum"]
    return {**rs[0], "step_s": step_s, "cpu_ms": {f"w{r['index']}": r["cpu_ms"] for r in rs},
            "workers_agree": abs(c0 - c1) <= 1e-6 * max(1.0, abs(c0)),
            "checksums": [c0, c1]}


def run_sequential(configs: list[dict], a: argparse.Namespace, t_start: float
                   ) -> tuple[dict, dict, dict]:
    """Each configuration in fresh processes, one after another, --rounds times."""
    samples: dict[str, list[float]] = {c["name"]: [] for c in configs}
    extra: dict[str, dict] = {}
    cpu_rounds: dict[str, list[dict]] = {c["name"]: [] for c in configs}
    for rnd in range(a.rounds):
        spent = time.perf_counter() - t_start
        if rnd and spent / rnd * (rnd + 1) > a.budget:
            print(f"  (stopping after {rnd} round(s): another would pass --budget {a.budget:.0f} s)")
            break
        order = configs if rnd % 2 == 0 else configs[::-1]
        for cfg in order:
            t = time.perf_counter()
            r = run_config(cfg, a)
            samples[cfg["name"]] += r["step_s"]
            extra[cfg["name"]] = r
            cpu_rounds[cfg["name"]].append(r["cpu_ms"])
            med = statistics.median(r["step_s"])
            print(f"  round {rnd + 1} {cfg['name']:<28} median step {med * 1e3:7.1f} ms  "
                  f"{r['global_batch'] / med:8.0f} ex/s  loss {r['first_loss']:.3f}->"
                  f"{r['last_loss']:.3f}  cpu ms/step "
                  + " ".join(f"{k} {v:.0f}" for k, v in r["cpu_ms"].items())
                  + f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    return samples, extra, cpu_rounds


def start_group(cfg: dict, a: argparse.Namespace, directory: str) -> Group:
    """The configuration's processes, set up and warmed up, waiting for blocks (--control)."""
    common = ["--warmup", str(a.warmup), "--batch", str(a.batch),
              "--steps-per-execution", str(cfg.get("k", 1))]
    label = cfg["name"].replace(" ", "_")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if cfg["kind"] in ("tfplace", "plain"):
        ctl = fifo(directory, label)
        args = ["--child", cfg["kind"], "--control", ctl, *common]
        if cfg["kind"] == "tfplace":
            args += ["--workers", str(cfg["workers"]), "--sync", cfg.get("sync", "ring"),
                     "--writeback", cfg.get("writeback", "step"), "--input", a.input]
        p, err = spawn([sys.executable, HERE, *args], dict(env, **cfg.get("env", {})),
                       _children, directory, label)
        return Group(cfg["name"], [p], [ctl], 1, RESULT, [err])
    if cfg["kind"] == "horovod":
        base = os.path.join(directory, label)
        ctls = [fifo(directory, f"{label}.{r}") for r in range(2)]
        p, err = spawn([horovodrun(), "--gloo", "-np", "2", "-H", "localhost:2", sys.executable,
                        HERE, "--child", "horovod", "--control", base, *common], env, _children,
                       directory, label)
        return Group(cfg["name"], [p], ctls, 2, RESULT, [err])
    ports = [_free_port() for _ in range(2)]
    procs, ctls, errs = [], [], []
    for i in range(2):
        ctls.append(fifo(directory, f"{label}.{i}"))
        wenv = dict(env, TF_CONFIG=json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": i}}))
        p, err = spawn([sys.executable, HERE, "--child", "mwms", "--index", str(i), "--control",
                        ctls[-1], *common], wenv, _children, directory, f"{label}.{i}")
        procs.append(p)
        errs.append(err)
    return Group(cfg["name"], procs, ctls, 2, RESULT, errs)


def _block_steps(rs: list[dict]) -> list[float]:
    """A block's step times: one process's, or per step the slower rank's (synchronous)."""
    return rs[0]["times"] if len(rs) == 1 else [max(ts) for ts in zip(*(r["times"] for r in rs))]


def _cpu_names(cfg: dict, rs: list[dict]) -> dict[str, float]:
    if len(rs) == 1:
        names = ["client"] + [f"w{i}" for i in range(len(rs[0]["cpu_ms"]) - 1)]
        if cfg["kind"] == "plain":
            names = ["proc"]
        return dict(zip(names, rs[0]["cpu_ms"]))
    return {f"w{r['index']}": r["cpu_ms"][0] for r in rs}


def run_interleaved(configs: list[dict], a: argparse.Namespace) -> tuple[dict, dict, dict, dict]:
    """Every configuration set up at once, then --blocks rounds of --block-steps timed steps per
    configuration, in turn (alternating order). Returns per config: step times, final result,
    CPU ms per step by process (one dict: the mean over blocks), and per-block medians."""
    runs, finals = interleave(
        [(cfg["name"], lambda d, cfg=cfg: start_group(cfg, a, d)) for cfg in configs],
        blocks=a.blocks, block_steps=a.block_steps, timeout=a.timeout, children=_children,
        kill=_kill_children, cpu_seconds=cpu_seconds, width=28)
    samples, cpu, block_medians, extra = {}, {}, {}, {}
    for cfg in configs:
        n = cfg["name"]
        steps = [_block_steps(rs) for rs in runs[n]]
        samples[n] = [t for block in steps for t in block]
        block_medians[n] = [statistics.median(block) for block in steps]
        rows = [_cpu_names(cfg, rs) for rs in runs[n]]
        cpu[n] = [{k: statistics.mean(row[k] for row in rows) for k in rows[0]}]
        r = dict(finals[n][0])
        if len(finals[n]) == 2:
            c0, c1 = finals[n][0]["checksum"], finals[n][1]["checksum"]
            r.update(workers_agree=abs(c0 - c1) <= 1e-6 * max(1.0, abs(c0)), checksums=[c0, c1])
        extra[n] = r
        print(f"  {n:<28} block medians (ms): "
              + " ".join(f"{m * 1e3:.0f}" for m in block_medians[n]), flush=True)
    return samples, extra, cpu, block_medians


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["tfplace", "mwms", "plain", "horovod"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--sync", default="ring")
    ap.add_argument("--writeback", default="step", choices=["step", "manual"])
    ap.add_argument("--input", default="worker", choices=["worker", "client"],
                    help="tfplace rows: each worker reads its replica's rows of the batch "
                         "itself, inside the step (step.prefetch of a dataset, as MWMS's "
                         "workers read their local batch), or the client passes the global "
                         "batch at every step (client)")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--build-optimizer", action="store_true",
                    help="tfplace child: build the optimizer's slots before the first trace")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per round (--sequential)")
    ap.add_argument("--sequential", action="store_true",
                    help="the older method: each configuration in turn for --rounds rounds of "
                         "--steps steps in fresh processes, instead of interleaved blocks")
    ap.add_argument("--blocks", type=int, default=16,
                    help="interleaved: blocks of --block-steps steps per configuration")
    ap.add_argument("--block-steps", type=int, default=10)
    ap.add_argument("--control", help=argparse.SUPPRESS)
    ap.add_argument("--steps-per-execution", default="1",
                    help="steps per call, a comma list (each K its own rows): tfplace's "
                         "step.run(steps_per_execution=K), K strategy.run steps in one "
                         "tf.function for MWMS, K steps in one tf.function for plain")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="per-worker batch")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--syncs", default="ring,auto,ps", help="tfplace 2-worker sync methods")
    ap.add_argument("--interop2", action="store_true",
                    help="also 'tfplace 2w auto io2': the workers' eager inter-op pool at 2 "
                         "threads (TF_NUM_INTEROP_THREADS=2) instead of 1 on a pinned core")
    ap.add_argument("--no-horovod", action="store_true",
                    help="skip the tfplace sync_backend='horovod' row (run when Horovod is built)")
    ap.add_argument("--no-diagnostics", action="store_true",
                    help="skip the plain 1-core and writeback='manual' rows")
    ap.add_argument("--timeout", type=float, default=150.0, help="per configuration, seconds")
    ap.add_argument("--budget", type=float, default=540.0,
                    help="start another round only if it should end within this many seconds")
    a = ap.parse_args()
    if a.child:
        a.steps_per_execution = int(a.steps_per_execution)
        {"tfplace": child_tfplace, "mwms": child_mwms, "plain": child_plain,
         "horovod": child_horovod}[a.child](a)
        return

    atexit.register(_kill_children)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_kill_children(), sys.exit(1)))

    syncs = [s for s in a.syncs.split(",") if s]
    ks = [int(k) for k in str(a.steps_per_execution).split(",") if k]
    configs: list[dict] = []
    for k in ks:
        sfx = f" K={k}" if ks != [1] else ""
        configs += [{"name": f"tfplace 1w{sfx}", "kind": "tfplace", "workers": 1, "k": k}]
        configs += [{"name": f"tfplace 2w {s}{sfx}", "kind": "tfplace", "workers": 2, "sync": s,
                     "k": k} for s in syncs]
        if a.interop2:
            configs += [{"name": f"tfplace 2w auto io2{sfx}", "kind": "tfplace", "workers": 2,
                         "sync": "auto", "env": {"TF_NUM_INTEROP_THREADS": "2"}, "k": k}]
        configs += [{"name": f"MWMS 2w ring{sfx}", "kind": "mwms", "k": k}]
        if not a.no_horovod and horovodrun():
            configs += [{"name": f"tfplace horovod 2 ranks{sfx}", "kind": "horovod", "k": k}]
    if not a.no_diagnostics:
        configs += [{"name": "tfplace 1w manual-wb", "kind": "tfplace", "workers": 1,
                     "writeback": "manual"},
                    {"name": "tfplace 2w ring manual-wb", "kind": "tfplace", "workers": 2,
                     "sync": "ring", "writeback": "manual"},
                    {"name": "plain 1 core (no tfplace)", "kind": "plain"}]
    load = os.getloadavg()[0]
    how = (f"{a.steps} timed steps after {a.warmup} warm-up, {a.rounds} round(s) alternating "
           "order" if a.sequential else
           f"{a.warmup} warm-up steps, then {a.blocks} blocks of {a.block_steps} timed steps per "
           "configuration, interleaved")
    print(f"data_parallel: CNN {{width 16, ~143k params}}, per-worker batch {a.batch}, {how}, "
          f"steps per call K in {ks}; tfplace input read "
          + ("by each worker in the step" if a.input == "worker" else "from the client")
          + "; "
          f"python {sys.version.split()[0]}, {len(os.sched_getaffinity(0))} cpus, "
          f"load avg {load:.2f}", flush=True)
    t_start = time.perf_counter()
    blocks: dict[str, list[float]] = {}
    if a.sequential:
        samples, extra, cpu_rounds = run_sequential(configs, a, t_start)
    else:
        # Horovod's idle ranks poll (about 230 ms of CPU per second, measured here): they
        # would slow whatever runs beside them, so that row is timed alone, afterwards
        polls = [c for c in configs if c["kind"] == "horovod"]
        samples, extra, cpu_rounds, blocks = run_interleaved(
            [c for c in configs if c not in polls], a)
        if polls:
            print(f"  {', '.join(c['name'] for c in polls)}: timed alone afterwards, "
                  f"{a.rounds} round(s) of {a.steps} steps (its idle ranks poll)", flush=True)
            more = run_sequential(polls, a, time.perf_counter())
            for into, part in zip((samples, extra, cpu_rounds), more):
                into.update(part)

    def eps(name: str) -> float:
        return extra[name]["global_batch"] / statistics.median(samples[name])

    sfxs = {k: (f" K={k}" if ks != [1] else "") for k in ks}
    base = eps(f"tfplace 1w{sfxs[ks[0]]}")
    peers = [f"MWMS 2w ring{sfxs[k]}" for k in ks]
    best_peer = max(peers, key=eps)
    mwms = eps(best_peer)
    print()
    print(f"{'config':<28} {'global batch':>12} {'step ms':>8} {'examples/s':>11} "
          f"{'vs 1w':>6} {'vs MWMS':>8}  CPU ms/step by process (mean of "
          f"{'rounds' if a.sequential else 'blocks'})")
    for cfg in configs:
        n = cfg["name"]
        print(f"{n:<28} {extra[n]['global_batch']:>12} "
              f"{statistics.median(samples[n]) * 1e3:>8.1f} {eps(n):>11.0f} "
              f"{eps(n) / base:>5.2f}x {eps(n) / mwms:>7.2f}x  "
              + " ".join(f"{c_k} {statistics.mean(c[c_k] for c in cpu_rounds[n]):.0f}"
                         for c_k in cpu_rounds[n][0]))
    print(f"(vs 1w: against {configs[0]['name']}; vs MWMS: against the faster MWMS row, "
          f"{best_peer})")
    print()
    for s in syncs:
        r = extra[f"tfplace 2w {s}{sfxs[ks[0]]}"]
        print(f"tfplace 2w sync={s!r}: plan chose {r['sync_method']}; reason: {r['reason']}")
    for name in [*peers, *(f"tfplace horovod 2 ranks{sfxs[k]}" for k in ks)]:
        if name in extra:
            m = extra[name]
            print(f"{name}: ranks' weights agree after training: {m['workers_agree']} "
                  f"(checksums {m['checksums'][0]:.6f}, {m['checksums'][1]:.6f})")
    tested = "ring" if "ring" in syncs else syncs[0]

    def paired(num: str, den: str) -> str:
        rs = [(extra[num]["global_batch"] / x) / (extra[den]["global_batch"] / y)
              for x, y in zip(blocks[num], blocks[den])]
        q = statistics.quantiles(rs, n=4) if len(rs) > 1 else [rs[0]] * 3
        return (f"median {statistics.median(rs):.2f}x, quartiles {q[0]:.2f}-{q[2]:.2f}x, "
                f"range {min(rs):.2f}-{max(rs):.2f}x")
    if blocks:
        print("paired by block (block i of one against block i of the other, taken seconds "
              "apart at most):")
    checks = []
    for k in ks:
        ours, one = f"tfplace 2w {tested}{sfxs[k]}", f"tfplace 1w{sfxs[k]}"
        peer = f"MWMS 2w ring{sfxs[k]}"
        if blocks:
            print(f"  {ours} / {one}: {paired(ours, one)}")
            print(f"  {ours} / {best_peer}: {paired(ours, best_peer)}")
            if peer != best_peer:
                print(f"  {ours} / {peer}: {paired(ours, peer)}")
        checks += [(eps(ours) / eps(one) >= 1.7,
                    f"{ours} >= 1.7x {one} ({eps(ours) / eps(one):.2f}x)"),
                   (eps(ours) / mwms >= 1.0,
                    f"{ours} >= 1.0x {best_peer}, the faster MWMS ({eps(ours) / mwms:.2f}x)")]
        if peer != best_peer:
            checks.append((eps(ours) / eps(peer) >= 1.0, f"{ours} >= 1.0x {peer}, the same "
                           f"steps per call ({eps(ours) / eps(peer):.2f}x)"))
    if len(ks) > 1:
        best = max((f"tfplace 2w {tested}{sfxs[k]}" for k in ks), key=eps)
        checks.append((eps(best) / mwms >= 1.0, f"the faster tfplace row, {best}, >= 1.0x the "
                       f"faster MWMS row, {best_peer} ({eps(best) / mwms:.2f}x)"))
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
