"""tfplace demo: capture a Keras Transformer's training step, plan it over 2 loopback gRPC workers with
2 devices each, rewrite it, train it, and compare every weight with the same step on one device."""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STEPS = int(os.environ.get("TFPLACE_DEMO_STEPS", "5"))
BATCH = 32


SEQ, VOCAB, WIDTH, BLOCKS, CLASSES = 32, 1000, 64, 2, 10


def build(keras):
    """A small Transformer encoder classifier built from Keras layers.

    (A keras.applications CNN such as MobileNetV2 also runs, but its BatchNorm layers over
    1x1 feature maps amplify last-bit rounding differences between processes by ~1e3 per
    step, so its weights cannot be compared at 1e-5 after a few steps; see README.)"""
    keras.utils.set_random_seed(0)
    L = keras.layers
    tokens = keras.Input((SEQ,), dtype="int32")
    h = L.Embedding(VOCAB, WIDTH)(tokens)
    h = h + L.Embedding(SEQ, WIDTH)(keras.ops.arange(SEQ))
    for _ in range(BLOCKS):
        a = L.MultiHeadAttention(num_heads=4, key_dim=WIDTH // 4)(h, h)
        h = L.LayerNormalization()(h + a)
        f = L.Dense(4 * WIDTH, activation="gelu")(h)
        h = L.LayerNormalization()(h + L.Dense(WIDTH)(f))
    h = L.GlobalAveragePooling1D()(h)
    return keras.Model(tokens, L.Dense(CLASSES)(h), name="transformer_classifier")


def make_step(model, keras, tf):
    opt = keras.optimizers.SGD(learning_rate=0.02, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss
    return train_step


def train_and_compare(tfplace, cluster) -> bool:
    """Train the tfplace step and the single-device step side by side; True when they match.
    (Its own function so that the steps are gone before the workers stop.)"""
    import keras
    import numpy as np
    import tensorflow as tf
    ref_model, model = build(keras), build(keras)
    model.set_weights(ref_model.get_weights())
    ref_step = make_step(ref_model, keras, tf)
    step = tfplace.parallelize(make_step(model, keras, tf), cluster=cluster, placer="m_etf")
    rng = np.random.default_rng(0)
    # synthetic task: the label is the most frequent token bucket of the sequence
    batches = []
    for _ in range(STEPS):
        x = rng.integers(0, VOCAB, size=(BATCH, SEQ)).astype("int32")
        y = np.array([np.bincount(r % CLASSES, minlength=CLASSES).argmax() for r in x],
                     dtype="int32")
        batches.append((x, y))
    print(f"model: Transformer encoder ({BLOCKS} blocks, width {WIDTH}, {SEQ} tokens), "
          f"{model.count_params():,} parameters, batch {BATCH}, {STEPS} steps\n")
    losses, ref_losses = [], []
    for i, (x, y) in enumerate(batches):
        t = time.perf_counter()
        losses.append(float(step(x, y)))
        dt = time.perf_counter() - t
        if i == 0:
            print(step.plan.summary())
            print()
        ref_losses.append(float(ref_step(x, y)))
        print(f"step {i + 1}: loss {losses[-1]:.6f} (single device {ref_losses[-1]:.6f})"
              f"  {dt * 1e3:8.1f} ms")
    # the test suite's criterion (tests/models.py, assert_close): every element within
    # 1e-5 relative to the tensor, |a - b| <= 1e-5 * (|b| + max |b|), and at least 1e-7
    pairs = list(zip(model.get_weights(), ref_model.get_weights()))
    excess = max(float(np.max(np.abs(a - b) - 1e-5 * np.abs(b)
                              - max(1e-7, 1e-5 * float(np.max(np.abs(b)))))) for a, b in pairs)
    worst = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    loss_gap = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
    ok = excess <= 0 and loss_gap <= 1e-5
    print(f"\nweights vs single device: {len(pairs)} tensors, max abs difference {worst:.2e}, "
          f"losses max relative difference {loss_gap:.2e} (tolerance 1e-5 relative) -> "
          f"{'MATCH' if ok else 'MISMATCH'}")
    return ok


def main() -> int:
    import tfplace
    from tfplace.tf_startup import quiet_tensorflow_import
    quiet_tensorflow_import()       # TF's start-up INFO lines, held to TF_CPP_MIN_LOG_LEVEL
    print("tfplace demo: launching 2 loopback gRPC workers x 2 devices ...", flush=True)
    t0 = time.perf_counter()
    with tfplace.Cluster.launch_local(workers=2, devices_per_worker=2) as cluster:
        print(f"  workers up in {time.perf_counter() - t0:.1f} s: "
              f"{', '.join(t.address for t in cluster.tasks)}")
        ok = train_and_compare(tfplace, cluster)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
