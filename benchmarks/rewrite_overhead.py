"""Rewrite overhead: a 1-device tfplace plan against the plain tf.function, alternated in one run.

    python benchmarks/rewrite_overhead.py [--steps 200] [--model cnn|mlp]

Target: median step-time ratio (tfplace / plain) <= 1.03.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(kind: str, keras):
    keras.utils.set_random_seed(0)
    L = keras.layers
    if kind == "mlp":
        inp = keras.Input((512,))
        h = L.Dense(1024, activation="relu")(inp)
        h = L.Dense(1024, activation="relu")(h)
        out = L.Dense(10)(h)
        shape = (512,)
    else:
        inp = keras.Input((32, 32, 3))
        h = L.Conv2D(32, 3, padding="same", activation="relu")(inp)
        h = L.MaxPooling2D(2)(h)
        h = L.Conv2D(64, 3, padding="same", activation="relu")(h)
        h = L.MaxPooling2D(2)(h)
        h = L.Flatten()(h)
        h = L.Dense(128, activation="relu")(h)
        out = L.Dense(10)(h)
        shape = (32, 32, 3)
    return keras.Model(inp, out), shape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    import tfplace
    cluster = tfplace.Cluster.local(devices=1)
    import keras
    import numpy as np
    import tensorflow as tf
    model, shape = build(a.model, keras)
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    placed = tfplace.parallelize(train_step, cluster=cluster, placer="single")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((a.batch, *shape)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=(a.batch,)).astype("int32"))
    for _ in range(a.warmup):
        train_step(x, y).numpy()
        placed(x, y).numpy()
    plain, ours = [], []
    for i in range(a.steps):
        # alternate which goes first, so drift on this shared machine hits both alike
        order = ((train_step, plain), (placed, ours)) if i % 2 == 0 else \
            ((placed, ours), (train_step, plain))
        for fn, sink in order:
            t = time.perf_counter()
            fn(x, y).numpy()
            sink.append(time.perf_counter() - t)
    mp, mo = statistics.median(plain), statistics.median(ours)
    pair = statistics.median(o / p for o, p in zip(ours, plain))
    plan = placed.plan
    print(f"model={a.model} batch={a.batch} steps={a.steps} (alternated, after {a.warmup} warm-up)")
    print(f"plan: placer={plan.placer}, devices used={len(plan.devices_used)}, "
          f"moved variables={placed.executor.moved_variables}")
    print(f"plain tf.function  median step {mp * 1e3:8.3f} ms")
    print(f"tfplace (1 device) median step {mo * 1e3:8.3f} ms")
    print(f"ratio of medians {mo / mp:.4f}; median of per-pair ratios {pair:.4f}; "
          f"target <= 1.03: {'PASS' if mo / mp <= 1.03 else 'FAIL'}")


if __name__ == "__main__":
    main()
