"""Captured constants are made once on the device of the ops that read them."""
from __future__ import annotations

import numpy as np

import models
import tfplace


def _step(model, proj):
    import tensorflow as tf
    import keras
    opt = keras.optimizers.SGD(0.05)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            d = tf.matmul(model(x, training=True) - y, proj)   # proj: captured, 4 x 40
            loss = tf.reduce_mean(d * d)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss
    return train_step


def test_a_large_captured_constant_is_made_on_the_stage_that_reads_it(local4):
    """A 160-element constant read only by the last pipeline stage is copied there once (TF
    passes it to the function as an argument, which would otherwise cross every step); the
    training equals one device's."""
    import tensorflow as tf
    proj = tf.constant(np.random.default_rng(1).standard_normal((4, 40)).astype("float32"))
    (ref_model, _s), (model, _s2) = models.twin("mlp8")
    ref, got = _step(ref_model, proj), _step(model, proj)
    pstep = tfplace.parallelize(got, cluster=local4, pipeline_stages=2, micro_batches=2)
    batches = [models.data("mlp8", seed=i) for i in range(3)]
    expected = [float(ref(x, y)) for x, y in batches]
    losses = [float(pstep(x, y)) for x, y in batches]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    for a, b in zip(ref_model.get_weights(), model.get_weights()):
        models.assert_close(b, a)
    last = pstep.plan.pipeline.stages[-1].devices[0]
    big = [t for _n, t in pstep.executor.constants if int(tf.size(t)) == 160]
    assert big and all(t.device == last for t in big), [t.device for t in big]
    assert proj.device != last
    # each micro-batch's copy of the step has its own placeholder; they share one copy
    assert len(big) == 2 and big[0] is big[1]


def test_near_moves_only_what_tf_passes_as_an_argument(local4):
    import tensorflow as tf
    from tfplace.runtime.constants import near
    device = "/job:localhost/replica:0/task:0/device:CPU:1"
    with tf.device("/job:localhost/replica:0/task:0/device:CPU:0"):
        small, large = tf.range(128), tf.range(129)
    assert near({device}, large).device == device
    assert near({device}, small) is small                  # a Const in the function anyway
    assert near({device, ""}, large) is large              # read on two devices: left alone
