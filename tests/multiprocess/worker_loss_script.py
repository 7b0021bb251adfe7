"""Run by test_worker_loss.py in its own process: kill a worker between steps, expect WorkerLost."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tfplace  # noqa: E402
from tfplace.errors import WorkerLost  # noqa: E402

cluster = tfplace.Cluster.launch_local(workers=2, devices_per_worker=1)
import numpy as np  # noqa: E402

import models  # noqa: E402

(model, step) = models.twin("mlp")[1]
pstep = tfplace.parallelize(step, cluster=cluster, placer="round_robin")
x, y = models.data("mlp")
pstep(x, y)
good = [w.copy() for w in model.get_weights()]
cluster._launcher.procs[1].kill()
cluster._launcher.procs[1].wait()
t0 = time.perf_counter()
try:
    pstep(x, y)
except WorkerLost as e:
    dt = time.perf_counter() - t0
    same = all(np.array_equal(a, b) for a, b in zip(good, model.get_weights()))
    print(f"WORKERLOST after {dt:.1f}s weights_intact={same}: {e}", flush=True)
    cluster.shutdown()
    os._exit(0)
print("NO ERROR", flush=True)
os._exit(1)
