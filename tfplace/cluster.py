"""The cluster value: devices with memory and speed, links with bandwidth and latency, gRPC tasks."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable

__all__ = ["Device", "Link", "Task", "Cluster", "local_device_name", "task_prefix", "grpc_cluster"]

DEFAULT_MEMORY = 4 * 2**30          # bytes a logical CPU device may use unless told otherwise
DEFAULT_FLOPS = 2.0e10              # FLOP/s of one CPU core, a round figure `tfplace profile` refines
DEFAULT_BANDWIDTH = 5.0e9           # bytes/s between devices of one process (a memcpy)
DEFAULT_LATENCY = 5.0e-6
GRPC_BANDWIDTH = 1.0e9              # bytes/s across loopback gRPC workers
GRPC_LATENCY = 1.0e-4
KINDS = ("CPU", "GPU", "TPU")


def local_device_name(index: int, kind: str = "CPU") -> str:
    return f"/job:localhost/replica:0/task:0/device:{kind}:{index}"


def task_prefix(device: str) -> str:
    """'/job:w/replica:0/task:1/device:CPU:0' -> '/job:w/replica:0/task:1'."""
    return device.split("/device:")[0]


@dataclass(frozen=True)
class Device:
    name: str
    kind: str = "CPU"
    memory: int = DEFAULT_MEMORY
    flops: float = DEFAULT_FLOPS

    def to_proto(self) -> Any:
        from tfplace._pb import cluster_pb2
        return cluster_pb2.Device(name=self.name, kind=self.kind, memory_bytes=self.memory,
                                  peak_flops=self.flops)

    @classmethod
    def from_proto(cls, p: Any) -> "Device":
        return cls(name=p.name, kind=p.kind, memory=int(p.memory_bytes), flops=float(p.peak_flops))


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    bandwidth: float
    latency: float = 0.0

    def joins(self, x: str, y: str) -> bool:
        ends = {self.a, self.b}
        return ({x, y} <= ends or {task_prefix(x), task_prefix(y)} <= ends
                or (x.startswith(self.a) and y.startswith(self.b))
                or (x.startswith(self.b) and y.startswith(self.a)))

    def to_proto(self) -> Any:
        from tfplace._pb import cluster_pb2
        return cluster_pb2.Link(a=self.a, b=self.b, bandwidth=self.bandwidth, latency=self.latency)

    @classmethod
    def from_proto(cls, p: Any) -> "Link":
        return cls(a=p.a, b=p.b, bandwidth=float(p.bandwidth), latency=float(p.latency))


@dataclass(frozen=True)
class Task:
    job: str
    index: int
    address: str

    @property
    def prefix(self) -> str:
        return f"/job:{self.job}/replica:0/task:{self.index}"


@dataclass(frozen=True)
class Cluster:
    """Devices and links. A launched cluster also carries its processes (not part of the value)."""

    devices: tuple[Device, ...]
    links: tuple[Link, ...] = ()
    default_bandwidth: float = DEFAULT_BANDWIDTH
    default_latency: float = DEFAULT_LATENCY
    tasks: tuple[Task, ...] = ()
    link_profile: Any = None      # a measured tfplace.link_profile.LinkProfile, or None
    _launcher: Any = field(default=None, compare=False, repr=False)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def local(cls, devices: int = 4, *, memory: int = DEFAULT_MEMORY,
              flops: float = DEFAULT_FLOPS, configure: bool = True) -> "Cluster":
        """N logical CPU devices in this process.

        With ``configure`` (the default) the host CPU is split into N logical devices right
        away, so call this before the first TensorFlow op runs; ``configure=False`` gives the
        pure value, for planning only."""
        from tfplace.errors import ClusterError
        if not isinstance(devices, int) or devices < 1:
            raise ClusterError(f"Cluster.local needs devices >= 1 (got devices={devices!r}); "
                               "pass the number of logical CPU devices to create")
        if memory <= 0:
            raise ClusterError(f"Cluster.local needs memory > 0 bytes (got memory={memory})")
        if configure:
            from tfplace.runtime.devices import configure_local_devices
            configure_local_devices(devices)
        return cls(devices=tuple(Device(local_device_name(i), "CPU", memory, flops)
                                 for i in range(devices)))

    @classmethod
    def launch_local(cls, workers: int = 2, devices_per_worker: int = 1, *,
                     pin: bool = True, memory: int = DEFAULT_MEMORY,
                     flops: float = DEFAULT_FLOPS, timeout: float = 60.0) -> "Cluster":
        """Spawn loopback tf.distribute.Server workers; use as a context manager or shutdown()."""
        from tfplace.runtime.launcher import launch
        return launch(workers=workers, devices_per_worker=devices_per_worker, pin=pin,
                      memory=memory, flops=flops, timeout=timeout)

    @classmethod
    def from_tf_config(cls, value: str | None = None, **kwargs: Any) -> "Cluster":
        """The TF_CONFIG environment variable (or the given JSON text), as Kubeflow sets it."""
        from tfplace.cluster_spec import parse_tf_config
        return parse_tf_config(value, **kwargs)

    @classmethod
    def from_file(cls, path: str) -> "Cluster":
        """A cluster YAML: devices (name, kind, memory, flops), links, tasks."""
        from tfplace.cluster_spec import load_yaml
        return load_yaml(path)

    # -- queries ------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        from tfplace.errors import ClusterError
        raise ClusterError(f"no device {name!r} in the cluster (devices: {', '.join(self.names)})")

    def link(self, a: str, b: str) -> tuple[float, float]:
        """(bandwidth bytes/s, latency s) between two devices."""
        for ln in self.links:
            if ln.joins(a, b):
                return ln.bandwidth, ln.latency
        return self.default_bandwidth, self.default_latency

    def transfer_seconds(self, a: str, b: str, nbytes: int) -> float:
        if a == b:
            return 0.0
        bw, lat = self.link(a, b)
        return lat + nbytes / bw

    @property
    def is_remote(self) -> bool:
        return bool(self.tasks)

    # -- lifecycle ----------------------------------------------------------------------------
    def connect(self) -> "Cluster":
        """Join this process to the cluster's gRPC tasks now (launch_local does it for you).

        Call it at program start, before creating the model: TF re-initialises its context
        when it connects, and variables created before that may lose later updates."""
        from tfplace.runtime.devices import prepare
        prepare(self, self.names)
        return self

    def shutdown(self) -> None:
        if self._launcher is not None:
            self._launcher.shutdown()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- proto --------------------------------------------------------------------------------
    def to_proto(self) -> Any:
        from tfplace._pb import cluster_pb2
        p = cluster_pb2.Cluster(default_bandwidth=self.default_bandwidth,
                                default_latency=self.default_latency)
        p.devices.extend(d.to_proto() for d in self.devices)
        p.links.extend(ln.to_proto() for ln in self.links)
        p.tasks.extend(cluster_pb2.Task(job=t.job, index=t.index, address=t.address)
                       for t in self.tasks)
        if self.link_profile is not None:
            p.link_profile.CopyFrom(self.link_profile.to_proto())
        return p

    @classmethod
    def from_proto(cls, p: Any) -> "Cluster":
        return cls(devices=tuple(Device.from_proto(d) for d in p.devices),
                   links=tuple(Link.from_proto(ln) for ln in p.links),
                   default_bandwidth=float(p.default_bandwidth),
                   default_latency=float(p.default_latency),
                   tasks=tuple(Task(t.job, int(t.index), t.address) for t in p.tasks),
                   link_profile=_profile_from_proto(p))

    def without_runtime(self) -> "Cluster":
        return dataclasses.replace(self, _launcher=None)


def _profile_from_proto(p: Any) -> Any:
    if not p.HasField("link_profile"):
        return None
    from tfplace.link_profile import LinkProfile
    return LinkProfile.from_proto(p.link_profile)


def grpc_cluster(tasks: Iterable[Task], devices_per_task: int, *, memory: int = DEFAULT_MEMORY,
                 flops: float = DEFAULT_FLOPS, launcher: Any = None) -> Cluster:
    """A cluster of gRPC tasks, each with devices_per_task CPU devices; cross-task links are slower."""
    tasks = tuple(tasks)
    devs = tuple(Device(f"{t.prefix}/device:CPU:{i}", "CPU", memory, flops)
                 for t in tasks for i in range(devices_per_task))
    links = tuple(Link(t.prefix, t.prefix, DEFAULT_BANDWIDTH, DEFAULT_LATENCY) for t in tasks)
    return Cluster(devices=devs, links=links, default_bandwidth=GRPC_BANDWIDTH,
                   default_latency=GRPC_LATENCY, tasks=tasks, _launcher=launcher)
