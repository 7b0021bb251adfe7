"""Model-parallel splits train exactly like the single-device step: 5 steps on 4 local devices,
losses and weights within 1e-5 relative (tests/models.py), each shard on its own device."""
from __future__ import annotations

import re

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
    wdiff = max(float(np.max(np.abs(a - b)))
                for a, b in zip(ref[0].get_weights(), model.get_weights()))
    print(f"{kind}: max rel loss diff {diff:.2e}, max abs weight diff {wdiff:.2e}")
    return pstep


def test_mlp_column_then_row_split(local4) -> None:
    def spec(model):
        d0, d1 = _layer(model, keras.layers.Dense, 0), _layer(model, keras.layers.Dense, 1)
        return f"{d0.name}:S(1);{d1.name}:S(0)"
    pstep = _train("mlp", spec, local4)
    _check_shards(pstep, 4)
    sp = pstep.plan.splits
    assert sp.collectives()["all_reduce"] == 1


def _ops(pstep, op: str) -> list[str]:
    return [n.name for n in pstep.executor.graph_def.node if n.op == op]


def test_mlp_without_collectives_uses_dataflow_add(local4, monkeypatch) -> None:
    import tfplace.runtime.devices as devices
    monkeypatch.setattr(devices, "collectives_ready", lambda cluster: False)

    def spec(model):
        d0, d1 = _layer(model, keras.layers.Dense, 0), _layer(model, keras.layers.Dense, 1)
        return {f"{d0.name}/kernel": "S(1)", f"{d1.name}/kernel": "S(0)"}
    pstep = _train("mlp", spec, local4)
    assert not _ops(pstep, "CollectiveReduceV2")
    assert [n for n in _ops(pstep, "AddN") if n.startswith("tfplace_split/all_reduce")]


def test_embedding_table_split_by_rows(local4) -> None:
    pstep = _train("embedding", lambda m: f"{_layer(m, keras.layers.Embedding).name}:S(0)",
                   local4)
    _check_shards(pstep, 2)          # 50 rows: the largest group that divides them is 2


def test_cnn_conv_split_on_output_channels(local4) -> None:
    pstep = _train("cnn", lambda m: f"{_layer(m, keras.layers.Conv2D).name}:S(3)", local4)
    _check_shards(pstep, 4)


def _megatron(model):
    mha = _layer(model, keras.layers.MultiHeadAttention)
    d0, d1 = _layer(model, keras.layers.Dense, 0), _layer(model, keras.layers.Dense, 1)
    parts = [f"{mha.name}/{p}:S(1)" for p in ("query", "key", "value")]
    return ";".join(parts + [f"{mha.name}/attention_output:S(0)", f"{d0.name}:S(1)",
                             f"{d1.name}:S(0)"])


@pytest.mark.parametrize("kind,spec", [
    ("embedding", lambda m: f"{_layer(m, keras.layers.Embedding).name}:S(0)"),
    ("cnn", lambda m: f"{_layer(m, keras.layers.Conv2D).name}:S(3)"),
    ("transformer", _megatron)])
def test_without_collectives(kind, spec, local4, monkeypatch) -> None:
    """The dataflow boxing (AddN on the group's first device) trains the same."""
    import tfplace.runtime.devices as devices
    monkeypatch.setattr(devices, "collectives_ready", lambda cluster: False)
    pstep = _train(kind, spec, local4)
    assert not _ops(pstep, "CollectiveReduceV2")
    if kind == "transformer":
        forward = [t for t in _reduced_tensors(pstep.executor.graph_def)
                   if not t.startswith("gradient_tape/")]
        assert len(forward) == 2, forward


def test_transformer_block_megatron(local4) -> None:
    def spec(model):
        mha = _layer(model, keras.layers.MultiHeadAttention)
        d0, d1 = _layer(model, keras.layers.Dense, 0), _layer(model, keras.layers.Dense, 1)
        parts = [f"{mha.name}/{p}:S(1)" for p in ("query", "key", "value")]
        return ";".join(parts + [f"{mha.name}/attention_output:S(0)", f"{d0.name}:S(1)",
                                 f"{d1.name}:S(0)"])
    pstep = _train("transformer", spec, local4)
    _check_shards(pstep, 2)          # 2 heads: a group of 2
    assert _ops(pstep, "CollectiveReduceV2")
    reduced = _reduced_tensors(pstep.executor.graph_def)
    forward = sorted(t for t in reduced if not t.startswith("gradient_tape/"))
    assert len(forward) == 2, forward
    assert len(reduced) == 3, reduced            # and Megatron's f in backward


def _reduced_tensors(graph_def) -> set[str]:
    """The tensors whose partial sums the rewritten graph adds up (CollectiveReduceV2, one per
    device, or a dataflow AddN), by their original names."""
    out = set()
    for n in graph_def.node:
        if n.op == "CollectiveReduceV2" or (n.op == "AddN" and "all_reduce" in n.name):
            out.add(n.input[0].split("/", 2)[2].rsplit(":", 1)[0])
    return out


def test_plan_summary_and_round_trip_list_the_splits(local4) -> None:
    def spec(model):
        d0, d1 = _layer(model, keras.layers.Dense, 0), _layer(model, keras.layers.Dense, 1)
        return f"{d0.name}:S(1);{d1.name}:S(0)"
    ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, splits=spec(model))
    plan = pstep.plan_for(*models.data("mlp"))
    text = plan.summary()
    assert "splits on 4 devices" in text
    assert re.search(r"MatMul\s+\(B, S\(1\)\) -> \(S\(1\)\)", text)
    assert re.search(r"P -> B\s+all_reduce\s+3072 B", text)        # 16x32 floats, 2(n-1)/n
    again = tfplace.Plan.from_bytes(plan.to_bytes())
    assert again.splits == plan.splits and again.to_bytes() == plan.to_bytes()


def test_refresh_and_manual_write_back(local4) -> None:
    """The user's variables hold the whole trained values (concatenated shards); assigning to
    them and refresh() re-slices the shards."""
    ref, (model, step) = models.twin("mlp")
    d0 = _layer(model, keras.layers.Dense, 0)
    pstep = tfplace.parallelize(step, cluster=local4, splits=f"{d0.name}:S(1)",
                                writeback="manual")
    x, y = models.data("mlp", seed=0)
    ref[1](x, y)
    pstep(x, y)
    pstep.write_back()
    for a, b in zip(ref[0].get_weights(), model.get_weights()):
        models.assert_close(b, a)
    new = [w * 0.5 for w in ref[0].get_weights()]
    ref[0].set_weights(new)
    model.set_weights(new)
    pstep.refresh()
    for i in range(1, 3):
        x, y = models.data("mlp", seed=i)
        np.testing.assert_allclose(float(pstep(x, y)), float(ref[1](x, y)), rtol=1e-5)
    pstep.write_back()
    for a, b in zip(ref[0].get_weights(), model.get_weights()):
        models.assert_close(b, a)


def test_keras_fit_with_splits_matches_plain_fit(local4, tmp_path) -> None:
    """model.fit with Parallelize(splits=...) equals plain fit; saving the model stores the
    whole (gathered) weights."""
    a, b = models.build("mlp"), models.build("mlp")
    b.set_weights(a.get_weights())
    for m in (a, b):
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    x, y = models.data("mlp", batch=64)
    h_ref = a.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    d0, d1 = _layer(b, keras.layers.Dense, 0), _layer(b, keras.layers.Dense, 1)
    cb = tfplace.keras.Parallelize(cluster=local4, splits=f"{d0.name}:S(1);{d1.name}:S(0)")
    h_got = b.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    assert cb.executor.shards and cb.plan.splits is not None
    for key in ("loss", "mae"):
        np.testing.assert_allclose(h_got.history[key], h_ref.history[key], rtol=1e-5)
    path = str(tmp_path / "split.keras")
    b.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), a.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_cli_plan_and_run_take_splits(tmp_path) -> None:
    """`tfplace plan --splits` prints the split table; `tfplace run --splits` trains."""
    from test_cli_errors import MLP_SCRIPT, run_cli
    (tmp_path / "mlp_step.py").write_text(MLP_SCRIPT)
    script = f"{tmp_path / 'mlp_step.py'}:train_step"
    plan = str(tmp_path / "plan.pbtxt")
    out = run_cli("plan", script, "--cluster", "local:4", "--batch-size", "16",
                  "--splits", "dense:S(1)", "--out", plan)
    assert out.returncode == 0, out.stderr
    assert "splits on 4 devices" in out.stdout and "dense/kernel" in out.stdout
    out = run_cli("rewrite", script, "--plan", plan, "--batch-size", "16",
                  "--out", str(tmp_path / "split.pbtxt"))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "split.pbtxt").read_text()
    assert text.count('key: "_tfplace_shard_of"') == 4 * 2     # kernel and bias, 4 shards each
    out = run_cli("run", script, "--cluster", "local:4", "--batch-size", "16", "--steps", "3",
                  "--splits", "dense:S(1);dense_1:S(0)")
    assert out.returncode == 0, out.stderr
    losses = [float(line.rsplit(" ", 1)[1]) for line in out.stdout.splitlines()
              if line.startswith("step ")]
    assert len(losses) == 3 and losses[-1] < losses[0]
