"""2 pipeline stages on 2 loopback gRPC workers equal the single-device full-batch step."""
from __future__ import annotations

import pytest

import models
import tfplace


@pytest.mark.parametrize("kind,schedule,micro", [
    ("mlp8", "gpipe", 4), ("mlp8", "1f1b", 8), ("mlp8", "1f1b", 1), ("encoder4", "1f1b", 4)])
def test_grpc_pipeline_matches_single_device(kind, schedule, micro, workers2):
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=workers2, pipeline_stages=2, micro_batches=micro,
                                schedule=schedule)
    models.assert_same_training(ref, (model, pstep), kind=kind)
    pipe = pstep.plan.pipeline
    # one stage per worker: activations and gradients cross between the processes
    assert [s.devices[0].split("/device:")[0] for s in pipe.stages] == \
        ["/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"]
    homes = {p.device.split("/device:")[0] for _n, _o, p in pstep.executor.pairs}
    assert homes == {"/job:worker/replica:0/task:0", "/job:worker/replica:0/task:1"}


def test_prefetch_reads_each_input_on_the_stage_that_uses_it(workers2):
    """pstep.prefetch(dataset): the inputs are read on stage 0's worker and the labels on
    stage 1's, each by an IteratorGetNext inside the step (the batches never pass through this
    process, nor the labels through stage 0); the micro-batch splits run there, and 5 steps
    equal the single-device step."""
    import numpy as np
    import tensorflow as tf
    ref, (model, step) = models.twin("mlp8")
    pstep = tfplace.parallelize(step, cluster=workers2, pipeline_stages=2, micro_batches=2)
    batches = [models.data("mlp8", seed=i) for i in range(5)]
    ds = tf.data.Dataset.from_tensor_slices(tuple(np.concatenate(a) for a in zip(*batches)))
    losses, devices = [], []
    for x, y in pstep.prefetch(ds.batch(16)):
        devices.append((x.devices, y.devices))
        losses.append(float(pstep(x, y)))
    first, last = (s.devices[0] for s in pstep.plan.pipeline.stages)
    assert first.startswith("/job:worker/replica:0/task:0/")
    assert last.startswith("/job:worker/replica:0/task:1/")
    assert devices == [((first,), (last,))] * 5
    splits = {n.name: n.device for n in pstep.executor.graph_def.node if n.op == "Split" and
              n.name.startswith("tfplace_sync/")}
    assert splits == {"tfplace_sync/split_x": first, "tfplace_sync/split_y": last}
    (fn,) = pstep.executor._multi.values()                 # noqa: SLF001 - the lazy function
    reads = sorted(n.device for n in fn.graph.as_graph_def().node if n.op == "IteratorGetNext")
    assert reads == [first, last]
    expected = [float(ref[1](x, y)) for x, y in batches]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    for w_ref, w_got in zip(ref[0].get_weights(), model.get_weights()):
        models.assert_close(w_got, w_ref)


def test_prefetch_reads_the_dataset_on_the_worker_unless_it_cannot_move(workers2):
    """A serialisable dataset is rebuilt on the worker and iterated there (its batches never
    pass through this process); a Python generator cannot move, so it is read here and each
    batch copied ahead. Both give the same batches, on the worker."""
    import tensorflow as tf
    from tfplace.runtime.prefetch import on_worker, to_device
    device = workers2.names[2]
    ds = tf.data.Dataset.range(6).map(lambda i: (tf.fill([2], i), i * 10)).batch(2)
    assert on_worker(ds, device)._variant_tensor.device == device   # rebuilt on the worker
    got = list(to_device(ds, device))
    assert [b[1].numpy().tolist() for b in got] == [[0, 10], [20, 30], [40, 50]]
    assert {b[0].device for b in got} == {device}
    gen = tf.data.Dataset.from_generator(lambda: iter([[1, 2], [3, 4]]),
                                         output_signature=tf.TensorSpec([2], tf.int64))
    assert on_worker(gen, device) is None                   # read here, copied ahead
    got = list(to_device(gen, device))
    assert [b.numpy().tolist() for b in got] == [[1, 2], [3, 4]]
    assert {b.device for b in got} == {device}
