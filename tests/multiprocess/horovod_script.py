"""Run by test_horovod.py under ``horovodrun --gloo -np N``: every rank trains on the GLOBAL batch
with sync_backend="horovod" and checks itself against the plain single-device step.

Prints one ``RESULT {json}`` line per check and rank: the max absolute and relative weight
differences and which Horovod ops the rewritten GraphDef holds. Exits 1 on any mismatch.
"""
import json
import os
import sys
import time

START = time.perf_counter()

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tfplace  # noqa: E402
import models  # noqa: E402

cluster = tfplace.Cluster.local(2)       # each process's own devices
RTOL = 1e-5


def diffs(ref, got):
    """Max |got - ref|, and max |got - ref| / |ref| over the entries with |ref| >= 1e-3."""
    abs_d = rel_d = 0.0
    for a, b in zip(ref, got):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        d = np.abs(b - a)
        abs_d = max(abs_d, float(d.max(initial=0.0)))
        big = np.abs(a) >= 1e-3
        rel_d = max(rel_d, float((d[big] / np.abs(a[big])).max(initial=0.0)))
    return abs_d, rel_d


def same(ref, got):
    assert len(ref) == len(got), (len(ref), len(got))
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=1e-7)


def all_weights(model):
    """The model's weights and its optimizer's variables (slots and iteration count)."""
    opt = getattr(model, "step_optimizer", None) or model.optimizer
    return model.get_weights() + [np.asarray(v) for v in opt.variables]


def report(check, **fields):
    import horovod.tensorflow as hvd
    print("RESULT " + json.dumps({"check": check, "rank": hvd.rank(), "size": hvd.size(),
                                  "seconds": round(time.perf_counter() - START, 1), **fields}),
          flush=True)


def step_check(kind, placer="single"):
    """``placer="round_robin"``: each process's replica spans its 2 devices."""
    ref, (model, step) = models.twin(kind)
    pstep = tfplace.parallelize(step, cluster=cluster, placer=placer, data_parallel="auto",
                                sync_backend="horovod")
    import horovod.tensorflow as hvd
    if hvd.rank() > 0:        # only rank 0's initial weights count: tfplace broadcasts them
        model.set_weights([w + 1.0 for w in model.get_weights()])
    models.assert_same_training(ref, (model, pstep), kind=kind, rtol=RTOL)
    ops = sorted({n.op for n in pstep.executor.graph_def.node if n.op.startswith("Horovod")})
    plan = pstep.plan
    assert plan.sync.backend == "horovod" and "backend horovod" in plan.summary(), plan.summary()
    ref_w, got_w = all_weights(ref[0]), all_weights(model)
    same(ref_w, got_w)
    devices = {n.device for n in pstep.executor.graph_def.node if n.device}
    report(kind if placer == "single" else f"{kind}@{placer}", ops=ops,
           replicas=plan.num_replicas, weights=len(ref_w), devices=len(devices),
           max_abs=diffs(ref_w, got_w)[0], max_rel=diffs(ref_w, got_w)[1])


def keras_check(kind):
    import keras
    x, y = models.data(kind, batch=64, seed=3)
    twins = models.build(kind), models.build(kind)
    twins[1].set_weights(twins[0].get_weights())
    fitted = []
    for m, callbacks in zip(twins, ([], [tfplace.keras.Parallelize(
            cluster=cluster, placer="single", data_parallel="auto", sync_backend="horovod")])):
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
        hist = m.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                     callbacks=callbacks)
        fitted.append((m, hist.history, callbacks))
    (ref, ref_logs, _), (got, got_logs, (cb,)) = fitted
    for key in ("loss", "mae"):
        np.testing.assert_allclose(got_logs[key], ref_logs[key], rtol=RTOL)
    ref_w, got_w = all_weights(ref), all_weights(got)
    same(ref_w, got_w)
    ops = sorted({n.op for n in cb.executor.graph_def.node if n.op.startswith("Horovod")})
    report(f"keras-{kind}", ops=ops, replicas=cb.plan.num_replicas, weights=len(ref_w),
           max_abs=diffs(ref_w, got_w)[0], max_rel=diffs(ref_w, got_w)[1])


def cli_check(script):
    """`tfplace run --sync-backend horovod --steps-per-execution 2` on every rank (2 copies of
    the step per call, each with its own Horovod ops): the plain run's losses."""
    import contextlib
    import io
    import re
    from tfplace.cli import main
    losses = []
    for extra in ([], ["--data-parallel", "auto", "--sync-backend", "horovod",
                       "--steps-per-execution", "2"]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["run", f"{script}:train_step", "--cluster", "local:1", "--placer",
                         "single", "--batch-size", "16", "--steps", "4", *extra])
        assert code == 0, (code, out.getvalue())
        losses.append([float(v) for v in re.findall(r"loss ([-\d.e]+)", out.getvalue())])
    ref, got = losses
    assert len(ref) == 4 and ref[-1] < ref[0], ref
    np.testing.assert_allclose(got, ref, rtol=RTOL)
    report("cli-run", losses=got, max_abs=float(np.max(np.abs(np.subtract(got, ref)))))


if __name__ == "__main__":
    for check in sys.argv[1:]:
        if check.startswith("keras-"):
            keras_check(check[6:])
        elif check.startswith("cli-run="):
            cli_check(check[8:])
        else:
            step_check(*check.split("@"))
