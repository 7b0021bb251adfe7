"""Every boxing conversion of rewrite.splits_boxing, run by TF on 4 local devices: the logical
value after the conversion equals the value before (exact value, float64)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from tfplace.splits.layout import B, P, S

N = 4
LAYOUTS = (B, P, S(0), S(1))


def _source(b, x, layout, devices):
    """Names holding ``x`` in ``layout``, one per device, as Const nodes."""
    import tensorflow as tf
    rng = np.random.default_rng(1)
    if layout == B:
        parts = [x] * N
    elif layout == P:
        noise = [rng.standard_normal(x.shape) for _ in range(N - 1)]
        parts = [x - sum(noise)] + noise
    else:
        parts = np.split(x, N, axis=layout.axis)
    names = []
    for dev, part in zip(devices, parts):
        name = b.add("src", "Const", [], dev, dtype=2)
        b._node(name).attr["value"].tensor.CopyFrom(tf.make_tensor_proto(part))
        names.append(name)
    return names


def _value(parts, layout):
    if layout == B:
        for p in parts[1:]:
            np.testing.assert_array_equal(p, parts[0])
        return parts[0]
    if layout == P:
        return sum(parts)
    return np.concatenate(parts, axis=layout.axis)


@pytest.mark.parametrize("src,dst", [(s, d) for s, d in itertools.product(LAYOUTS, LAYOUTS)
                                     if s != d])
def test_conversion_keeps_the_value(src, dst, local4) -> None:
    import tensorflow as tf
    from tfplace.rewrite.nodes import NodeBuilder
    from tfplace.rewrite.splits_boxing import Boxer
    devices = local4.names
    x = np.random.default_rng(0).standard_normal((8, 12))
    gd = tf.compat.v1.GraphDef()
    b = NodeBuilder(gd, "t")
    names = _source(b, x, src, devices)
    out = Boxer(b, devices).convert(names, src, dst, 2, list(x.shape))
    assert len(out) == N

    @tf.function
    def run():
        return tf.graph_util.import_graph_def(gd, return_elements=[f"{o}:0" if ":" not in o
                                                                   else o for o in out])
    got = [np.asarray(t) for t in run()]
    np.testing.assert_allclose(_value(got, dst), x, rtol=1e-12, atol=1e-12)
    if dst.is_split:
        assert all(g.shape[dst.axis] == x.shape[dst.axis] // N for g in got)
