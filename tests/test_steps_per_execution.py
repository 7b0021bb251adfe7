"""Several steps per call (``step.run(batches, steps_per_execution=K)``, Keras'
``steps_per_execution``): the same sequential steps as one call per step, to 1e-5 against the
single device; collectives re-keyed per copy of the step."""
from __future__ import annotations

import numpy as np
import pytest

import models
import tfplace
from tfplace.errors import GraphError, PlanError

STEPS = 6


def _batches(kind: str, n: int = STEPS, batch: int = 16):
    import tensorflow as tf
    return [tuple(tf.constant(v) for v in models.data(kind, batch=batch, seed=i))
            for i in range(n)]


def _reference(kind: str, batches):
    (model, step), twin = models.twin(kind)
    losses = [float(step(*b)) for b in batches]
    return model, losses, twin


@pytest.mark.parametrize("options,per_call", [
    ({"data_parallel": 2, "sync": "ring"}, 4),
    ({"data_parallel": 4, "sync": "ps"}, 3),
    ({"data_parallel": 2, "sync": "hierarchical"}, 3),
    ({"pipeline_stages": 2, "micro_batches": 2, "schedule": "1f1b"}, 3),
], ids=["ring-4", "ps-3", "hierarchical-3", "pipeline-3"])
def test_steps_per_call_match_single_device(options, per_call, local4):
    kind = "mlp"
    batches = _batches(kind)
    ref_model, ref_losses, (model, step) = _reference(kind, batches)
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", **options)
    outs = pstep.run(batches, steps_per_execution=per_call)
    assert len(outs) == STEPS
    models.assert_close([float(o) for o in outs], ref_losses)
    assert ref_losses[-1] < ref_losses[0]
    for w_ref, w_got in zip(ref_model.get_weights(), model.get_weights()):
        models.assert_close(w_got, w_ref)
    ex = pstep.executor
    # STEPS // per_call calls of the K-step function; a shorter last group ran step by step
    assert list(ex._multi) == [(per_call, "whole")]  # noqa: SLF001


def test_embedding_sparse_gradients_several_steps_per_call(local4):
    kind = "embedding"
    batches = _batches(kind, n=4)
    ref_model, ref_losses, (model, step) = _reference(kind, batches)
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=2,
                                sync="ring")
    outs = pstep.run(iter(batches), steps_per_execution=2)
    models.assert_close([float(o) for o in outs], ref_losses)
    for w_ref, w_got in zip(ref_model.get_weights(), model.get_weights()):
        models.assert_close(w_got, w_ref)


def test_keras_steps_per_execution_goes_through_one_call(local4):
    import keras
    ref, got = models.compiled_twin("mlp")
    x, y = models.data("mlp", batch=64)
    for m in (ref, got):
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", steps_per_execution=2)
    ref.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    cb = tfplace.keras.Parallelize(cluster=local4, placer="single", data_parallel=2,
                                   sync="ring")
    hist = got.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    for w_ref, w_got in zip(ref.get_weights(), got.get_weights()):
        models.assert_close(w_got, w_ref)
    assert list(cb.executor._multi) == [(2, "whole")]  # noqa: SLF001
    assert np.isfinite(hist.history["loss"]).all()


def test_step_copies_rekey_collectives_only(local4):
    from tfplace.rewrite.repeat import instance_key_consts, step_copy
    from tensorflow.python.framework import tensor_util
    batches = _batches("mlp", n=1)
    (_m, step), _twin = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=2,
                                sync="ring")
    pstep(*batches[0])
    gd = pstep.executor.graph_def
    keys = instance_key_consts(gd)
    assert keys, "a ring all-reduce has collectives"
    copies = [step_copy(gd, k) for k in range(3)]
    assert copies[0] is gd
    nodes = [{n.name: n for n in c.node} for c in copies]
    values = [{k: int(tensor_util.MakeNdarray(n[k].attr["value"].tensor)) for k in keys}
              for n in nodes]
    for k in keys:                                # each copy its own keys, the same per run
        assert len({v[k] for v in values}) == 3
    assert values[1] == {k: int(tensor_util.MakeNdarray(n.attr["value"].tensor))
                         for n in step_copy(gd, 1).node if n.name in keys for k in [n.name]}
    for name, node in nodes[2].items():           # everything else unchanged
        if name not in keys:
            assert node == nodes[0][name]


def test_bad_steps_per_execution(local4):
    (_m, step), _twin = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single")
    with pytest.raises(PlanError, match="steps_per_execution=0"):
        pstep.run(_batches("mlp", n=2), steps_per_execution=0)


def test_collective_key_from_a_computation_is_refused():
    import tensorflow as tf
    from tfplace.rewrite.repeat import step_copy
    gd = tf.compat.v1.GraphDef()
    key = gd.node.add(name="key", op="Placeholder")
    key.attr["dtype"].type = 3
    for name, op in (("x", "Placeholder"), ("size", "Const"), ("group", "Const"),
                     ("token", "Placeholder")):
        gd.node.add(name=name, op=op)
    c = gd.node.add(name="reduce", op="CollectiveReduceV2")
    c.input.extend(["x", "size", "group", "key", "token"])
    with pytest.raises(GraphError, match="instance key of collective 'reduce' comes from 'key'"):
        step_copy(gd, 1)
