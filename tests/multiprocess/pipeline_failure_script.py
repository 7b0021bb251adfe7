"""Run by test_pipeline_failure.py in its own process: a K=2 pipeline on 2 gRPC workers.

1. A failing check inside stage 1 (on worker 1) fails the step; the next step runs again.
2. Stage 1's worker is killed while a step is running: WorkerLost, the user's weights are those
   of the last good step.
Prints one line per phase: ``ASSERT after Xs: <error>`` and ``WORKERLOST after Xs
weights_intact=B: <error>`` (or ``NO ERROR`` / ``OTHER``)."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tfplace  # noqa: E402
from tfplace.errors import WorkerLost  # noqa: E402

cluster = tfplace.Cluster.launch_local(workers=2, devices_per_worker=1)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402


class Slow(keras.layers.Layer):
    """Checks its activations (< 1e3) and burns ``spin`` matmul rounds, off the gradient path:
    spin = 0 in ordinary steps; the kill phase sets it so that the step lasts seconds."""

    def build(self, shape):
        self.spin = self.add_weight(shape=(), initializer="zeros", trainable=False, name="spin")

    def call(self, h):
        ok = tf.reduce_all(tf.abs(h) < 1e3)
        with tf.control_dependencies([tf.debugging.Assert(ok, ["activation too large"])]):
            h = tf.identity(h)
        a = tf.random.stateless_uniform([384, 384], seed=[1, 2]) / 384.0
        _, a = tf.while_loop(lambda i, a: i < tf.cast(self.spin, tf.int32),
                             lambda i, a: (i + 1, tf.tanh(a @ a)), (0, a))
        return h + 0.0 * tf.stop_gradient(tf.reduce_sum(a))


keras.utils.set_random_seed(7)
h = inp = keras.Input((12,))
for i in range(6):
    h = keras.layers.Dense(16, activation="relu")(h)
    if i == 4:
        slow = Slow()
        h = slow(h)
model = keras.Model(inp, keras.layers.Dense(4)(h), name="slow")
step = models.make_step(model)
pstep = tfplace.parallelize(step, cluster=cluster, pipeline_stages=2, micro_batches=2)
x, y = models.data("mlp8")
pstep(x, y)
stage1 = pstep.plan.pipeline.stages[1].devices[0]
where = {n: d for n, d in pstep.plan.placement().items() if n.endswith("/Assert")}
print(f"STAGE1 {stage1} assert_on={sorted(set(where.values()))}", flush=True)

t0 = time.perf_counter()
try:
    pstep(x * 1e6, y)
    print("NO ERROR (assert)", flush=True)
except tfplace.errors.StageFailed as e:
    said = "activation too large" in str(e) and "pipeline stage 1 (" in str(e) and \
        isinstance(e.__cause__, tf.errors.InvalidArgumentError)
    print(f"ASSERT after {time.perf_counter() - t0:.1f}s message_ok={said}: "
          f"{type(e).__name__}", flush=True)
pstep(x, y)                                     # the pipeline runs again after the failure
good = [w.copy() for w in model.get_weights()]

slow.spin.assign(20000.0)                       # far longer than the test waits
pstep.refresh()
killed = []


def kill() -> None:
    time.sleep(1.5)                             # the step is running by now
    killed.append(time.perf_counter())
    cluster._launcher.procs[1].kill()


threading.Thread(target=kill, daemon=True).start()
start = time.perf_counter()
try:
    pstep(x, y)
    print("NO ERROR (kill)", flush=True)
    os._exit(1)
except WorkerLost as e:
    now = time.perf_counter()
    dt = now - killed[0] if killed else -1.0
    same = all(np.array_equal(a, b) for a, b in zip(good, model.get_weights())
               if a.shape != ())
    print(f"WORKERLOST after {dt:.1f}s (step ran {killed[0] - start:.1f}s before the kill) "
          f"weights_intact={same}: {e}", flush=True)
except Exception as e:  # noqa: BLE001 - reported to the test
    print(f"OTHER {type(e).__name__}: {str(e)[:500]}", flush=True)
cluster.shutdown()
os._exit(0)
