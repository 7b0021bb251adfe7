"""Per-replica input (``step.prefetch(dataset)`` on a data-parallel step): each replica reads
its own share of every batch on its own device, inside the step, and the training equals the
single-device step on the whole batches to 1e-5. With one replica (a pipeline) each argument
is read on the device of the op that uses it: the inputs on the first stage, the labels on the
last."""
from __future__ import annotations

import numpy as np
import pytest

import models
import tfplace
from tfplace.errors import GraphError

STEPS = 5


def _dataset(kind: str, n: int = STEPS, batch: int = 16):
    import tensorflow as tf
    parts = [models.data(kind, batch=batch, seed=i) for i in range(n)]
    xs, ys = (np.concatenate([p[k] for p in parts]) for k in (0, 1))
    return tf.data.Dataset.from_tensor_slices((xs, ys)).batch(batch)


def _check(ref_model, ref_losses, model, losses):
    models.assert_close([float(v) for v in losses], ref_losses)
    assert ref_losses[-1] < ref_losses[0]
    for w_ref, w_got in zip(ref_model.get_weights(), model.get_weights()):
        models.assert_close(w_got, w_ref)


@pytest.mark.parametrize("kind,replicas,sync,per_call", [
    ("mlp", 4, "ring", 1), ("mlp", 2, "ps", 2), ("embedding", 2, "hierarchical", 1)],
    ids=["mlp-ring-4", "mlp-ps-2-K2", "embedding-hier"])
def test_prefetch_reads_each_share_on_its_replica(kind, replicas, sync, per_call, local4):
    from tfplace.runtime.per_replica import PerReplica
    ds = _dataset(kind)
    (ref_model, ref_step), (model, step) = models.twin(kind)
    ref_losses = [float(ref_step(x, y)) for x, y in ds]
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=replicas,
                                sync=sync)
    batches = list(pstep.prefetch(ds))
    assert len(batches) == STEPS
    x, y = batches[0]
    assert isinstance(x, PerReplica) and isinstance(y, PerReplica)
    assert x.source is not None                      # read inside the step, not here
    assert list(x.devices) == [g[0] for g in pstep.plan.replicas]
    assert tuple(x.shape) == (16, *models.data(kind)[0].shape[1:])
    if per_call == 1:
        losses = [pstep(*b) for b in batches]
    else:
        losses = pstep.run(batches, steps_per_execution=per_call)
    _check(ref_model, ref_losses, model, losses)
    ex = pstep.executor
    modes = {mode for _k, mode in ex._multi}          # noqa: SLF001
    assert modes == {"lazy"}
    # every replica's IteratorGetNext runs on that replica's device
    fn = ex._multi[per_call, "lazy"]                  # noqa: SLF001
    reads = sorted(op.device for op in fn.graph.get_operations()
                   if op.type == "IteratorGetNext")
    assert reads == sorted([g[0] for g in pstep.plan.replicas] * per_call)


def _ring2(local4, batches):
    """(reference model, its losses on ``batches``, model, its 2-replica ring step)."""
    (ref_model, ref_step), (model, step) = models.twin("mlp")
    ref_losses = [float(ref_step(x, y)) for x, y in batches]
    return ref_model, ref_losses, model, tfplace.parallelize(
        step, cluster=local4, placer="single", data_parallel=2, sync="ring")


def test_unknown_length_reads_shares_one_step_ahead(local4):
    """A dataset whose length TF does not know (a filter): the shares are read here, as tensors
    already on the replicas' devices, and the end is found."""
    from tfplace.runtime.per_replica import PerReplica
    ds = _dataset("mlp").filter(lambda x, y: True)
    ref_model, ref_losses, model, pstep = _ring2(local4, ds)
    losses = []
    for x, y in pstep.prefetch(ds):
        assert isinstance(x, PerReplica) and x.source is None
        assert [v.device for v in x.values] == [g[0] for g in pstep.plan.replicas]
        losses.append(pstep(x, y))
    assert len(losses) == STEPS
    _check(ref_model, ref_losses, model, losses)


def test_a_dataset_that_cannot_move_is_split_by_the_step(local4):
    """A Python generator cannot be rebuilt on a replica's device: whole batches, as without
    prefetch, and the same numbers."""
    import tensorflow as tf
    parts = [models.data("mlp", seed=i) for i in range(STEPS)]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(parts), output_signature=(tf.TensorSpec((16, 12), tf.float32),
                                               tf.TensorSpec((16, 4), tf.float32)))
    ref_model, ref_losses, model, pstep = _ring2(local4, parts)
    losses = []
    for x, y in pstep.prefetch(ds):
        assert isinstance(x, tf.Tensor)
        losses.append(pstep(x, y))
    _check(ref_model, ref_losses, model, losses)


def test_per_replica_arguments_must_fit_the_step(local4):
    import tensorflow as tf
    from tfplace.runtime.per_replica import PerReplica
    (_m, step), (_m2, step2) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=2,
                                sync="ring")
    x, y = (tf.constant(v) for v in models.data("mlp"))
    pstep(x, y)
    halves = [PerReplica([x[:8], x[8:]]), PerReplica([y[:8], y[8:]])]
    pstep(*halves)                                     # eager shares: accepted
    thirds = PerReplica([x[:4], x[4:8], x[8:12], x[12:]])
    with pytest.raises(GraphError, match="split across 2 replicas but the call gave 4 shares"):
        pstep(PerReplica([x[:4], x[4:8], x[8:12], x[12:]]), PerReplica([y[:4], y[4:8], y[8:12],
                                                                        y[12:]]))
    with pytest.raises(GraphError, match="gave one tensor"):
        pstep(halves[0], y)
    single = tfplace.parallelize(step2, cluster=local4, placer="single")
    single(x, y)
    with pytest.raises(GraphError, match="not split across replicas"):
        single(PerReplica([x]), PerReplica([y]))
    assert thirds.count == 4


def test_presplit_pass_replaces_the_split_by_placeholders(local4):
    import tensorflow as tf
    from tfplace.rewrite import presplit
    (_m, step), _twin = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=4,
                                sync="ring")
    x, y = (tf.constant(v) for v in models.data("mlp"))
    pstep(x, y)
    ex = pstep.executor
    gd, names = presplit.apply(ex.graph_def, ex.captured.inputs)
    nodes = {n.name: n for n in gd.node}
    assert all(len(g) == 4 for g in names)
    for group in names:
        for r, name in enumerate(group):
            node = nodes[name]
            assert node.op == "Placeholder" and not node.input
            assert node.attr["shape"].shape.dim[0].size == 4           # 16 rows / 4 replicas
    assert not any(n.op == "Split" and n.name.startswith(presplit.SPLIT_SCOPE) for n in gd.node)
    assert not set(ex.captured.inputs) & set(nodes)                  # the global inputs went
    with pytest.raises(GraphError, match="nothing to feed per replica"):
        presplit.apply(gd, [n for g in names for n in g])


def test_one_replica_reads_the_whole_batch_where_the_step_reads_it(local4):
    """Without data parallelism, prefetch reads each whole batch inside the step, on the
    device of the op that reads the input; 1 step, then 2 per call."""
    ds = _dataset("mlp")
    (ref_model, ref_step), (model, step) = models.twin("mlp")
    ref_losses = [float(ref_step(x, y)) for x, y in ds]
    pstep = tfplace.parallelize(step, cluster=local4, placer="single")
    it = pstep.prefetch(ds)
    x, y = next(it)
    assert x.count == 1 and tuple(x.shape) == (16, 12)
    losses = [pstep(x, y)] + pstep.run(it, steps_per_execution=2)
    _check(ref_model, ref_losses, model, losses)
    device = pstep.plan.devices_used[0]
    for fn in pstep.executor._multi.values():                       # noqa: SLF001
        assert {op.device for op in fn.graph.get_operations()
                if op.type == "IteratorGetNext"} == {device}


def test_a_lazy_batch_is_read_once_and_in_order(local4):
    """The step reads each replica's next rows itself: a batch passed twice, or out of order,
    is refused before anything runs (it would train on other rows than it names)."""
    (_m, step), _twin = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=2,
                                sync="ring")
    it = pstep.prefetch(_dataset("mlp"))
    first, second, third = next(it), next(it), next(it)
    with pytest.raises(GraphError, match=r"batch\(es\) \[1\] .* would read batch\(es\) \[0\]"):
        pstep(*second)
    pstep(*first)
    with pytest.raises(GraphError, match="once, in order"):
        pstep(*first)
    with pytest.raises(GraphError, match="gave one tensor|must be one whole batch"):
        pstep(second[0], third[1])
    pstep.run([second, third], steps_per_execution=2)


def test_a_batch_of_another_size_is_an_error_not_a_dropped_row(local4):
    """18 rows: a last batch of 2 after one of 16. The step was compiled for 16 rows over 2
    replicas; the short batch fails when it is read, naming the sizes and the fix."""
    import tensorflow as tf
    x, y = models.data("mlp", batch=18)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    (_m, step), _twin = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single", data_parallel=2,
                                sync="ring")
    it = pstep.prefetch(ds)
    pstep(*next(it))
    with pytest.raises(tf.errors.InvalidArgumentError, match="compiled for batches of 16 rows"):
        pstep(*next(it))


def test_run_source_reads_on_the_replicas_with_the_same_losses(local4, tmp_path):
    """``tfplace run --input worker`` (``run_source(input_from="worker")``): each replica reads
    its share in the step; the losses equal passing the batch from here."""
    from test_cli_errors import MLP_SCRIPT
    from tfplace.runner import run_source
    path = tmp_path / "mlp_step.py"
    path.write_text(MLP_SCRIPT)
    losses = {how: run_source(f"{path}:train_step", local4, placer="single", steps=3,
                              batch_size=16, data_parallel=2, sync="ring",
                              steps_per_execution=2, input_from=how)
              for how in ("client", "worker")}
    np.testing.assert_allclose(losses["worker"], losses["client"], rtol=1e-6)
    assert losses["worker"][-1] < losses["worker"][0]


def test_pipeline_reads_inputs_on_the_first_stage_and_labels_on_the_last(local4):
    """2 stages: x is read on stage 0's device and y on stage 1's. Batches 0-1 come from a
    dataset of unknown length (read one step ahead here, as tensors already there), batches
    2-4 from one of known length (read inside the step); all equal the single-device step."""
    ds = _dataset("mlp8")
    (ref_model, ref_step), (model, step) = models.twin("mlp8")
    ref_losses = [float(ref_step(x, y)) for x, y in ds]
    pstep = tfplace.parallelize(step, cluster=local4, pipeline_stages=2, micro_batches=2)
    losses = []
    for x, y in pstep.prefetch(ds.take(2).filter(lambda x, y: True)):
        stages = pstep.plan.pipeline.stages
        first, last = stages[0].devices[0], stages[-1].devices[0]
        assert first != last and (x.device, y.device) == (first, last)
        losses.append(pstep(x, y))
    assert not pstep.executor._multi                                # noqa: SLF001
    for x, y in pstep.prefetch(ds.skip(2)):
        assert x.source is not None and (x.devices, y.devices) == ((first,), (last,))
        assert x.count == 1 and tuple(y.shape) == (16, 4)
        losses.append(pstep(x, y))
    _check(ref_model, ref_losses, model, losses)
    functions = pstep.executor._multi                               # noqa: SLF001
    assert set(functions) == {(1, "lazy")}
    reads = sorted(op.device for op in functions[1, "lazy"].graph.get_operations()
                   if op.type == "IteratorGetNext")
    assert reads == sorted([first, last])


def test_a_short_batch_read_whole_is_an_error(local4):
    """One replica reads whole batches: each argument is checked against the rows the step
    was compiled for when it is read."""
    import tensorflow as tf
    x, y = models.data("mlp", batch=18)
    (_m, step), _twin = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, placer="single")
    it = pstep.prefetch(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
    pstep(*next(it))
    with pytest.raises(tf.errors.InvalidArgumentError, match="compiled for batches of 16 rows"):
        pstep(*next(it))
