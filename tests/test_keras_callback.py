"""model.fit with tfplace.keras.Parallelize equals plain model.fit; evaluate and save agree too."""
from __future__ import annotations

import numpy as np
import pytest

import models
import tfplace


def _compiled(kind: str):
    import keras
    a, b = models.build(kind), models.build(kind)
    b.set_weights(a.get_weights())
    for m in (a, b):
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    return a, b


def test_fit_callback_matches_plain_fit(local4, tmp_path):
    import keras
    ref, got = _compiled("cnn")
    x, y = models.data("cnn", batch=64)
    h_ref = ref.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    cb = tfplace.keras.Parallelize(cluster=local4, placer="round_robin")
    h_got = got.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    assert cb.executor is not None and cb.executor.moved_variables > 0
    assert len(cb.plan.devices_used) == 4
    for key in ("loss", "mae"):
        np.testing.assert_allclose(h_got.history[key], h_ref.history[key], rtol=1e-5)
    for w_ref, w_got in zip(ref.get_weights(), got.get_weights()):
        models.assert_close(w_got, w_ref)
    np.testing.assert_allclose(got.evaluate(x, y, verbose=0), ref.evaluate(x, y, verbose=0),
                               rtol=1e-5)
    path = str(tmp_path / "got.keras")
    got.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), ref.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    # plain fit afterwards still works and trains the same model
    got.fit(x, y, batch_size=16, epochs=1, verbose=0)


@pytest.mark.parametrize("sync", ["ring", "ps"])
def test_fit_callback_data_parallel_matches_plain_fit(local4, sync):
    """2 replicas under model.fit: losses, metrics (summed accumulators), weights, evaluate."""
    ref, got = _compiled("mlp")
    x, y = models.data("mlp", batch=64)
    h_ref = ref.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    cb = tfplace.keras.Parallelize(cluster=local4, placer="single", data_parallel=2, sync=sync)
    h_got = got.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    assert cb.plan.num_replicas == 2
    for key in ("loss", "mae"):
        np.testing.assert_allclose(h_got.history[key], h_ref.history[key], rtol=1e-5)
    for w_ref, w_got in zip(ref.get_weights(), got.get_weights()):
        models.assert_close(w_got, w_ref)
    np.testing.assert_allclose(got.evaluate(x, y, verbose=0), ref.evaluate(x, y, verbose=0),
                               rtol=1e-5)
