"""`import tfplace` stays light: no TensorFlow, no protobuf modules until used."""
from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys, tfplace
heavy = sorted(m for m in sys.modules
               if m.split('.')[0] in ('tensorflow', 'keras', 'numpy', 'grpc')
               or m.startswith('tfplace._pb.'))
assert not heavy, heavy
assert tfplace.__version__ == '0.1.0'
from tfplace import Cluster, Plan, PlanError, ClusterError, GraphError, WorkerLost, TfplaceError
assert issubclass(PlanError, TfplaceError) and tfplace.errors.bullets
c = Cluster.local(2, configure=False)     # the pure value; configure=True sets up TF devices
assert 'tensorflow' not in sys.modules, 'Cluster.local(configure=False) imported tensorflow'
print('ok')
"""


def test_import_does_not_load_tensorflow() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_attribute() -> None:
    import tfplace
    try:
        tfplace.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")
