"""Run by test_collective_grpc.py in a fresh process: the cluster is launched at program start,
so TF's collectives are configured and the ring runs as CollectiveReduceV2 across workers."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tfplace  # noqa: E402

cluster = tfplace.Cluster.launch_local(workers=2, devices_per_worker=1)
import models  # noqa: E402

ref, (model, step) = models.twin("cnn")
pstep = tfplace.parallelize(step, cluster=cluster, placer="single", data_parallel=2, sync="ring")
models.assert_same_training(ref, (model, pstep), kind="cnn")
ops = {n.op for n in pstep.executor.graph_def.node}
print("COLLECTIVE" if "CollectiveReduceV2" in ops else "NO COLLECTIVE", flush=True)
cluster.shutdown()
os._exit(0)
