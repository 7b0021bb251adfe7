"""The pipelining queues in the rewrite: neighbour stages exchange every activation and gradient
through a bounded channel with the plan's capacity, on both backends (the C++ op and
FIFOQueue), equal to one device; a failed step leaves no stale item behind; the abstract run
of the rewritten graph finds a deadlock before anything runs."""
from __future__ import annotations

import numpy as np
import pytest

import models
import tfplace
from tfplace.errors import GraphError, StageFailed
from tfplace.rewrite import pipeline_queues
from tfplace.runtime.channel import library_path


def _queues(pstep):
    gd = pstep.executor.graph_def
    nodes = {n.name: n for n in gd.node}
    return gd, nodes, [nodes[c] for c in pipeline_queues.channel_nodes(gd)]


def check_queues(pstep, backend: str) -> None:
    """Channels of the backend's op with the plan's capacities; every data edge between the
    segments of neighbour stages (same micro-batch) goes through a take."""
    from tfplace.pipeline_parallel import pipeline_spec
    from tfplace.rewrite.pipeline import segments
    gd, nodes, chans = _queues(pstep)
    pipe = pstep.plan.pipeline
    op = {"op": "TfplaceChannel", "fifo": "FIFOQueueV2"}[backend]
    assert chans and all(c.op == op for c in chans)
    cap = {(q.src, q.dst): q.capacity for q in pipe.queues}
    for c in chans:
        kind, pair = c.name.split("/")[-1][0], c.name.split("/")[-1][1:].split("_")[0]
        src, dst = (int(v) for v in pair.split("to"))
        assert c.attr["capacity"].i == max(1, cap[(src, dst)])
        assert c.device == pipe.stages[dst].devices[0]
        puts = [n for n in gd.node if n.name.startswith(c.name + "/put")]
        assert len(puts) == pipe.micro_batches and all(p.device == c.device for p in puts)
    # with the op, every put tensor's producer is followed by a yield on its device that the
    # producer's segment waits for (its _Send goes out before the next segment starts)
    if backend == "op":
        dones = {n.name: n for n in gd.node if n.name.startswith("tfplace_pipeline/stage")}
        for put in (n for n in gd.node if n.op == "TfplaceChannelEnqueue"):
            for t in put.input[1:]:
                if t.startswith("^"):
                    continue
                src = nodes[t.split(":")[0]]
                ys = [n for n in gd.node if n.op == "TfplaceYield" and f"^{src.name}" in n.input]
                assert len(ys) == 1 and ys[0].device == src.device, (put.name, src.name)
                assert any(f"^{ys[0].name}" in d.input and f"^{src.name}" in d.input
                           for d in dones.values()), (put.name, src.name)
    # forward queue 0 -> 1 exists on every schedule and M
    assert any(c.name.endswith("/F0to1") for c in chans)
    assert any(c.name.split("/")[-1].startswith("B1to0") for c in chans)
    # each weight is transposed once per step for the input-gradient MatMuls of all copies
    transposed = [n for n in gd.node if n.name.startswith("tfplace_pipeline/transposed/")]
    assert len(transposed) == (7 if pipe.micro_batches > 1 else 0)   # mlp8: Dense 2..8
    for t in transposed:
        users = [n for n in gd.node if n.op == "MatMul" and t.name in n.input]
        assert len(users) == pipe.micro_batches and not any(u.attr["transpose_b"].b
                                                            for u in users)
        assert all(u.device == t.device for u in users)
    segs = segments(gd, pipeline_spec(pstep.plan, pstep.executor.captured), pipe)
    seg_of = {n: k for k, names in segs.items() for n in names}
    for n in gd.node:
        c = seg_of.get(n.name)
        for inp in n.input:
            p = seg_of.get(inp.split(":")[0])
            if c is None or p is None or inp.startswith("^") or p[2] != c[2]:
                continue
            neighbour = (p[1] == "F" and c[0] == p[0] + 1) or (p[1] == "B" and c[0] == p[0] - 1)
            assert not neighbour, f"{inp} -> {n.name} is a plain edge between stages"


@pytest.mark.parametrize("backend,kind,schedule,micro", [("fifo", "mlp8", "1f1b", 4)])
def test_queued_pipeline_matches_single_device(backend, kind, schedule, micro, local4,
                                               monkeypatch):
    """The FIFOQueue fallback; the C++ op (the default when built, as in `make test`) is
    checked the same way by every mlp8 case of test_pipeline_equivalence.py."""
    monkeypatch.setenv("TFPLACE_CHANNEL", backend)
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=local4, pipeline_stages=4, micro_batches=micro,
                                schedule=schedule)
    models.assert_same_training(ref, (model, pstep), kind=kind)
    check_queues(pstep, backend)


@pytest.mark.parametrize("backend", ["fifo", "op"])
def test_failed_step_leaves_no_stale_item(backend, local4, monkeypatch):
    """Stage 2's check fails in the middle of a step, after stage 0 and 1 queued activations;
    the next steps still equal the one-device steps (the failed one applied nothing)."""
    import tensorflow as tf
    from test_pipeline_equivalence import _checked_model
    if backend == "op" and not library_path().is_file():
        pytest.skip("the channel op is not built (make ops)")
    monkeypatch.setenv("TFPLACE_CHANNEL", backend)
    ref_model = _checked_model()
    model = _checked_model()
    model.set_weights(ref_model.get_weights())
    ref_step, step = models.make_step(ref_model), models.make_step(model)
    pstep = tfplace.parallelize(step, cluster=local4, pipeline_stages=4, micro_batches=4,
                                schedule="gpipe")
    x, y = models.data("mlp8")
    big = x.copy()
    big[-4:] *= 1e6                  # only the last micro-batch trips the check
    losses, ref_losses = [float(pstep(x, y))], [float(ref_step(x, y))]
    with pytest.raises(StageFailed, match="activation too large") as info:
        pstep(big, y)
    assert "micro-batch 3" in str(info.value)
    for i in range(2):
        xi, yi = models.data("mlp8", seed=i + 1)
        losses.append(float(pstep(xi, yi)))
        ref_losses.append(float(ref_step(xi, yi)))
    models.assert_close(losses, ref_losses)
    for a, b in zip(ref_model.get_weights(), model.get_weights()):
        models.assert_close(b, a)


def _node(gd, name, op, inputs=(), **attrs):
    n = gd.node.add()
    n.name, n.op = name, op
    n.input.extend(inputs)
    for k, v in attrs.items():
        n.attr[k].i = v
    return n


def test_abstract_run_finds_a_deadlock():
    """Capacity 1 and a take that waits (by a control edge) for the second put: the first put
    fills the channel; the second put, both takes and their consumer can never run. With
    capacity 2 it runs."""
    from tensorflow.core.framework import graph_pb2
    for capacity, deadlock in [(1, True), (2, False)]:
        gd = graph_pb2.GraphDef()
        q = pipeline_queues.QUEUE_SCOPE + "/F0to1"
        _node(gd, q, "TfplaceChannel", capacity=capacity)
        _node(gd, "x", "Const")
        _node(gd, q + "/put0", "TfplaceChannelEnqueue", [f"{q}:0", "x"])
        _node(gd, q + "/put1", "TfplaceChannelEnqueue", [f"{q}:0", "x", f"^{q}/put0"])
        _node(gd, q + "/take0", "TfplaceChannelDequeue", [f"{q}:0", f"^{q}/put1"])
        _node(gd, q + "/take1", "TfplaceChannelDequeue", [f"{q}:0", f"^{q}/take0"])
        _node(gd, "y", "Identity", [f"{q}/take1:0"])
        if deadlock:
            with pytest.raises(GraphError, match=r"deadlock.*4 ops could never run.*put1"):
                pipeline_queues.check_completes(gd)
        else:
            pipeline_queues.check_completes(gd)


def test_unknown_backend_is_an_error():
    with pytest.raises(GraphError, match="unknown pipeline queue backend 'tcp'.*op, fifo"):
        pipeline_queues.insert(None, {}, None, "tcp")
