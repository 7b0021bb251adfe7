"""K pipeline stages over M micro-batches equal the single-device full-batch step (1e-5 relative).

Every test compares against the same model trained on one device on the whole batch:
losses, weights and optimizer slots (``models.assert_same_training``). BatchNorm is the
documented exception: its batch statistics are per micro-batch.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import models
import tfplace
from tfplace.errors import PlanError, StageFailed
from tfplace.pipeline_parallel import pipeline_spec
from tfplace.rewrite import pipeline_transpose
from tfplace.rewrite.pipeline import done_name, segments

K = 4


def _base(name: str) -> str:
    head, sep, rest = name.partition("/")
    return rest if sep and head.startswith("tfplace_r") and head[9:].isdigit() else name


def _check_graph(pstep) -> None:
    """Every copied op runs on its planned device, and each stage's segments are chained in the
    schedule's order by NoOps. In a stage of several devices the flush (a gradient's sum and
    its optimizer arithmetic, in no F/B segment) moves to its variable's device in the stage."""
    plan = pstep.plan
    pipe = plan.pipeline
    placement = plan.placement()
    gd = pstep.executor.graph_def
    nodes = {n.name: n for n in gd.node}
    copied = [n for n in gd.node if n.name.startswith("tfplace_r") and _base(n.name) in placement]
    assert len(copied) >= len(placement) * min(2, pipe.micro_batches) * 0.8
    stage_devs = {op: s.devices for s in pipe.stages for op in s.ops}
    in_segment = {name for names in segments(gd, pipeline_spec(plan, pstep.executor.captured),
                                             pipe).values() for name in names}
    wrong = [(n.name, n.device) for n in copied if n.device != placement[_base(n.name)] and
             not (n.name not in in_segment and n.device in stage_devs[_base(n.name)])]
    assert not wrong, wrong[:5]
    for v in plan.variables:                    # each variable once, on its layer's stage
        assert nodes[f"tfplace_r0/{v.node}"].device == v.device
    # the first stage transposes its weights for the backward after its last forward before
    # its first backward (it waits for a gradient there), not between its forwards
    order0 = pipe.orders()[0]
    first_b = next(i for i, op in enumerate(order0) if op.kind == "B")
    transposes = [n for n in gd.node if n.name.startswith(pipeline_transpose.SCOPE)]
    assert bool(transposes) == (pipe.micro_batches > 1)      # one weight read, M products
    for n in transposes:
        deferred = f"^{done_name(0, order0[first_b - 1])}" in n.input
        assert deferred == (n.device in pipe.stages[0].devices), (n.name, n.device)
    for s, order in enumerate(pipe.orders()):
        dones = [done_name(s, op) for op in order]
        assert all(nodes[d].op == "NoOp" and nodes[d].device == pipe.stages[s].devices[0]
                   for d in dones)
        for prev, nxt in zip(dones, dones[1:]):
            ops = [i.lstrip("^") for i in nodes[nxt].input]
            assert any(f"^{prev}" in nodes[o].input for o in ops), (prev, nxt)


@pytest.mark.parametrize("kind,schedule,micro", [
    ("mlp8", "gpipe", 1), ("mlp8", "gpipe", 4), ("mlp8", "gpipe", 8),
    ("mlp8", "1f1b", 1), ("mlp8", "1f1b", 4), ("mlp8", "1f1b", 8),
    ("encoder4", "1f1b", 4), ("encoder4", "gpipe", 8)])
def test_pipeline_matches_single_device(kind, schedule, micro, local4):
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=local4, pipeline_stages=K, micro_batches=micro,
                                schedule=schedule)
    models.assert_same_training(ref, (model, pstep), kind=kind)
    pipe = pstep.plan.pipeline
    assert pipe.num_stages == K and pipe.micro_batches == micro and pipe.schedule == schedule
    assert len({s.devices[0] for s in pipe.stages}) == K
    # the optimizer slots trained the same way (Adam's m and v, SGD's momentum)
    for a, b in zip(ref[0].step_optimizer.variables, model.step_optimizer.variables):
        models.assert_close(np.asarray(b), np.asarray(a))
    _check_graph(pstep)
    if kind == "mlp8":                             # the queues, on the default backend
        from test_pipeline_queues import check_queues
        from tfplace.runtime.channel import resolve_backend
        check_queues(pstep, resolve_backend())
    summary = pstep.plan.summary()
    assert "queues" in summary and "schedule" in summary


def test_stage_boundaries_and_summary(local4):
    from tfplace.capture import capture
    from tfplace.pipeline_parallel import micro_batch, plan_pipeline_step
    _ref, (model, step) = models.twin("mlp8")
    (args, _kw), batch = micro_batch((models.data("mlp8"), {}), 2)
    captured = capture(step, args)
    plan = plan_pipeline_step(captured, local4, stages=2, micro_batches=2)
    units = [u for s in plan.pipeline.stages for u in s.units]
    plan = plan_pipeline_step(captured, local4, stages=2, micro_batches=2,
                              stage_boundaries=[units[3]])
    assert plan.pipeline.stages[1].units[0] == units[3]
    assert plan.placer == "pipeline" and plan.pipeline.global_batch == batch == 16
    assert plan.placement()[captured.inputs[0]] == plan.pipeline.stages[0].devices[0]
    summary = plan.summary()
    assert "s1" in summary and "F0" in summary and "capacity" in summary


def test_fit_callback_matches_plain_fit(local4):
    ref, got = models.compiled_twin("mlp8")
    x, y = models.data("mlp8", batch=64)
    h_ref = ref.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    cb = tfplace.keras.Parallelize(cluster=local4, pipeline_stages=K, micro_batches=4,
                                   schedule="1f1b")
    h_got = got.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    assert cb.plan.pipeline.num_stages == K
    # batches after the first were read ahead and copied onto the first stage's device
    assert cb.input_device == cb.plan.pipeline.stages[0].devices[0]
    layers = {layer.name for layer in got.layers}
    assert any(u in layers for s in cb.plan.pipeline.stages for u in s.units)
    np.testing.assert_allclose(h_got.history["loss"], h_ref.history["loss"], rtol=1e-5)
    for w_ref, w_got in zip(ref.get_weights(), got.get_weights()):
        models.assert_close(w_got, w_ref)


def test_batchnorm_differs_per_micro_batch(local4):
    """BatchNorm normalises each micro-batch with its own statistics: documented, not silent.
    One micro-batch equals the full-batch step; four do not."""
    ref, (model, step) = models.twin("mlp_bn")
    one = tfplace.parallelize(step, cluster=local4, pipeline_stages=2, micro_batches=1)
    models.assert_same_training(ref, (model, one), kind="mlp_bn")
    ref, (model, step) = models.twin("mlp_bn")
    four = tfplace.parallelize(step, cluster=local4, pipeline_stages=2, micro_batches=4)
    with pytest.raises(AssertionError):
        models.assert_same_training(ref, (model, four), kind="mlp_bn")
    diff = max(float(np.max(np.abs(a - b) / (np.abs(a) + 1e-3)))
               for a, b in zip(ref[0].trainable_weights, model.trainable_weights))
    assert diff > 1e-4


def test_plan_errors(local4):
    _ref, (_model, step) = models.twin("mlp8")
    x, y = models.data("mlp8")              # a batch of 16
    with pytest.raises(PlanError, match=r"5 stages need 5 devices but the cluster has 4"):
        tfplace.parallelize(step, cluster=local4, pipeline_stages=5)(x, y)
    with pytest.raises(PlanError, match=r"16 does not split into 3 .*\(1, 2, 4, 8, 16\)"):
        tfplace.parallelize(step, cluster=local4, pipeline_stages=2, micro_batches=3)(x, y)
    with pytest.raises(PlanError, match="unknown pipeline schedule 'zigzag'.*1f1b, gpipe"):
        tfplace.parallelize(step, cluster=local4, pipeline_stages=2, schedule="zigzag")


def _checked_model():
    """mlp8 with an assertion inside its third layer: activations must stay below 1e3."""
    import keras
    import tensorflow as tf

    class Checked(keras.layers.Layer):
        def call(self, h):
            ok = tf.reduce_all(tf.abs(h) < 1e3)
            with tf.control_dependencies([tf.debugging.Assert(ok, ["activation too large"])]):
                return tf.identity(h)

    keras.utils.set_random_seed(7)
    h = inp = keras.Input((12,))
    for i in range(6):
        h = keras.layers.Dense(24, activation="relu")(h)
        if i == 3:
            h = Checked()(h)
    return keras.Model(inp, keras.layers.Dense(4)(h), name="checked")


def test_error_inside_a_stage_fails_the_step(local4):
    import tensorflow as tf
    model = _checked_model()
    step = models.make_step(model)
    pstep = tfplace.parallelize(step, cluster=local4, pipeline_stages=K, micro_batches=4)
    x, y = models.data("mlp8")
    pstep(x, y)                                    # fine on ordinary inputs
    placement = pstep.plan.placement()
    asserts = [n for n in placement if n.endswith("/Assert") and "checked" in n]
    assert asserts and placement[asserts[0]] != pstep.plan.pipeline.stages[0].devices[0]
    start = time.monotonic()
    with pytest.raises(StageFailed, match="activation too large") as info:
        pstep(x * 1e6, y)
    assert time.monotonic() - start < 10
    stage = next(s for s in pstep.plan.pipeline.stages if placement[asserts[0]] in s.devices)
    assert f"pipeline stage {stage.index} ({placement[asserts[0]]}), forward of micro-batch" \
        in str(info.value), str(info.value)
    assert isinstance(info.value.__cause__, tf.errors.InvalidArgumentError)
    pstep(x, y)                                    # the next step runs again


def test_stage_devices_spread_over_workers():
    from tfplace.cluster import Task, grpc_cluster
    from tfplace.pipeline_parallel import stage_devices
    c = grpc_cluster([Task("worker", i, f"127.0.0.1:{7000 + i}") for i in range(2)], 2)
    w0, w1 = "/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"
    assert stage_devices(c, 2) == [(f"{w0}/device:CPU:0",), (f"{w1}/device:CPU:0",)]
    assert stage_devices(c, 3) == [(f"{w0}/device:CPU:0",), (f"{w0}/device:CPU:1",),
                                   (f"{w1}/device:CPU:0",)]
    assert stage_devices(c, 4) == [(d,) for d in c.names]
    assert stage_devices(c, 5) is None and stage_devices(c, "auto") is None
    # a stage of 2 devices stays inside one worker: only the stage boundary crosses gRPC
    assert stage_devices(c, 2, 2) == [(f"{w0}/device:CPU:0", f"{w0}/device:CPU:1"),
                                      (f"{w1}/device:CPU:0", f"{w1}/device:CPU:1")]
    assert stage_devices(c, 3, 2) is None
    from tfplace.pipeline_parallel import check_devices_per_stage
    with pytest.raises(PlanError, match="needs a fixed pipeline_stages \\(got 'auto'\\)"):
        check_devices_per_stage(c, "auto", 2)
    with pytest.raises(PlanError, match=r"devices_per_stage must be an int >= 1 \(got 0\)"):
        check_devices_per_stage(c, 2, 0)


def test_stage_spans_devices_placed_by_m_etf(local4):
    """K=2 stages of 2 devices each: the foundation's m_etf places each stage's ops over its
    own two devices; 5 steps equal the single-device full-batch step."""
    ref, (model, step) = models.twin("mlp8")
    pstep = tfplace.parallelize(step, cluster=local4, pipeline_stages=2, micro_batches=4,
                                devices_per_stage=2, placer="m_etf")
    models.assert_same_training(ref, (model, pstep), kind="mlp8")
    pipe = pstep.plan.pipeline
    assert [s.devices for s in pipe.stages] == [local4.names[:2], local4.names[2:]]
    placement = pstep.plan.placement()
    for s in pipe.stages:                       # both devices work, nothing leaves the stage
        assert {placement[op] for op in s.ops} == set(s.devices)
    _check_graph(pstep)
    from test_pipeline_queues import check_queues
    from tfplace.runtime.channel import resolve_backend
    check_queues(pstep, resolve_backend())         # queues between groups of devices too
    summary = pstep.plan.summary()
    assert all(",".join(s.devices) in summary for s in pipe.stages)
    with pytest.raises(PlanError, match=r"2 stages x 3 devices per stage need 6 devices but "
                                        r"the cluster has 4.*devices_per_stage=2"):
        tfplace.parallelize(step, cluster=local4, pipeline_stages=2, micro_batches=2,
                            devices_per_stage=3)(*models.data("mlp8"))
