"""Session set-up: 4 logical CPU devices before TF initialises, and one loopback gRPC cluster."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LOCAL_DEVICES = 4


def pytest_configure(config: pytest.Config) -> None:
    # Only when TF is importable: the pure-Python tests must not need it.
    try:
        from tfplace.runtime.devices import configure_local_devices
        configure_local_devices(LOCAL_DEVICES)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def local4():
    import tfplace
    return tfplace.Cluster.local(devices=LOCAL_DEVICES)


@pytest.fixture(scope="session")
def workers2():
    """launch_local(workers=2, devices_per_worker=2), shared by every gRPC test of the session."""
    import tfplace
    cluster = tfplace.Cluster.launch_local(workers=2, devices_per_worker=2)
    yield cluster
    cluster.shutdown()
