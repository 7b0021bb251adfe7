"""Small Keras models and plain training steps that the equivalence tests run both ways."""
from __future__ import annotations

import numpy as np


def build(kind: str):
    import keras
    keras.utils.set_random_seed(7)
    L = keras.layers
    if kind == "mlp":
        inp = keras.Input((12,))
        h = L.Dense(32, activation="relu")(inp)
        h = L.Dense(32, activation="tanh")(h)
        out = L.Dense(4)(h)
    elif kind == "cnn":
        inp = keras.Input((12, 12, 3))
        h = L.Conv2D(8, 3, activation="relu")(inp)
        h = L.MaxPooling2D(2)(h)
        h = L.Conv2D(8, 3, padding="same", activation="relu")(h)
        h = L.AveragePooling2D(2)(h)
        h = L.Flatten()(h)
        out = L.Dense(4)(h)
    elif kind == "transformer":
        inp = keras.Input((8, 16))
        a = L.MultiHeadAttention(num_heads=2, key_dim=8)(inp, inp)
        h = L.LayerNormalization()(inp + a)
        f = L.Dense(32, activation="relu")(h)
        f = L.Dense(16)(f)
        h = L.LayerNormalization()(h + f)
        h = L.GlobalAveragePooling1D()(h)
        out = L.Dense(4)(h)
    elif kind == "embedding":
        inp = keras.Input((6,), dtype="int32")
        h = L.Embedding(50, 8)(inp)
        h = L.GlobalAveragePooling1D()(h)
        out = L.Dense(4)(L.Dense(16, activation="relu")(h))
    elif kind == "mlp8":                      # pipeline tests: 8 Dense layers
        h = inp = keras.Input((12,))
        for i in range(7):
            h = L.Dense(24, activation="tanh" if i % 2 else "relu")(h)
        out = L.Dense(4)(h)
    elif kind == "encoder4":                  # pipeline tests: 4 Transformer encoder blocks
        h = inp = keras.Input((8, 16))
        for _ in range(4):
            a = L.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
            h = L.LayerNormalization()(h + a)
            f = L.Dense(32, activation="relu")(h)
            f = L.Dense(16)(f)
            h = L.LayerNormalization()(h + f)
        h = L.GlobalAveragePooling1D()(h)
        out = L.Dense(4)(h)
    elif kind == "wide":                      # memory tests: one weight far larger than the rest
        inp = keras.Input((64,))
        h = L.Dense(128, activation="relu", name="wide")(inp)
        out = L.Dense(4, name="head")(h)
    elif kind == "mlp_bn":                    # batch statistics: differ per micro-batch
        inp = keras.Input((12,))
        h = L.Dense(24)(inp)
        h = L.BatchNormalization()(h)
        h = L.Activation("relu")(h)
        h = L.Dense(24, activation="relu")(h)
        out = L.Dense(4)(h)
    else:
        raise ValueError(kind)
    return keras.Model(inp, out, name=kind)


def data(kind: str, batch: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    if kind == "embedding":
        x = rng.integers(0, 50, size=(batch, 6)).astype("int32")
        return x, rng.standard_normal((batch, 4)).astype("float32")
    shape = {"mlp": (12,), "cnn": (12, 12, 3), "transformer": (8, 16), "mlp8": (12,),
             "encoder4": (8, 16), "mlp_bn": (12,), "wide": (64,)}[kind]
    x = rng.standard_normal((batch, *shape)).astype("float32")
    y = rng.standard_normal((batch, 4)).astype("float32")
    return x, y


def twin(kind: str):
    """Two models with identical weights, each with its own optimizer and step."""
    a = build(kind)
    b = build(kind)
    b.set_weights(a.get_weights())
    return (a, make_step(a)), (b, make_step(b))


def compiled_twin(kind: str):
    """Two compiled Keras models with identical weights (Adam 1e-2, MSE): a plain ``fit``
    reference and one to fit with a tfplace callback."""
    import keras
    ref, got = build(kind), build(kind)
    got.set_weights(ref.get_weights())
    for m in (ref, got):
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return ref, got


def optimizer(model):
    """Adam, except for attention: the key bias has an exactly-zero gradient (softmax ignores
    it), so its computed gradient is pure rounding noise that Adam normalises into lr-sized
    steps; any change in summation order (another device) then changes those weights
    completely. SGD with momentum keeps that noise at its true, negligible size."""
    import keras
    if model.name in ("transformer", "encoder4"):
        return keras.optimizers.SGD(learning_rate=5e-2, momentum=0.9)
    return keras.optimizers.Adam(learning_rate=1e-2)


def make_step(model):
    import tensorflow as tf
    import keras
    opt = optimizer(model)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss
    model.step_optimizer = opt
    return train_step


# The single-device reference of a fresh (model, step) pair: the same kind, initial weights,
# step function and optimizer always train to the same losses, weights and optimizer state, so
# each is computed once per process and replayed into the reference model afterwards.
_REFERENCE: dict = {}


def _reference_key(model, step, kind: str, steps: int):
    """None unless ``model`` is fresh (its step optimizer has not stepped yet)."""
    import hashlib
    opt = getattr(model, "step_optimizer", None)
    code = getattr(getattr(step, "python_function", step), "__code__", None)
    if opt is None or code is None or int(opt.iterations.numpy()) != 0:
        return None
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return (kind, steps, digest.hexdigest(), f"{code.co_filename}:{code.co_firstlineno}",
            type(opt).__name__,
            repr(sorted((k, v) for k, v in opt.get_config().items() if k != "name")))


def _train_reference(ref, kind: str, steps: int) -> list[float]:
    """Train the reference (model, step) ``steps`` steps, or replay the recorded result of an
    identical fresh pair: its weights and optimizer variables are then set to the trained ones."""
    model, step = ref
    key = _reference_key(model, step, kind, steps)
    if key is not None and key in _REFERENCE:
        losses, weights, slots = _REFERENCE[key]
        model.set_weights(weights)
        opt = model.step_optimizer
        opt.build(model.trainable_variables)
        for v, value in zip(opt.variables, slots):
            v.assign(value)
        return list(losses)
    losses = []
    for i in range(steps):
        x, y = data(kind, seed=i)
        losses.append(float(step(x, y)))
    if key is not None:
        _REFERENCE[key] = (losses, model.get_weights(),
                           [np.asarray(v) for v in model.step_optimizer.variables])
    return losses


def assert_close(got, ref, rtol: float = 1e-5) -> None:
    """``got`` equals ``ref`` within ``rtol`` relative to the tensor: each element within
    rtol * (|ref| + max |ref|), so within 1e-5 of the tensor's scale as well as of its own
    value (and within 1e-7, for a tensor of zeros).

    Why not each element against its own value alone: float32 rounding depends on the kernel
    and on the shapes and layouts it gets (oneDNN's MatMuls round differently for a micro-batch,
    a transposed weight or another device), and Adam divides each element's gradient by its
    own RMS, so an element whose gradient is mostly rounding noise moves by a learning-rate-
    sized step of that noise. On a oneDNN host the 8-layer MLP's pipelines were 2e-6 of each
    weight tensor's scale off the one-device step after 5 Adam steps (elements near zero: up to
    5e-5 of their own value); with SGD, 3e-7. A wrong gradient or a missed micro-batch is off
    by the size of an update, about 1e-2 of the scale here."""
    got, ref = np.asarray(got), np.asarray(ref)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=max(1e-7, rtol * scale))


def assert_same_training(ref, got, *, steps: int = 5, kind: str, rtol: float = 1e-5):
    """Run ``steps`` steps of both (model, step) pairs; losses and final weights must agree.
    The reference's result is recorded per process (``_train_reference``)."""
    (m_ref, _s_ref), (m_got, s_got) = ref, got
    losses_ref = _train_reference(ref, kind, steps)
    losses_got = []
    for i in range(steps):
        x, y = data(kind, seed=i)
        losses_got.append(float(s_got(x, y)))
    np.testing.assert_allclose(losses_got, losses_ref, rtol=rtol, atol=1e-7)
    assert losses_ref[-1] < losses_ref[0], "training should reduce the loss"
    for w_ref, w_got in zip(m_ref.get_weights(), m_got.get_weights()):
        assert_close(w_got, w_ref, rtol)
    return losses_ref, losses_got
