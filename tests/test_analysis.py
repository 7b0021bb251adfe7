"""The op DAG: topological order, edges, shapes, bytes, FLOPs, params and errors."""
import pytest

from tfplace.analysis import OpDag, analyse
from tfplace.errors import GraphError


def diamond():
    return OpDag.from_records([
        dict(name="d", op="AddV2", inputs=["b", "c:0", "^a"], out_bytes=8),
        dict(name="a", op="Placeholder", out_bytes=100),
        dict(name="b", op="Relu", inputs=["a"], out_bytes=30),
        dict(name="c", op="Relu", inputs=["a:0"], out_bytes=20),
    ])


def test_diamond_order_and_edges():
    dag = diamond()
    assert [n.name for n in dag.nodes] == ["a", "b", "c", "d"]
    assert dag.node("d").inputs == ("b:0", "c:0")
    assert dag.node("d").control_inputs == ("a",)
    assert dag.preds == [[], [0], [0], [0, 1, 2]]
    assert dag.pred_bytes == [[], [100], [100], [0, 30, 20]]
    assert dag.succs == [[1, 2, 3], [3], [3], []]
    assert dag.consumers("a:0") == [1, 2]
    assert dag.in_tensors[3] == [(1, 0), (2, 0)]
    assert dag.num_edges == 5


def test_ties_keep_the_graphdef_order():
    dag = OpDag.from_records([dict(name="z"), dict(name="y"), dict(name="x", inputs=["z"])])
    assert [n.name for n in dag.nodes] == ["z", "y", "x"]


def test_missing_input_and_cycle_are_graph_errors():
    with pytest.raises(GraphError, match=r"node 'a' reads 'ghost:1' but the graph has no node 'ghost'"):
        OpDag.from_records([dict(name="a", inputs=["ghost:1"])])
    with pytest.raises(GraphError, match=r"control input '\^ghost'"):
        OpDag.from_records([dict(name="a", inputs=["^ghost"])])
    with pytest.raises(GraphError, match="cycle: node 'a' depends on itself through 'c' -> 'b' -> 'a'"):
        OpDag.from_records([dict(name="a", inputs=["c"]), dict(name="b", inputs=["a"]),
                            dict(name="c", inputs=["b"])])


def _node(gd, name, op, inputs=(), shapes=(), **attrs):
    from tensorflow.core.framework import tensor_shape_pb2
    n = gd.node.add(name=name, op=op)
    n.input.extend(inputs)
    for s in shapes:
        sp = n.attr["_output_shapes"].list.shape.add()
        if s is None:
            sp.unknown_rank = True
        else:
            sp.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in s)
    for k, v in attrs.items():
        if isinstance(v, bool):
            n.attr[k].b = v
        elif k in ("dtype", "T", "DstT"):
            n.attr[k].type = v
        elif k == "shape":
            n.attr[k].shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in v)
        elif k == "_class":
            n.attr[k].list.s.extend(x.encode() for x in v)
    return n


def test_analyse_graphdef_shapes_bytes_flops_params():
    from types import SimpleNamespace
    from tensorflow.core.framework import graph_pb2
    gd = graph_pb2.GraphDef()
    _node(gd, "x", "Placeholder", shapes=[(-1, 8)], dtype=1)
    _node(gd, "w", "Placeholder", shapes=[()], dtype=20)
    _node(gd, "read", "ReadVariableOp", ["w"], shapes=[(8, 16)], dtype=1)
    _node(gd, "mm", "MatMul", ["x", "read"], shapes=[(-1, 16)], T=1, transpose_a=False)
    _node(gd, "h", "VarHandleOp", shapes=[()], dtype=2, shape=(3, 5))
    _node(gd, "odd", "MysteryOp", ["mm:0", "^h"], shapes=[(-1, 2), None],
          _class=["loc:@mm"])
    dag = analyse(gd, [SimpleNamespace(node="w", nbytes=512)], batch_size_hint=4)
    mm = dag.node("mm")
    assert mm.inputs == ("x:0", "read:0")
    assert mm.out_shapes == ((-1, 16),) and mm.out_dtypes == (1,)
    assert mm.out_bytes == (4 * 16 * 4,)
    assert mm.flops == 2 * 4 * 16 * 8
    assert dag.node("w").param_bytes == 512 and dag.node("w").out_bytes == (0,)
    assert dag.node("h").param_bytes == 3 * 5 * 8 and dag.node("h").out_dtypes == (20,)
    odd = dag.node("odd")
    assert odd.out_bytes == (4 * 2 * 4, 4 * 4)          # unknown dtype: 4 bytes per element
    assert odd.colocate_with == ("mm",) and odd.control_inputs == ("h",)
    assert dag.total_param_bytes == 512 + 120


def test_functional_ops_stay_whole_and_cost_their_bodies():
    import tensorflow as tf

    @tf.function
    def inner(a, b):
        return tf.matmul(a, b) + 1.0

    @tf.function
    def outer(a, b):
        c = inner(a, b)
        d = tf.cond(tf.reduce_sum(c) > 0, lambda: tf.matmul(c, b), lambda: c * 2.0)
        _, e = tf.while_loop(lambda i, x: i < 3, lambda i, x: (i + 1, tf.matmul(x, b)),
                             [tf.constant(0), d])
        return e

    gd = outer.get_concrete_function(tf.zeros((4, 5)), tf.zeros((5, 5))).graph.as_graph_def(
        add_shapes=True)
    dag = analyse(gd)
    by_op = {n.op: n for n in dag.nodes}
    mm = 2 * 4 * 5 * 5
    assert by_op["PartitionedCall"].flops == mm + 20                 # matmul + add
    assert by_op["StatelessIf"].flops == mm + 20                     # both branches
    assert by_op["StatelessWhile"].flops == mm + 1 + 1 + 1           # body once + cond
    assert len(by_op["StatelessWhile"].out_bytes) == 5
