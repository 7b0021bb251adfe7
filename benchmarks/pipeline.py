"""Pipeline parallelism measured: bubble fraction and stashed micro-batches from an op-level trace
of the workers, and the throughput of 2 stages on 2 core-pinned workers against 1 worker.

    python benchmarks/pipeline.py [--micro 8] [--width 512] [--in-width 512] [--batch 4096]
                                  [--layers 8] [--no-input-scale] [--quick] [--trace-dir DIR]
                                  [--sequential [--rounds 3] [--steps 15]] [--warmup 5]

Configurations, each in its own subprocess (a process can connect to one gRPC cluster only), the
whole set repeated ``--rounds`` times in alternating order; medians over all timed steps:

  1 worker        launch_local(workers=1), placer="single": the whole step on one pinned core
  2w gpipe M      launch_local(workers=2), pipeline_stages=2, micro_batches=M, schedule="gpipe"
  2w 1f1b M       the same with schedule="1f1b"

The workers are pinned one per core by launch_local; the client (which feeds the batch and
receives the loss) is not pinned and its CPU is reported. The model is a trained per-feature
scale on ``--in-width`` input features, then an MLP of ``--layers`` Dense(width) layers (the same
for every config, same weights), SGD, MSE, global batch ``--batch`` in every config (the pipeline
splits it into M micro-batches).

Why these defaults:
- The input scale: without it the first layer has no input gradient, so it costs 2 MatMuls where
  every other layer costs 3. The earlier default made up for that with 3/2 x width input
  features (``--no-input-scale``): equal stages in total FLOPs, but not per phase (stage 0's
  forward 4.5 layers' worth against 4, its backward 7.5 against 8; measured 187 against 221 ms
  of backward), and GPipe runs each phase at its slower stage's pace, so stage 0 idled 24%
  against the formula's 11%. With the scale (one multiply forward, one multiply and a sum
  backward) every Dense layer needs dX, the 8 layers split 4/4 into stages equal in FLOPs in
  forward and in backward, and the GPipe formula, which assumes equal stages, applies to each.
- ``--batch`` 4096 gives 512-row micro-batches at M=8. With 256 rows (batch 2048) the
  micro-batches' backward MatMuls cost about 1.3x the CPU per FLOP of the full batch's; at 128
  rows about 1.6x (BENCHMARKS.md, pipeline).

What is measured, from the workers' own kernels (``tfplace.runtime.trace.trace_workers``: TF's
profiler service on each worker's gRPC port), in the first round, after the timed steps:

  step window   from the first to the last kernel of any pipeline segment (F or B of any
                micro-batch on any stage) in one step; the optimizer flush after it is not in
                the window (the GPipe formula counts only the F/B clock).
  busy(s)       length of the union of the intervals of every kernel on stage s's device
                inside the window (waits of asynchronous kernels, e.g. a _Recv waiting for
                its tensor, are not busy).
  idle(s)       1 - busy(s) / window, split into fill+drain (before the stage's first compute
                kernel and after its last: the schedule's bubble) and gaps (idle between its first
                and last kernel: waiting for a peer's tensor, transfer latency, preemption).
                GPipe formula: (K-1)/(M+K-1), which assumes equal
                stages. With unequal stages a stage also idles waiting for the slower one,
                so the script prints the expectation for the measured per-stage F and B times,
                window ~ sum_s(f_s + b_s) + (M-1)(max_s f_s + max_s b_s) per micro-batch, and
                compares the formula with the bottleneck stage (the busiest): its idle is the
                fill/drain bubble alone.
  in flight(s)  micro-batches whose forward started on stage s (first kernel other than a
                weight read, Const, Identity or send/receive) and whose backward on s has not
                finished, swept over the window; the peak against the plan's stash (GPipe M,
                1F1B min(K-s, M)). TF's allocator statistics are not available on CPU
                (tf.config.experimental.get_memory_info('CPU:0') raises), so this is a count
                from the trace, not bytes.

Targets: GPipe bubble within 5 points of (K-1)/(M+K-1); 1F1B in flight <= K; 2 stages on 2
workers >= 1.5x the throughput of 1 worker.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

from _procs import children as _children, cpu_seconds, kill_children as _kill_children  # noqa: E402
from _procs import read_result  # noqa: E402
from _blocks import Group, fifo, interleave, serve, spawn  # noqa: E402
from tfplace.runtime.overlap import length, union  # noqa: E402 - pure Python, no TensorFlow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.abspath(__file__)
RESULT = "PIPEBENCH_RESULT "
DONE_SCOPE = "tfplace_pipeline/stage"      # rewrite.pipeline.done_name(stage, op)
# kernels of a forward segment that hold no activations: a micro-batch is in flight from its
# first other kernel (the optimizer's weight reads of copies r > 0 land in F segments and run
# before the schedule reaches them; counting them would start micro-batches early)
NOT_ACTIVATIONS = frozenset({"ReadVariableOp", "VarHandleOp", "Const", "NoOp", "Identity",
                             "_Send", "_Recv", "_HostSend", "_HostRecv"})


# ---------------------------------------------------------------------------------------------
# the model and the step

def build_model(keras: Any, width: int, layers: int, in_width: int | None = None,
                out_width: int | None = None, input_scale: bool = False) -> Any:
    keras.utils.set_random_seed(0)
    h = inp = keras.Input((in_width or width,))
    if input_scale:     # a trained per-feature scale on the inputs: the first layer needs dX
        h = FeatureScale(keras)(h)
    for i in range(layers):
        last = i == layers - 1
        h = keras.layers.Dense((out_width or width) if last else width,
                               activation=None if last else "relu")(h)
    return keras.Model(inp, h, name=f"mlp{layers}")


def FeatureScale(keras: Any) -> Any:
    """A layer multiplying its input by a trained per-feature scale (initialised to 1)."""
    class _FeatureScale(keras.layers.Layer):
        def build(self, shape: Any) -> None:
            self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

        def call(self, x: Any) -> Any:
            return x * self.scale
    return _FeatureScale(name="feature_scale")


def make_data(width: int, batch: int, in_width: int | None = None,
              out_width: int | None = None) -> tuple[Any, Any]:
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, in_width or width)).astype("float32")
    y = rng.standard_normal((batch, out_width or width)).astype("float32")
    return x, y


# ---------------------------------------------------------------------------------------------
# the trace analysis (pure Python over Chrome events)

def segment_map(graph_def: Any) -> dict[str, tuple[int, str, int]]:
    """node -> (stage, "F"|"B", micro-batch), read from the pipeline rewrite's segment NoOps
    (``tfplace_pipeline/stage{s}/{F|B}{m}``, whose control inputs are the segment's ops)."""
    out: dict[str, tuple[int, str, int]] = {}
    for n in graph_def.node:
        if not n.name.startswith(DONE_SCOPE):
            continue
        stage, _, op = n.name[len(DONE_SCOPE):].partition("/")
        key = (int(stage), op[0], int(op[1:]))
        for inp in n.input:
            out[inp.lstrip("^").split(":")[0]] = key
    return out


def _node(name: str) -> str:
    return name[len("tfplace/"):] if name.startswith("tfplace/") else name


def _clip(iv: Sequence[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(s, lo), min(e, hi)) for s, e in iv if e > lo and s < hi]


def split_steps(events: Sequence[Mapping[str, Any]], segments: Mapping[str, tuple[int, str, int]],
                gap_us: float) -> list[list[Mapping[str, Any]]]:
    """The segment kernels grouped into steps (the steps ran with pauses of more than gap_us
    between them); only steps in which every segment node ran exactly once."""
    seg = sorted((e for e in events if e.get("ph") == "X" and _node(e["name"]) in segments
                  and (e.get("args") or {}).get("phase") != "launch-to-done"),
                 key=lambda e: e["ts"])
    groups: list[list[Mapping[str, Any]]] = []
    end = None
    for e in seg:
        if end is None or e["ts"] > end + gap_us:
            groups.append([])
        groups[-1].append(e)
        end = e["ts"] + e["dur"] if end is None else max(end, e["ts"] + e["dur"])
    traced = {_node(e["name"]) for e in seg}
    return [g for g in groups if len(g) == len(traced) and {_node(e["name"]) for e in g} == traced]


def analyse_step(events: Sequence[Mapping[str, Any]], step: Sequence[Mapping[str, Any]],
                 segments: Mapping[str, tuple[int, str, int]], stage_devices: Sequence[str],
                 micro: int) -> dict[str, Any]:
    """Bubble and in-flight micro-batches of one step (``step``: its segment kernels).

    The window runs from the step's first compute kernel on any stage to its last: the weight
    reads that open a step run as soon as a worker gets the step, and the workers get it from
    the client a few ms apart (3-11 ms in run 30), so a window opened by the first read counted
    that dispatch latency as every stage's idle; it is not the pipeline's bubble."""
    work = [e for e in step if (e.get("args") or {}).get("op") not in NOT_ACTIVATIONS] or step
    lo = min(e["ts"] for e in work)
    hi = max(e["ts"] + e["dur"] for e in work)
    span = hi - lo
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    K = len(stage_devices)
    stages = []
    for s, device in enumerate(stage_devices):
        ran = [e for e in events if e.get("ph") == "X" and names.get(e["pid"]) == device
               and (e.get("args") or {}).get("phase") != "launch-to-done"]
        busy = length(_clip(union([(e["ts"], e["ts"] + e["dur"]) for e in ran]), lo, hi))
        # fill + drain: before the stage's first and after its last compute kernel (weight
        # reads that run at step start, out of schedule order, would hide the fill)
        runs = _clip(union([(e["ts"], e["ts"] + e["dur"]) for e in ran
                             if (e.get("args") or {}).get("op") not in NOT_ACTIVATIONS]), lo, hi)
        edges = (runs[0][0] - lo) + (hi - runs[-1][1]) if runs else span
        mine = [e for e in step if segments[_node(e["name"])][0] == s]
        f = length(union([(e["ts"], e["ts"] + e["dur"]) for e in mine
                            if segments[_node(e["name"])][1] == "F"]))
        b = length(union([(e["ts"], e["ts"] + e["dur"]) for e in mine
                            if segments[_node(e["name"])][1] == "B"]))
        first_f: dict[int, float] = {}
        last_b: dict[int, float] = {}
        for e in mine:
            _s, kind, m = segments[_node(e["name"])]
            if kind == "F" and (e.get("args") or {}).get("op") in NOT_ACTIVATIONS:
                continue                 # a weight read starts no micro-batch's activations
            if kind == "F":
                first_f[m] = min(first_f.get(m, e["ts"]), e["ts"])
            else:
                last_b[m] = max(last_b.get(m, 0.0), e["ts"] + e["dur"])
        sweep = sorted([(first_f[m], 1) for m in first_f] +
                       [(last_b.get(m, hi), -1) for m in first_f], key=lambda t: (t[0], t[1]))
        live = peak = 0
        for _t, d in sweep:
            live += d
            peak = max(peak, live)
        stages.append({"device": device, "busy_ms": busy / 1e3, "idle": 1 - busy / span,
                       "fill_drain": edges / span, "gaps": 1 - busy / span - edges / span,
                       "f_ms": f / 1e3, "b_ms": b / 1e3, "in_flight_peak": peak})
    fs = [st["f_ms"] / micro for st in stages]
    bs = [st["b_ms"] / micro for st in stages]
    ideal = sum(fs) + sum(bs) + (micro - 1) * (max(fs) + max(bs))   # per-micro-batch model
    for st, f, b in zip(stages, fs, bs):
        st["idle_expected"] = 1 - micro * (f + b) / ideal if ideal else 0.0
    return {"span_ms": span / 1e3, "stages": stages, "formula": (K - 1) / (micro + K - 1)}


def label_events(events: list[dict[str, Any]],
                 segments: Mapping[str, tuple[int, str, int]]) -> None:
    """Mark each segment kernel with its pass ("F3", "B0") for the Chrome trace viewer."""
    for e in events:
        key = segments.get(_node(e.get("name", ""))) if e.get("ph") == "X" else None
        if key is not None:
            e.setdefault("args", {})["segment"] = f"{key[1]}{key[2]}"
            e["cat"] = "forward" if key[1] == "F" else "backward"


# ---------------------------------------------------------------------------------------------
# the child: one configuration

def emit(obj: dict) -> None:
    print(RESULT + json.dumps(obj), flush=True)


def child(a: argparse.Namespace) -> None:
    import tfplace
    t0 = time.perf_counter()
    cluster = tfplace.Cluster.launch_local(workers=a.workers, devices_per_worker=1, timeout=180)
    try:
        import keras
        import tensorflow as tf
        model = build_model(keras, a.width, a.layers, a.in_width, a.out_width,
                            a.input_scale)
        opt = keras.optimizers.SGD(1e-3)
        loss_fn = keras.losses.MeanSquaredError()

        @tf.function
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        if a.stages > 1:
            step = tfplace.parallelize(train_step, cluster=cluster, writeback=a.writeback,
                                       pipeline_stages=a.stages, micro_batches=a.micro,
                                       schedule=a.schedule)
        else:
            step = tfplace.parallelize(train_step, cluster=cluster, placer="single",
                                       writeback=a.writeback)
        x, y = (tf.constant(v) for v in make_data(a.width, a.batch, a.in_width, a.out_width))
        first = float(step(x, y))
        setup = time.perf_counter() - t0
        pids = [p.pid for p in cluster._launcher.procs]     # noqa: SLF001 - CPU accounting
        batches = _inputs(a, step, x, y)
        for _ in range(a.warmup):
            step(*next(batches)).numpy()
        names = ["client"] + [f"w{i}" for i in range(len(pids))]
        losses = [first]

        def block(n: int) -> dict:
            cpu0 = [cpu_seconds()] + [cpu_seconds(p) for p in pids]
            times = []
            for _ in range(n):
                xb, yb = next(batches)              # the copy ahead overlaps the last step
                t = time.perf_counter()
                losses.append(float(step(xb, yb)))
                times.append(time.perf_counter() - t)
            cpu1 = [cpu_seconds()] + [cpu_seconds(p) for p in pids]
            return {"times": times, "cpu_ms": {k: (c1 - c0) * 1e3 / n for k, c0, c1 in
                                               zip(names, cpu0, cpu1)}}
        if a.control:                               # interleaved: blocks until "stop"
            blocks = serve(a.control, block, emit, [os.getpid(), *pids])
            times = [t for b in blocks for t in b["times"]]
            cpu = {k: sum(b["cpu_ms"][k] * len(b["times"]) for b in blocks) / len(times)
                   for k in names}
        else:
            r = block(a.steps)
            times, cpu = r["times"], r["cpu_ms"]
        out: dict[str, Any] = {"times": times, "first_loss": first, "last_loss": losses[-1],
                               "setup_s": setup, "cpu_ms": cpu}
        pipe = step.plan.pipeline if a.stages > 1 else None
        if pipe is not None:
            out["plan"] = {"devices": [s.devices[0] for s in pipe.stages],
                           "units": [len(s.units) for s in pipe.stages],
                           "flops": [s.flops for s in pipe.stages],
                           "stash": [s.stash for s in pipe.stages],
                           "peak_bytes": [s.peak_bytes for s in pipe.stages],
                           "timeline_bubble": list(_plan_bubble(pipe))}
        if a.trace_steps > 0:
            out["trace"] = trace(a, step, cluster, pipe, batches, statistics.median(times))
        emit(out)
    finally:
        cluster.shutdown()


def _inputs(a: argparse.Namespace, step: Any, x: Any, y: Any) -> Any:
    """The batches every configuration trains on, the same (x, y) every step:

    - ``--input worker``: ``step.prefetch`` of a repeated tf.data dataset. Each argument is
      read inside the step on the worker of the op that uses it (x on the first stage, y on
      the last; both on the single worker): no batch passes through this process, and y does
      not pass through stage 0;
    - ``--input prefetch``: the dataset rebuilt on the first stage's worker and prefetched
      there (``tfplace.runtime.prefetch.to_device``); y then crosses to the last stage in the
      step;
    - ``--input client``: the tensors are passed from here and copied inside every step."""
    import itertools
    import tensorflow as tf
    if a.input == "client":
        return itertools.repeat((x, y))
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    if a.input == "worker":
        return step.prefetch(dataset)
    from tfplace.runtime.prefetch import input_device, to_device
    device = input_device(step.executor) or step.plan.placement()[step.executor.captured.inputs[0]]
    return to_device(dataset, device)


def _plan_bubble(pipe: Any) -> tuple[float, ...]:
    from tfplace.pipeline import bubble_fraction
    return bubble_fraction(pipe.timeline())


def trace(a: argparse.Namespace, step: Any, cluster: Any, pipe: Any, batches: Any,
          step_s: float) -> dict[str, Any]:
    """Profile both workers over ``--trace-steps`` steps (with pauses between them), write the
    Chrome trace, and analyse every complete step."""
    from tfplace.runtime.trace import trace_workers, write_trace
    pause = max(0.2, step_s)
    graph_def = step.executor.graph_def
    addresses = [t.address for t in cluster._launcher.tasks]   # noqa: SLF001 - worker ports
    window_ms = int(1000 * (a.trace_steps * (3 * step_s + pause) + 2.0))
    with trace_workers(addresses, graph_def, duration_ms=window_ms,
                       inputs=step.executor.input_devices) as recorded:
        t = time.perf_counter()
        for _ in range(a.trace_steps):
            step(*next(batches)).numpy()
            time.sleep(pause)
        ran = time.perf_counter() - t
    segments = segment_map(graph_def)
    label_events(recorded.events, segments)
    os.makedirs(a.trace_dir, exist_ok=True)
    name = f"{a.schedule}_K{a.stages}_M{a.micro}" if pipe is not None else "1worker"
    path = os.path.join(a.trace_dir, f"pipeline_{name}.json")
    write_trace(recorded, path)
    out = {"path": path, "steps": [], "window_ms": window_ms, "ran_s": ran,
           "events": sum(1 for e in recorded.events if e.get("ph") == "X"),
           "ops": op_totals(recorded.events, a.trace_steps)}
    if pipe is not None:
        steps = split_steps(recorded.events, segments, gap_us=pause * 1e6 / 2)
        devices = [s.devices[0] for s in pipe.stages]
        out["steps"] = [analyse_step(recorded.events, g, segments, devices, a.micro)
                        for g in steps]
    return out


def op_totals(events: Sequence[Mapping[str, Any]], steps: int) -> dict[str, dict[str, float]]:
    """Per worker ("w0", "w1"): kernel ms per step by op type (and F/B pass), largest first."""
    out: dict[str, dict[str, float]] = {}
    for e in events:
        args = e.get("args") or {}
        if e.get("ph") != "X" or args.get("phase") == "launch-to-done":
            continue
        device = str(args.get("device", ""))
        worker = f"w{device.split('/task:')[1][0]}" if "/task:" in device else "unplaced"
        key = f"{(args.get('segment') or '')[:1]}{':' if args.get('segment') else ''}{args['op']}"
        row = out.setdefault(worker, {})
        row[key] = row.get(key, 0.0) + e["dur"] / 1e3 / steps
    return {w: dict(sorted(row.items(), key=lambda kv: -kv[1])) for w, row in out.items()}


# ---------------------------------------------------------------------------------------------
# the parent

def _spawn(args: list[str]) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, HERE, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    _children.append(p)
    return p


def _child_args(cfg: dict, a: argparse.Namespace, trace_steps: int) -> list[str]:
    return ["--child", "--workers", str(cfg["workers"]), "--stages", str(cfg["stages"]),
            "--schedule", cfg.get("schedule", "gpipe"), "--micro", str(a.micro),
            "--steps", str(a.steps), "--warmup", str(a.warmup), "--width", str(a.width),
            "--in-width", str(a.in_width), "--batch", str(a.batch), "--layers", str(a.layers),
            "--writeback", a.writeback, "--input", a.input,
            "--trace-steps", str(trace_steps), "--trace-dir", a.trace_dir,
            *(["--out-width", str(a.out_width)] if a.out_width else []),
            "--input-scale" if a.input_scale else "--no-input-scale"]


def _start(cfg: dict, a: argparse.Namespace, directory: str) -> Group:
    """The configuration's child, set up and warmed up, waiting for blocks (--control)."""
    label = cfg["name"].replace(" ", "_").replace("(", "").replace(")", "")
    ctl = fifo(directory, label)
    p, err = spawn([sys.executable, HERE, *_child_args(cfg, a, a.trace_steps), "--control", ctl],
                   dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), _children, directory, label)
    return Group(cfg["name"], [p], [ctl], 1, RESULT, [err])


def run_interleaved(configs: list[dict], a: argparse.Namespace
                    ) -> tuple[dict, dict, dict, dict]:
    """Every configuration set up at once, then --blocks blocks of --block-steps timed steps
    per configuration in turn (alternating order); then each one, alone, traces its
    --trace-steps steps. Per config: step times, CPU ms per step (one dict, the mean over
    blocks), the final result, and the per-block medians."""
    runs, finals = interleave(
        [(cfg["name"], lambda d, cfg=cfg: _start(cfg, a, d)) for cfg in configs],
        blocks=a.blocks, block_steps=a.block_steps, timeout=a.timeout, children=_children,
        kill=_kill_children, cpu_seconds=cpu_seconds, width=24)
    samples, cpu, results, medians = {}, {}, {}, {}
    for cfg in configs:
        n = cfg["name"]
        blocks = [rs[0] for rs in runs[n]]
        samples[n] = [t for b in blocks for t in b["times"]]
        medians[n] = [statistics.median(b["times"]) for b in blocks]
        cpu[n] = [{k: statistics.mean(b["cpu_ms"][k] for b in blocks) for k in blocks[0]["cpu_ms"]}]
        results[n] = finals[n][0]
        print(f"  {n:<24} block medians (ms): "
              + " ".join(f"{m * 1e3:.0f}" for m in medians[n]), flush=True)
    return samples, cpu, results, medians


def run_sequential(configs: list[dict], a: argparse.Namespace) -> tuple[dict, dict, dict]:
    """Each configuration in fresh processes, one after another, --rounds times; the first
    round traces."""
    samples: dict[str, list[float]] = {c["name"]: [] for c in configs}
    cpu_rounds: dict[str, list[dict]] = {c["name"]: [] for c in configs}
    results: dict[str, dict] = {}
    for rnd in range(a.rounds):
        order = configs if rnd % 2 == 0 else configs[::-1]
        for cfg in order:
            t = time.perf_counter()
            r = run_config(cfg, a, a.trace_steps if rnd == 0 else 0)
            samples[cfg["name"]] += r["times"]
            cpu_rounds[cfg["name"]].append(r["cpu_ms"])
            results.setdefault(cfg["name"], r)
            if "trace" in r:
                results[cfg["name"]]["trace"] = r["trace"]
            med = statistics.median(r["times"])
            print(f"  round {rnd + 1} {cfg['name']:<24} median step {med * 1e3:7.1f} ms  "
                  f"{a.batch / med:7.0f} ex/s  loss {r['first_loss']:.4f}->{r['last_loss']:.4f}"
                  f"  cpu ms/step " + " ".join(f"{k} {v:.0f}" for k, v in r["cpu_ms"].items())
                  + f"  load {os.getloadavg()[0]:.2f}  ({time.perf_counter() - t:.0f} s)",
                  flush=True)

    return samples, cpu_rounds, results


def run_config(cfg: dict, a: argparse.Namespace, trace_steps: int) -> dict:
    args = _child_args(cfg, a, trace_steps)
    p = _spawn(args)
    try:
        out, err = p.communicate(timeout=a.timeout)
    finally:
        _kill_children()
    return read_result(p, out, err, RESULT, cfg['name'])


# The GPipe formula holds for equal stages. The plan makes them equal in FLOPs, but the VM
# at times runs one core far slower than the other (run 29: stage 0's forward 119 ms against
# stage 1's 190 for the same FLOPs); a step in which the stages' measured F or B times differ
# by more than this measures the VM, and the faster stage's idle grows by the difference.
LEVEL = 0.10


def imbalance(step: Mapping[str, Any]) -> float:
    """How unequal the stages ran in a traced step: the slowest stage's F (B) time over the
    fastest's, minus 1, the larger of the two phases."""
    out = 0.0
    for key in ("f_ms", "b_ms"):
        times = [st[key] for st in step["stages"]]
        if min(times) > 0:
            out = max(out, max(times) / min(times) - 1)
    return out


def report_trace(name: str, r: dict, micro: int) -> list[tuple[bool, str]]:
    """Print the bubble and in-flight figures of a traced config; the target checks."""
    tr, plan = r["trace"], r["plan"]
    checks: list[tuple[bool, str]] = []
    print(f"\n{name}: trace {tr['path']} ({tr['events']} kernel events, "
          f"{len(tr['steps'])} complete step(s) in the window)")
    if not tr["steps"]:
        print("  no complete step found in the trace (profiler window too short?)")
        return [(False, f"{name}: a complete traced step")]
    K = len(plan["devices"])
    best = sorted(tr["steps"], key=lambda s: s["span_ms"])[len(tr["steps"]) // 2]
    formula = best["formula"]
    print(f"  median-span step: window {best['span_ms']:.1f} ms; GPipe formula (K-1)/(M+K-1) = "
          f"{K - 1}/{micro + K - 1} = {formula:.1%}")
    print(f"  {'stage':<5} {'device':<42} {'busy ms':>7} {'F ms':>6} {'B ms':>6} "
          f"{'idle':>6} {'=edges':>6} {'+gaps':>6} {'expect':>6} {'plan':>6} {'in flight':>9} "
          f"{'plan stash':>10}")
    for s, st in enumerate(best["stages"]):
        print(f"  s{s:<4} {st['device']:<42} {st['busy_ms']:>7.1f} {st['f_ms']:>6.1f} "
              f"{st['b_ms']:>6.1f} {st['idle']:>6.1%} {st['fill_drain']:>6.1%} "
              f"{st['gaps']:>6.1%} {st['idle_expected']:>6.1%} "
              f"{plan['timeline_bubble'][s]:>6.1%} {st['in_flight_peak']:>9} "
              f"{plan['stash'][s]:>10}")
    idles = [[st["idle"] for st in step["stages"]] for step in tr["steps"]]
    uneven = [imbalance(step) for step in tr["steps"]]
    print("  idle per stage, every traced step (stage imbalance): "
          + "; ".join(" ".join(f"{v:.1%}" for v in row) + f" ({u:.0%})"
                      for row, u in zip(idles, uneven))
          + "  (median per stage: " + " ".join(
              f"s{s} {statistics.median(row[s] for row in idles):.1%}" for s in range(K)) + ")")
    print("  (window = the step's first to last compute kernel on any stage; "
          "edges = idle before the stage's first and after its last compute kernel, gaps = "
          "idle between them; expect = idle predicted from the measured per-stage F/B times "
          "with unequal stages; plan = the plan's clock-view bubble at equal ticks)")
    bottleneck = max(range(K), key=lambda s: best["stages"][s]["busy_ms"])
    peaks = [st["in_flight_peak"] for st in best["stages"]]
    if "gpipe" in name:
        idle = best["stages"][bottleneck]["idle"]
        edges = best["stages"][bottleneck]["fill_drain"]
        print(f"  bottleneck s{bottleneck}: idle {idle:.1%} = fill+drain {edges:.1%} + gaps "
              f"{idle - edges:.1%}; formula {formula:.1%}")
        checks.append((abs(idle - formula) <= 0.05,
                       f"{name}: bottleneck stage s{bottleneck} idle {idle:.1%} within 5 points "
                       f"of (K-1)/(M+K-1) = {formula:.1%}"))
        worst = max(abs(st["idle"] - formula) for st in best["stages"])
        checks.append((worst <= 0.05, f"{name}: every stage's idle within 5 points of "
                       f"{formula:.1%} (largest gap {worst:.1%})"))
        medians = [statistics.median(row[s] for row in idles) for s in range(K)]
        worst = max(abs(m - formula) for m in medians)
        checks.append((worst <= 0.05, f"{name}: every stage's median idle over the {len(idles)} "
                       f"traced steps within 5 points of {formula:.1%} ("
                       + " ".join(f"s{s} {m:.1%}" for s, m in enumerate(medians)) + ")"))
        level = [row for row, u in zip(idles, uneven) if u <= LEVEL]
        if level:
            medians = [statistics.median(row[s] for row in level) for s in range(K)]
            worst = max(abs(m - formula) for m in medians)
            checks.append((worst <= 0.05, f"{name}: in the {len(level)} of {len(idles)} traced "
                           f"steps whose stages ran level (F and B within {LEVEL:.0%}), every "
                           f"stage's median idle within 5 points of {formula:.1%} ("
                           + " ".join(f"s{s} {m:.1%}" for s, m in enumerate(medians)) + ")"))
        else:
            checks.append((False, f"{name}: no traced step with its stages level (F and B "
                           f"within {LEVEL:.0%}; imbalance "
                           + " ".join(f"{u:.0%}" for u in uneven) + ")"))
        checks.append((max(peaks) == micro,
                       f"{name}: peak in-flight micro-batches = M = {micro} (measured {peaks})"))
    else:
        checks.append((max(peaks) <= K, f"{name}: peak in-flight micro-batches <= K = {K} "
                       f"(measured {peaks}, plan {plan['stash']})"))
    return checks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--stages", type=int, default=1)
    ap.add_argument("--schedule", default="gpipe")
    ap.add_argument("--micro", type=int, default=8, help="micro-batches M")
    ap.add_argument("--steps", type=int, help="timed steps per config and round (15)")
    ap.add_argument("--warmup", type=int, help="(5)")
    ap.add_argument("--width", type=int, help="(512)")
    ap.add_argument("--in-width", type=int,
                    help="input features (default: --width; 3/2 x width with "
                         "--no-input-scale, where the first layer has no input gradient)")
    ap.add_argument("--out-width", type=int,
                    help="width of the last layer (default: --width)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--input-scale", action=argparse.BooleanOptionalAction, default=True,
                    help="a trained per-feature scale on the inputs, so that the first Dense "
                         "layer needs its input gradient like every other (the default); "
                         "--in-width then defaults to --width, else to 3/2 x width")
    ap.add_argument("--batch", type=int, default=4096, help="global batch")
    ap.add_argument("--writeback", default="step", choices=["step", "manual"])
    ap.add_argument("--input", default="worker", choices=["client", "prefetch", "worker"],
                    help="batches passed from the client inside each step (client), read by "
                         "a tf.data dataset on the first stage's worker (prefetch), or each "
                         "argument read in the step on the worker that uses it (worker)")
    ap.add_argument("--rounds", type=int,
                    help="(3: one round in the VM's slow two-core mode then cannot move a "
                         "median by itself)")
    ap.add_argument("--trace-steps", type=int, help="profiled steps (9); --sequential: in the "
                    "first round only")
    ap.add_argument("--sequential", action="store_true",
                    help="the older method: each configuration in fresh processes, one after "
                         "another, --rounds rounds of --steps steps (instead of interleaved "
                         "blocks)")
    ap.add_argument("--blocks", type=int, help="interleaved: blocks per configuration (10)")
    ap.add_argument("--block-steps", type=int, help="interleaved: steps per block (3)")
    ap.add_argument("--control", help=argparse.SUPPRESS)
    ap.add_argument("--trace-dir", default="/tmp/tfplace_pipeline_trace")
    ap.add_argument("--timeout", type=float, default=300.0, help="per configuration, seconds")
    ap.add_argument("--quick", action="store_true",
                    help="defaults for a smoke run: 1 round, 6 steps, 2 warm-up, width 256, "
                         "2 traced steps (options given explicitly still win)")
    a = ap.parse_args()
    preset = dict(rounds=1, steps=6, warmup=2, width=256, trace_steps=2, blocks=2,
                  block_steps=3) if a.quick else \
        dict(rounds=3, steps=15, warmup=5, width=512, trace_steps=9, blocks=10, block_steps=3)
    for key, value in preset.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    if a.in_width is None:
        a.in_width = a.width if a.input_scale else a.width * 3 // 2
    if a.child:
        child(a)
        return

    atexit.register(_kill_children)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_kill_children(), sys.exit(1)))
    configs = [{"name": "1 worker (no pipeline)", "workers": 1, "stages": 1},
               {"name": f"2w gpipe M={a.micro}", "workers": 2, "stages": 2, "schedule": "gpipe"},
               {"name": f"2w 1f1b M={a.micro}", "workers": 2, "stages": 2, "schedule": "1f1b"}]
    out = a.out_width or a.width
    params = (a.in_width * a.width + (a.layers - 2) * a.width * a.width + a.width * out
              + (a.layers - 1) * a.width + out)
    last = f", the last {out} wide" if out != a.width else ""
    print(f"pipeline: MLP {a.in_width} -> {'scale -> ' if a.input_scale else ''}{a.layers} x Dense({a.width}{last}) ({params / 1e6:.1f}M "
          f"params, SGD, MSE), "
          f"global batch {a.batch}, M={a.micro}, writeback={a.writeback!r}, input={a.input!r}, "
          + (f"{a.steps} timed steps after {a.warmup} warm-up, {a.rounds} round(s) alternating "
             "order" if a.sequential else f"{a.warmup} warm-up steps, then {a.blocks} blocks of "
             f"{a.block_steps} timed steps per configuration, interleaved")
          + "; python "
          f"{sys.version.split()[0]}, {len(os.sched_getaffinity(0))} cpus, load avg "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    print("pinning: launch_local pins worker i to core i; the client is not pinned", flush=True)
    t_start = time.perf_counter()
    medians: dict[str, list[float]] = {}
    if a.sequential:
        samples, cpu_rounds, results = run_sequential(configs, a)
    else:
        samples, cpu_rounds, results, medians = run_interleaved(configs, a)

    base = a.batch / statistics.median(samples[configs[0]["name"]])
    print()
    print(f"{'config':<24} {'step ms':>8} {'examples/s':>11} {'vs 1w':>6}  "
          f"CPU ms/step by process (mean of {'rounds' if a.sequential else 'blocks'})")
    for cfg in configs:
        n = cfg["name"]
        eps = a.batch / statistics.median(samples[n])
        print(f"{n:<24} {statistics.median(samples[n]) * 1e3:>8.1f} {eps:>11.0f} "
              f"{eps / base:>5.2f}x  " + " ".join(
                  f"{k} {statistics.mean(c[k] for c in cpu_rounds[n]):.0f}"
                  for k in cpu_rounds[n][0]))
    for cfg in configs[1:]:
        p = results[cfg["name"]]["plan"]
        print(f"{cfg['name']} plan: stages on " + ", ".join(
            f"s{i} {d.split('/device:')[0].replace('/replica:0', '')} ({u} units, "
            f"{f / 1e9:.2f} GFLOP)" for i, (d, u, f) in
            enumerate(zip(p["devices"], p["units"], p["flops"]))))
    checks: list[tuple[bool, str]] = []
    for cfg in configs[1:]:
        if "trace" in results[cfg["name"]]:
            checks += report_trace(cfg["name"], results[cfg["name"]], a.micro)
    if any("trace" in r for r in results.values()):
        print("\nkernel ms per step by worker and op type (profiled steps; F:/B: = in a forward/"
              "backward segment, no prefix = outside the segments: input, flush, write-back)")
        for cfg in configs:
            for worker, row in results[cfg["name"]].get("trace", {}).get("ops", {}).items():
                top = list(row.items())[:6]
                print(f"  {cfg['name']:<24} {worker:<8} total {sum(row.values()):6.1f}  "
                      + ", ".join(f"{k} {v:.1f}" for k, v in top))
    print()
    for cfg in configs[1:]:
        eps = a.batch / statistics.median(samples[cfg["name"]])
        checks.append((eps / base >= 1.5, f"{cfg['name']} >= 1.5x 1 worker ({eps / base:.2f}x)"))
        if medians:
            rs = [one / two for one, two in zip(medians[configs[0]["name"]],
                                                medians[cfg["name"]])]
            q = statistics.quantiles(rs, n=4) if len(rs) > 1 else [rs[0]] * 3
            print(f"paired by block, {cfg['name']} / 1 worker: median "
                  f"{statistics.median(rs):.2f}x, quartiles {q[0]:.2f}-{q[2]:.2f}x, range "
                  f"{min(rs):.2f}-{max(rs):.2f}x")
    w1 = statistics.mean(c["w0"] for c in cpu_rounds[configs[0]["name"]])
    for cfg in configs[1:]:
        busiest = max(statistics.mean(c[w] for c in cpu_rounds[cfg["name"]]) for w in ("w0", "w1"))
        print(f"CPU bound (load-insensitive, ignores the bubble): 1 worker's CPU per step / "
              f"{cfg['name']}'s busiest worker's = {w1:.0f} / {busiest:.0f} = {w1 / busiest:.2f}x")
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"load avg at the end " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
