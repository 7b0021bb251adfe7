"""Model-parallel splits train exactly like the single-device step: 5 steps on 4 local devices,
losses and weights within 1e-5 relative (tests/models.py), each shard on its own device."""
from __future__ import annotations

import keras
import numpy as np
import pytest

import models
import tfplace


def _layer(model, cls, i: int = 0):
    return [layer for layer in model.layers if isinstance(layer, cls)][i]


def _check_shards(pstep, n: int) -> None:
    ex = pstep.executor
    assert ex.shards, "no variable was split"
    for orig, axis, nodes in ex.shards.values():
        placed = {n_: p for n_, _o, p in ex.pairs}
        devices = [placed[n_].device for n_ in nodes]
        assert len(set(devices)) == n, (orig.name, devices)
        assert sum(placed[n_].shape[axis] for n_ in nodes) == orig.shape[axis]


def _train(kind: str, spec, cluster, **kw):
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=cluster, splits=spec(model), **kw)
    losses_ref, losses_got = models.assert_same_training(ref, (model, pstep), kind=kind)
    diff = max(abs(a - b) / abs(a) for a, b in zip(losses_ref, losses_got))
    wdiff = max(float(np.max(np.abs(a - b) / (np.abs(a) + 1e-7)))
                for a, b in zip(ref[0].get_weights(), model.get_weights()))
    print(f"{kind}: max rel loss diff {diff:.2e}, max rel weight diff {wdiff:.2e}")
    return pstep


def test_mlp_column_then_row_split(local4) -> None:
    def spec(model):
        d0, d1 = _layer(model, keras.layers.Dense, 0), _layer(model, keras.layers.Dense, 1)
        return f"{d0.name}:S(1);{d1.name}:S(0)"
    pstep = _train("mlp", spec, local4)
    _check_shards(pstep, 4)
    sp = pstep.plan.splits
    assert sp.collectives()["all_reduce"] == 1
