"""Channel: the C++ op (custom_ops/channel.cc) against tf.queue.FIFOQueue, alternated in one run.

    python benchmarks/channel.py [--rounds 7] [--small-items 4000] [--large-items 200]

For a small (1 KB) and a large (16 MB) float32 tensor, each backend in turn (the order flips every
round, so drift on a shared machine hits both alike):

- throughput: a producer thread and a consumer thread, each one tf.function looping over
  ``tf.range(n)`` (enqueue / dequeue), capacity 4; items/s and nominal MB/s over the wall time of
  both. Neither backend copies a tensor (buffers are refcounted), so for 16 MB this measures the
  per-item hand-off, and MB/s is items/s times the size;
- eager throughput: the same two threads, but Python loops calling ``Channel.enqueue/dequeue``
  (what a Python-driven stage loop pays per item);
- latency: ping-pong between two threads over two capacity-1 channels (tf.function loops); one-way
  latency = wall time / (2 n).

Reports medians over rounds, the median of per-round op/fifo time ratios (< 1: the op is faster)
and in how many rounds the op was faster.
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZES = {"1KB": (256,), "16MB": (4 * 1024 * 1024,)}
BACKENDS = ("op", "fifo")


def _both(a: Callable[[], object], b: Callable[[], object]) -> float:
    """Wall time of running a and b in two threads (b in this one)."""
    err: list[BaseException] = []

    def run() -> None:
        try:
            a()
        except BaseException as e:  # noqa: BLE001 - reported below
            err.append(e)

    t = threading.Thread(target=run)
    start = time.perf_counter()
    t.start()
    b()
    t.join()
    wall = time.perf_counter() - start
    if err:
        raise err[0]
    return wall


# Each setup makes its channels and traces its functions once and returns one timed round; the
# same channels serve every round (a channel is drained at the end of each).

def throughput_fn(tf, Channel, backend: str, shape: tuple, n: int) -> Callable[[], float]:
    ch = Channel(capacity=4, dtypes=[tf.float32], shapes=[shape], backend=backend)
    x = tf.ones(shape)

    @tf.function
    def produce(k):
        for _ in tf.range(k):
            ch.enqueue([x])

    @tf.function
    def consume(k):
        s = tf.constant(0.0)
        for _ in tf.range(k):
            s += ch.dequeue()[0][0]             # touches one element: the item really arrived
        return s

    def round_(k: int) -> float:
        out: list = []
        wall = _both(lambda: produce(tf.constant(k)), lambda: out.append(consume(tf.constant(k))))
        assert float(out[0]) == k
        return wall

    round_(max(2, n // 20))                     # warm-up: traces, first kernel runs
    return lambda: round_(n)


def throughput_eager(tf, Channel, backend: str, shape: tuple, n: int) -> Callable[[], float]:
    ch = Channel(capacity=4, dtypes=[tf.float32], shapes=[shape], backend=backend)
    x = tf.ones(shape)

    def round_(k: int) -> float:
        def produce() -> None:
            for _ in range(k):
                ch.enqueue([x])

        def consume() -> None:
            for _ in range(k):
                ch.dequeue()

        return _both(produce, consume)

    round_(max(2, n // 20))
    return lambda: round_(n)


def pingpong(tf, Channel, backend: str, shape: tuple, n: int) -> Callable[[], float]:
    a = Channel(capacity=1, dtypes=[tf.float32], shapes=[shape], backend=backend)
    b = Channel(capacity=1, dtypes=[tf.float32], shapes=[shape], backend=backend)
    x = tf.ones(shape)

    @tf.function
    def ping(k):
        for _ in tf.range(k):
            a.enqueue([x])
            b.dequeue()

    @tf.function
    def pong(k):
        for _ in tf.range(k):
            b.enqueue(a.dequeue())

    def round_(k: int) -> float:
        return _both(lambda: pong(tf.constant(k)), lambda: ping(tf.constant(k)))

    round_(max(2, n // 20))
    return lambda: round_(n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--small-items", type=int, default=4000)
    ap.add_argument("--large-items", type=int, default=200)
    ap.add_argument("--eager-items", type=int, default=1000)
    a = ap.parse_args()
    import tensorflow as tf
    from tfplace.runtime.channel import Channel, library_path, load_ops
    load_ops()                                   # fail early when `make ops` was not run
    print(f"TF {tf.__version__}, op library {library_path()}, {os.cpu_count()} CPUs, "
          f"inter-op threads {tf.config.threading.get_inter_op_parallelism_threads() or 'auto'}, "
          f"load avg {os.getloadavg()[0]:.2f}")
    items = {"1KB": a.small_items, "16MB": a.large_items}
    cases = [("tput tf.function", throughput_fn, s, items[s]) for s in SIZES] + \
            [("tput eager", throughput_eager, s, a.eager_items) for s in SIZES] + \
            [("latency ping-pong", pingpong, s, items[s] // 2) for s in SIZES]
    runs = {(name, size, backend): fn(tf, Channel, backend, SIZES[size], n)
            for name, fn, size, n in cases for backend in BACKENDS}
    times: dict[tuple, list[float]] = {key: [] for key in runs}
    for r in range(a.rounds):
        order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
        for name, _, size, _ in cases:
            for backend in order:
                times[(name, size, backend)].append(runs[(name, size, backend)]())
    nbytes = {s: 4 * SIZES[s][0] for s in SIZES}
    print(f"\n{a.rounds} rounds, medians; ratio = op time / fifo time (median of per-round "
          "ratios; < 1: op faster)")
    head = f"{'case':18} {'size':>5} {'items':>6}"
    cols = "".join(f" | {b + ' items/s':>13} {b + ' MB/s':>10} {b + ' us/item':>12}"
                   for b in BACKENDS)
    print(head + cols + " | ratio | op wins")
    for name, _, size, n in cases:
        op, fifo = times[(name, size, "op")], times[(name, size, "fifo")]
        ratio = statistics.median(o / f for o, f in zip(op, fifo))
        moved = 2 * n if name.startswith("latency") else n        # one-way hand-offs
        line = f"{name:18} {size:>5} {n:>6}"
        for ts in (op, fifo):
            med = statistics.median(ts)
            line += (f" | {moved / med:>13.0f} {moved / med * nbytes[size] / 1e6:>10.0f} "
                     f"{1e6 * med / moved:>12.1f}")
        wins = sum(o < f for o, f in zip(op, fifo))
        print(line + f" | {ratio:5.2f} | {wins}/{len(op)}")
    print(f"load avg at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
