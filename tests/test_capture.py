"""Capture keeps everything: variables, outputs, and functional control flow as whole ops."""
from __future__ import annotations

import numpy as np
import pytest

import models
import tfplace
from tfplace.capture import capture
from tfplace.errors import GraphError


def _control_flow_step(model):
    import keras
    import tensorflow as tf
    opt = keras.optimizers.SGD(0.05)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = tf.reduce_mean(tf.square(pred - y))
        grads = tape.gradient(loss, model.trainable_variables)
        norm = tf.linalg.global_norm(grads)
        # tf.cond: clip only when the norm is large (a functional If/StatelessIf op)
        scale = tf.cond(norm > 1.0, lambda: 1.0 / norm, lambda: tf.constant(1.0))
        # tf.while_loop: a functional While op computing sum_{i<3} 0.5**i = 1.75
        _, acc = tf.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a + 0.5 ** tf.cast(i, tf.float32)),
                               (tf.constant(0), tf.constant(0.0)))
        opt.apply_gradients([(g * scale * acc / 1.75, v)
                             for g, v in zip(grads, model.trainable_variables)])
        return loss, acc
    return step


@pytest.mark.parametrize("placer", ["m_etf", "round_robin"])
def test_cond_and_while_are_kept_whole_and_match(local4, placer):
    ref_model, model = models.build("mlp"), models.build("mlp")
    model.set_weights(ref_model.get_weights())
    ref, step = _control_flow_step(ref_model), _control_flow_step(model)
    x, y = models.data("mlp")
    captured = capture(step, (x, y))
    ops = {n.op for n in captured.graph_def.node}
    assert ops & {"If", "StatelessIf"} and ops & {"While", "StatelessWhile"}
    assert len(captured.graph_def.library.function) >= 3
    pstep = tfplace.parallelize(step, cluster=local4, placer=placer)
    for i in range(5):
        x, y = models.data("mlp", seed=i)
        (l_ref, a_ref), (l_got, a_got) = ref(x, y), pstep(x, y)
        np.testing.assert_allclose(float(l_got), float(l_ref), rtol=1e-5)
        assert float(a_got) == pytest.approx(1.75)
    for a, b in zip(model.get_weights(), ref_model.get_weights()):
        models.assert_close(a, b)
    placement = pstep.plan.placement()
    for n in pstep.executor.captured.graph_def.node:
        assert n.name in placement          # nothing dropped: every node, incl. If/While, placed


def test_capture_records_variables_and_outputs():
    (model, step) = models.twin("mlp")[0]
    x, y = models.data("mlp")
    c = capture(step, (x, y))
    assert c.inputs == ("x", "y")
    assert len(c.outputs) == 1
    trainable = [v for v in c.variables if v.trainable]
    assert len(trainable) == len(model.trainable_variables)
    assert sum(v.nbytes for v in trainable) == sum(int(np.prod(w.shape)) * 4
                                                   for w in model.trainable_variables)
    names = {n.name for n in c.graph_def.node}
    assert all(v.node in names for v in c.variables)


def test_non_callable_is_a_graph_error():
    with pytest.raises(GraphError, match="cannot capture"):
        capture(42, ())


def test_gradients_are_marked_even_if_the_step_was_traced_before():
    (model, step) = models.twin("mlp")[0]
    x, y = models.data("mlp")
    step(x, y)                                   # a cached trace without marks exists now
    c = capture(step, (x, y))
    assert len(c.gradients) == len(model.trainable_variables)
    ops = {n.name: n.op for n in c.graph_def.node}
    assert all(ops[m.node] == "Identity" and not m.sparse for m in c.gradients)


def test_sparse_gradients_are_marked_as_slices():
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(50, 8),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        return tape.gradient(loss, model.trainable_variables)
    c = capture(step, (np.zeros((4, 5), "int32"), np.zeros((4, 1), "float32")))
    sparse = [m for m in c.gradients if m.sparse]
    assert len(sparse) == 1 and sparse[0].dense_shape == (50, 8)


def test_marks_come_from_the_captured_trace_only():
    """A momentum optimizer builds its slots on the first trace and TF traces again: each
    gradient must still be marked (and later synced) exactly once."""
    import keras
    import tensorflow as tf
    model = models.build("mlp")
    opt = keras.optimizers.SGD(0.01, momentum=0.9)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss
    c = capture(step, models.data("mlp"))
    assert len(c.gradients) == len(model.trainable_variables)
    assert len({m.node for m in c.gradients}) == len(c.gradients)
    names = {n.name for n in c.graph_def.node}
    assert all(m.node in names for m in c.gradients)
