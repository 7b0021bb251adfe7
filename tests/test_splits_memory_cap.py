"""The memory acceptance of splits: a cluster YAML whose caps are too low for the widest weight.

Unsplit, the foundation rejects the plan (and names the split to make); split explicitly or by
splits="auto" it fits and trains like the single-device step (5 steps, 1e-5 relative), on the
decorator, the Keras callback and the CLI.
"""
from __future__ import annotations

import numpy as np
import pytest

import models
import tfplace
from tfplace.cluster_spec import parse_yaml_text
from tfplace.errors import PlanError
from tfplace.splits import S

CAP = 64 * 1024       # "wide": kernel + Adam slots 96 KiB; split over 4, ~53 KiB a device


def _yaml(cap: int) -> str:
    return "devices:\n" + "".join(
        f"  - name: /job:localhost/replica:0/task:0/device:CPU:{i}\n    memory: {cap}\n"
        for i in range(4))


@pytest.fixture(scope="module")
def capped(local4):                 # local4: the 4 logical CPUs exist before TF starts
    return parse_yaml_text(_yaml(CAP))


def _fits(plan) -> None:
    assert all(u.peak_bytes <= u.capacity_bytes == CAP for u in plan.usage), plan.usage
    kernel = [v for v in plan.splits.variables      # the kernel and its two Adam slots
              if v.variable == "wide/kernel" or v.variable.endswith("/wide_kernel_momentum")
              or v.variable.endswith("/wide_kernel_velocity")]
    assert len(kernel) == 3, plan.splits.variables
    assert all(v.layout == S(1) and len(v.devices) == 4 for v in kernel), kernel


def _train(capped, splits):
    ref, (model, step) = models.twin("wide")
    pstep = tfplace.parallelize(step, cluster=capped, splits=splits)
    models.assert_same_training(ref, (model, pstep), kind="wide")
    return pstep


def test_unsplit_gets_the_foundation_plan_error_naming_the_split(capped) -> None:
    _ref, (_model, step) = models.twin("wide")
    pstep = tfplace.parallelize(step, cluster=capped)
    with pytest.raises(PlanError) as e:
        pstep.plan_for(*models.data("wide"))
    msg = str(e.value)
    assert msg.startswith("no device has memory for"), msg
    assert msg.count("> capacity 64.0 KiB") == 4 and all(d in msg for d in capped.names)
    assert 'splits="wide/kernel:S(1)" (32.0 KiB, 4 shards), or splits="auto"' in msg


def test_explicit_split_fits_and_trains(capped) -> None:
    pstep = _train(capped, "wide:S(1)")
    _fits(pstep.plan)
    assert pstep.plan.splits.auto == ()


def test_auto_splits_the_widest_weight_by_itself_and_trains(capped) -> None:
    pstep = _train(capped, "auto")
    plan = pstep.plan
    _fits(plan)
    assert [(a.variable, a.layout, a.reason, a.chosen) for a in plan.splits.auto] == [
        ("wide/kernel", S(1), "memory", True)]
    assert "  memory  wide/kernel S(1) over 4: split (does not fit whole" in plan.summary()


@pytest.fixture(scope="module")
def captured(local4):
    from tfplace.capture import capture
    _ref, (_model, step) = models.twin("wide")
    return capture(step, models.data("wide"), {})


def test_auto_with_room_splits_nothing_and_says_why(captured, local4) -> None:
    from tfplace.split_auto import plan_split_step
    plan = plan_split_step(captured, local4, "auto")
    assert plan.splits.is_empty and not any(a.chosen for a in plan.splits.auto)
    wide = next(a for a in plan.splits.auto if a.variable == "wide/kernel")
    assert wide.reason == "speed" and wide.saved_seconds <= wide.boxing_seconds
    assert 'splits="auto": no split' in plan.summary()


def test_auto_splits_for_speed_when_compute_dominates(captured) -> None:
    """Devices 10^4 times slower than the links: the wide kernel's split pays for itself."""
    from tfplace.split_auto import plan_split_step
    slow = tfplace.Cluster.local(4, flops=2e6, configure=False)
    plan = plan_split_step(captured, slow, "auto")
    chosen = [a for a in plan.splits.auto if a.chosen]
    assert [(a.variable, a.layout, a.reason) for a in chosen] == [("wide/kernel", S(1), "speed")]
    assert chosen[0].saved_seconds > chosen[0].boxing_seconds
    assert {v.variable for v in plan.splits.variables} >= {"wide/kernel"}


def test_auto_that_cannot_fit_names_what_it_split_and_what_is_over(captured) -> None:
    from tfplace.split_auto import plan_split_step
    with pytest.raises(PlanError) as e:
        plan_split_step(captured, parse_yaml_text(_yaml(16 * 1024)), "auto")
    first, *rest = str(e.value).splitlines()
    assert first == ('splits="auto" could not make the plan fit (split: wide/kernel:S(1), '
                     'head/kernel:S(0), wide/bias:S(0), head/bias:S(0)):')   # largest first
    assert rest[0].startswith("plan by placer 'm_etf' with splits (")
    assert sum("> capacity 16.0 KiB" in line for line in rest) >= 1


def test_keras_callback_auto_on_the_capped_cluster(capped) -> None:
    ref, got = models.compiled_twin("wide")
    x, y = models.data("wide", batch=64)
    h_ref = ref.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    cb = tfplace.keras.Parallelize(cluster=capped, splits="auto")
    h_got = got.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    assert [a.variable for a in cb.plan.splits.auto if a.chosen] == ["wide/kernel"]
    np.testing.assert_allclose(h_got.history["loss"], h_ref.history["loss"], rtol=1e-5)
    for w_ref, w_got in zip(ref.get_weights(), got.get_weights()):
        models.assert_close(w_got, w_ref)


WIDE_SCRIPT = '''
import tensorflow as tf
import keras

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, name="wide"),
                          keras.layers.Dense(4, name="head")])
opt = keras.optimizers.Adam(1e-2)


@tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32),
                              tf.TensorSpec([None, 4], tf.float32)])
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss
'''


def test_cli_plan_splits_auto_and_unsplit_error(capped, tmp_path, capsys) -> None:
    from tfplace.cli import main
    (tmp_path / "wide_step.py").write_text(WIDE_SCRIPT)
    (tmp_path / "capped.yaml").write_text(_yaml(CAP))
    argv = ["plan", f"{tmp_path / 'wide_step.py'}:train_step", "--cluster",
            str(tmp_path / "capped.yaml"), "--batch-size", "16"]
    assert main(argv + ["--splits", "auto"]) == 0
    out = capsys.readouterr().out
    assert "wide/kernel S(1) over 4: split (does not fit whole" in out
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no device has memory" in err and '/wide/kernel:S(1)" (32.0 KiB, 4 shards)' in err
