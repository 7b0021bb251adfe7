"""Planning time vs graph size: analyse + make_plan (m_etf, 4 devices) on synthetic layered
GraphDefs of 1k/10k/100k ops and on a captured ResNet50 SGD training step.

    .venv/bin/python benchmarks/plan_scale.py [--sizes 1000,10000,100000] [--no-resnet]

Graph construction and capture are not timed. Prints a table, the fitted growth exponent
(least-squares slope of log seconds vs log ops over the synthetic sizes) and PASS/FAIL against
the targets: ResNet50 < 2 s, 100k ops < 30 s, exponent <= 1.3. Always exits 0.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfplace.analysis import analyse  # noqa: E402
from tfplace.cluster import Cluster  # noqa: E402
from tfplace.planner import make_plan  # noqa: E402

BATCH, HIDDEN = 32, 512
DT_FLOAT, DT_RESOURCE = 1, 20


def synthetic_graph(n_ops: int, seed: int = 0) -> Any:
    """A layered GraphDef: layers 10-50 wide, each op reading 1-3 random ops of the layer
    before; one op in 20 is a MatMul against its own 1 MiB variable (resource Placeholder +
    ReadVariableOp), the rest MatMul/AddV2/Relu/AddN on (32, 512) float32 activations."""
    from tensorflow.core.framework import graph_pb2, tensor_shape_pb2
    rng = random.Random(seed)
    gd = graph_pb2.GraphDef()

    def add(name: str, op: str, inputs: list[str], shape: tuple[int, ...], dtype: int,
            type_attr: str = "T") -> None:
        n = gd.node.add(name=name, op=op)
        n.input.extend(inputs)
        n.attr[type_attr].type = dtype
        sp = n.attr["_output_shapes"].list.shape.add()
        sp.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape)

    act = (BATCH, HIDDEN)
    add("input", "Placeholder", [], act, DT_FLOAT, "dtype")
    prev, count, layer = ["input"], 1, 0
    while count < n_ops:
        width = min(rng.randint(10, 50), n_ops - count)
        cur = []
        for k in range(width):
            name = f"l{layer}/op{k}"
            roll = rng.random()
            if roll < 0.05 and n_ops - count >= 3 and k + 3 <= width:
                add(f"{name}/w", "Placeholder", [], (), DT_RESOURCE, "dtype")
                add(f"{name}/read", "ReadVariableOp", [f"{name}/w"], (HIDDEN, HIDDEN),
                    DT_FLOAT, "dtype")
                add(name, "MatMul", [rng.choice(prev), f"{name}/read"], act, DT_FLOAT)
                count += 3
            else:
                srcs = rng.sample(prev, min(len(prev), rng.randint(1, 3)))
                if len(srcs) == 1:
                    add(name, "Relu", srcs, act, DT_FLOAT)
                elif len(srcs) == 2:
                    add(name, rng.choice(["MatMul", "AddV2"]), srcs, act, DT_FLOAT)
                else:
                    add(name, "AddN", srcs, act, DT_FLOAT)
                count += 1
            cur.append(name)
            if count >= n_ops:
                break
        prev, layer = cur, layer + 1
    return gd


def synthetic_variables(gd: Any) -> list[Any]:
    return [SimpleNamespace(node=n.name, name=n.name, nbytes=HIDDEN * HIDDEN * 4,
                            shape=(HIDDEN, HIDDEN), dtype="float32")
            for n in gd.node if n.op == "Placeholder" and n.name.endswith("/w")]


def resnet50_step() -> tuple[Any, list[Any]]:
    """GraphDef and variables of a ResNet50 SGD training step (batch 8), captured untimed."""
    import keras
    import tensorflow as tf
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    opt = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    cf = step.get_concrete_function(tf.zeros((8, 224, 224, 3)), tf.zeros((8,), tf.int32))
    gd = cf.graph.as_graph_def(add_shapes=True)
    by_handle = {id(v.handle): v for v in cf.graph.variables}
    variables = []
    for external, internal in cf.graph.captures:
        v = by_handle.get(id(external))
        if v is not None:
            variables.append(SimpleNamespace(
                node=internal.op.name, name=v.name, shape=tuple(v.shape), dtype=v.dtype.name,
                nbytes=v.shape.num_elements() * v.dtype.size))
    return gd, variables


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return (sum((a - mx) * (b - my) for a, b in zip(lx, ly))
            / sum((a - mx) ** 2 for a in lx))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--no-resnet", action="store_true")
    args = ap.parse_args()
    cluster = Cluster.local(4, configure=False)
    rows: list[tuple[str, int, int, float, int, float]] = []
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        gd = synthetic_graph(n)
        variables = synthetic_variables(gd)
        repeats = 3 if n <= 10_000 else 1

        def run() -> Any:
            return make_plan(analyse(gd, variables), cluster, placer="m_etf",
                             variables=variables)
        sec, plan = timed(run, repeats)
        rows.append((f"synthetic {n // 1000}k", len(gd.node), repeats, sec,
                     len(plan.cut_edges), plan.predicted_step_seconds))
    resnet_sec = None
    if not args.no_resnet:
        t0 = time.perf_counter()
        gd, variables = resnet50_step()
        capture = time.perf_counter() - t0

        def run_resnet() -> Any:
            return make_plan(analyse(gd, variables, batch_size_hint=8), cluster,
                             placer="m_etf", variables=variables)
        resnet_sec, plan = timed(run_resnet, 3)
        rows.append((f"ResNet50 step (capture {capture:.1f} s, untimed)", len(gd.node), 3,
                     resnet_sec, len(plan.cut_edges), plan.predicted_step_seconds))

    print(f"analyse + make_plan(placer='m_etf') on {len(cluster.devices)} devices, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
          f"load avg {os.getloadavg()[0]:.2f}")
    print(f"{'graph':<40} {'ops':>8} {'runs':>4} {'seconds':>9} {'cut edges':>9} "
          f"{'pred. step s':>12}")
    for name, ops, runs, sec, cuts, pred in rows:
        print(f"{name:<40} {ops:>8} {runs:>4} {sec:>9.3f} {cuts:>9} {pred:>12.4f}")
    synth = [(ops, sec) for name, ops, _, sec, _, _ in rows if name.startswith("synthetic")]
    checks = []
    if len(synth) >= 2:
        k = slope([float(o) for o, _ in synth], [s for _, s in synth])
        print(f"fitted growth exponent (log seconds vs log ops, synthetic): {k:.3f}")
        checks.append(("growth exponent <= 1.3", k <= 1.3, f"{k:.3f}"))
    big = [sec for ops, sec in synth if ops >= 100_000]
    if big:
        checks.append(("100k ops < 30 s", big[0] < 30.0, f"{big[0]:.2f} s"))
    if resnet_sec is not None:
        checks.append(("ResNet50 step < 2 s", resnet_sec < 2.0, f"{resnet_sec:.3f} s"))
    for what, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what} ({value})")
    print("ALL PASS" if all(ok for _, ok, _ in checks) else "SOME TARGETS FAILED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
