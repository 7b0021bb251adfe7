"""runtime.live: the nodes a tf.function would prune are dropped before the import."""
from __future__ import annotations


def _graph(spec):
    import tensorflow as tf
    gd = tf.compat.v1.GraphDef()
    for name, op, inputs, attrs in spec:
        n = gd.node.add()
        n.name, n.op = name, op
        n.input.extend(inputs)
        for key, value in attrs.items():
            n.attr[key].type = value
    return gd


def test_dead_stateless_nodes_go_and_the_rest_stays():
    from tfplace.runtime.live import live
    f, res = 1, 20
    gd = _graph([
        ("x", "Placeholder", [], {"dtype": f}),
        ("unused_ph", "Placeholder", [], {"dtype": f}),
        ("v", "Placeholder", [], {"dtype": res}),
        ("c", "Const", [], {"dtype": f}),
        ("dead_mul", "Mul", ["x", "c"], {"T": f}),
        ("dead_id", "Identity", ["dead_mul"], {"T": f}),
        ("read", "ReadVariableOp", ["v"], {"dtype": f}),
        ("read_use", "Mul", ["read", "c"], {"T": f}),      # a consumed read: a control output
        ("grad", "Mul", ["x", "x"], {"T": f}),
        ("write", "AssignVariableOp", ["v", "grad"], {"dtype": f}),
        ("out", "Identity", ["x", "^dead_ctrl_src"], {"T": f}),
        ("dead_ctrl_src", "NoOp", [], {}),
    ])
    got = live(gd, ["out"])
    assert [n.name for n in got.node] == ["x", "unused_ph", "v", "c", "read", "read_use",
                                          "grad", "write", "out", "dead_ctrl_src"]
    assert [n.name for n in gd.node][4:6] == ["dead_mul", "dead_id"]     # input not modified
    assert live(got, ["out"]) is got                  # nothing more to drop: the same object
