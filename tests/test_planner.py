"""make_plan: the Plan value, cut edges, usage, static memory check, determinism, a Keras step."""
from types import SimpleNamespace

import pytest

from tfplace import placers
from tfplace.analysis import OpDag, analyse
from tfplace.cluster import Cluster, Device
from tfplace.costs import Calibration
from tfplace.errors import PlanError
from tfplace.plan import CutEdge, Plan
from tfplace.planner import graph_fingerprint, make_plan
from tfplace.schedule_sim import simulate

CAL = Calibration(overhead_seconds=0.0)


def two_branch():
    return OpDag.from_records([
        dict(name="v", op="VarHandleOp", out_bytes=0, out_dtypes=[20], param_bytes=400),
        dict(name="src", op="ResourceGather", inputs=["v"], out_bytes=10**6),
        dict(name="a", op="MatMul", inputs=["src"], out_bytes=10**6, flops=1e9),
        dict(name="b", op="MatMul", inputs=["src"], out_bytes=10**6, flops=1e9),
        dict(name="sink", op="AddV2", inputs=["a", "b"], out_bytes=4, flops=1.0),
    ])


def cluster(bandwidth=5e9):
    return Cluster(devices=tuple(Device(f"/job:localhost/replica:0/task:0/device:CPU:{i}",
                                        memory=10**8, flops=1e9) for i in range(2)),
                   default_bandwidth=bandwidth, default_latency=5e-6)


VAR = SimpleNamespace(node="v", name="kernel:0", nbytes=400, shape=(10, 10), dtype="float32")


def test_plan_contents_for_the_two_branch_graph():
    c = cluster()
    d0, d1 = c.names
    plan = make_plan(two_branch(), c, variables=[VAR], calibration=CAL, fingerprint="abc")
    assert plan.placer == "m_etf" and plan.graph_fingerprint == "abc"
    assert [(o.name, o.device) for o in plan.ops] == [
        ("a", d0), ("b", d1), ("sink", d1), ("src", d0), ("v", d0)]
    assert [(v.node, v.name, v.device, v.bytes, v.shape, v.dtype) for v in plan.variables] == [
        ("v", "kernel:0", d0, 400, (10, 10), "float32")]
    assert plan.cut_edges == (CutEdge("a:0", d0, d1, 10**6), CutEdge("src:0", d0, d1, 10**6))
    u0, u1 = plan.usage
    assert (u0.device, u0.ops, u0.flops, u0.param_bytes, u0.capacity_bytes) == (
        d0, 3, 1e9, 400, 10**8)
    assert u0.peak_bytes == 400 + 2 * 10**6                          # src and a live together
    assert (u1.ops, u1.flops, u1.param_bytes) == (2, 1e9 + 1, 0)
    assert u0.busy_seconds == pytest.approx(1.0) and u1.busy_seconds == pytest.approx(1.0 + 1e-9)
    hop = 5e-6 + 10**6 / 5e9
    assert plan.predicted_step_seconds == pytest.approx(max(hop + 1.0, 1.0 + hop) + 1e-9)


def test_simulate_single_device_is_the_sum_of_op_times():
    c = cluster()
    dag = two_branch()
    assert simulate(dag, {n.name: c.names[0] for n in dag.nodes}, c, CAL) == pytest.approx(
        2.0 + 1e-9)


def test_plans_are_byte_identical_and_round_trip():
    c = cluster()
    one = make_plan(two_branch(), c, variables=[VAR], placer="m_topo")
    two = make_plan(two_branch(), c, variables=[VAR], placer="m_topo")
    assert one.to_bytes() == two.to_bytes()
    assert Plan.from_bytes(one.to_bytes()) == one


def test_static_check_reports_every_device_over_capacity(monkeypatch):
    def reckless(dag, cluster, *, calibration):
        names = cluster.names
        return {n.name: names[i % 2] for i, n in enumerate(dag.nodes)}

    monkeypatch.setitem(placers.PLACERS, "reckless", reckless)
    c = Cluster(devices=tuple(Device(f"/job:w/replica:0/task:0/device:CPU:{i}", memory=1000)
                              for i in range(2)))
    with pytest.raises(PlanError) as e:
        make_plan(two_branch(), c, placer="reckless",
                  variables=[VAR, SimpleNamespace(node="gone", name="g", nbytes=1, shape=(),
                                                  dtype="float32")])
    msg = str(e.value)
    assert msg.startswith("plan by placer 'reckless' does not fit:")
    assert "/job:w/replica:0/task:0/device:CPU:0: needs" in msg
    assert "/job:w/replica:0/task:0/device:CPU:1: needs" in msg
    assert "> capacity 1000 B" in msg
    assert "variables captured at nodes missing from the graph: gone" in msg


def test_unknown_placer_is_a_plan_error():
    with pytest.raises(PlanError, match="valid: m_etf, m_topo, round_robin, single"):
        make_plan(two_branch(), cluster(), placer="gpipe")


def keras_mlp_step():
    import keras
    import tensorflow as tf
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(4)])
    opt = keras.optimizers.SGD(0.1)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    cf = step.get_concrete_function(tf.zeros((32, 8)), tf.zeros((32, 4)))
    gd = cf.graph.as_graph_def(add_shapes=True)
    by_handle = {id(v.handle): v for v in cf.graph.variables}
    variables = []
    for external, internal in cf.graph.captures:
        v = by_handle.get(id(external))
        if v is not None:
            variables.append(SimpleNamespace(
                node=internal.op.name, name=v.name, shape=tuple(v.shape), dtype=v.dtype.name,
                nbytes=v.shape.num_elements() * v.dtype.size))
    return gd, variables


def test_keras_mlp_training_step():
    gd, variables = keras_mlp_step()
    dag = analyse(gd, variables)
    matmuls = sorted(n.flops for n in dag.nodes if n.op == "MatMul")
    # 2mnk: forward 32x8 @ 8x16 and 32x16 @ 16x4; gradients dX2 = dY2 @ W2^T (32x4 @ 4x16),
    # dW2 = H^T @ dY2 (16x32 @ 32x4), dW1 = X^T @ dH (8x32 @ 32x16); no dX for the input.
    assert matmuls == sorted([2 * 32 * 16 * 8, 2 * 32 * 4 * 16, 2 * 32 * 16 * 4,
                              2 * 16 * 4 * 32, 2 * 8 * 16 * 32])
    assert sum(v.nbytes for v in variables) == dag.total_param_bytes
    var_nodes = {v.node for v in variables}
    c = Cluster.local(4, configure=False)
    fp = graph_fingerprint(gd)
    assert len(fp) == 16 and fp == graph_fingerprint(gd)
    for name in placers.PLACER_NAMES:
        plan = make_plan(dag, c, placer=name, variables=variables, fingerprint=fp)
        where = plan.placement()
        checked = 0
        for n in dag.nodes:
            if n.op in ("ReadVariableOp", "AssignVariableOp", "AssignSubVariableOp"):
                res = n.inputs[0].split(":")[0]
                assert res in var_nodes
                assert where[n.name] == where[res], (name, n.name)
                checked += 1
        assert checked >= 10
        assert {v.node: v.device for v in plan.variables} == {v: where[v] for v in var_nodes}
