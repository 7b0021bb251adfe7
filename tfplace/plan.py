"""The plan value: a frozen, protobuf-backed record of where every op and variable lives."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tfplace.cluster import Cluster

if TYPE_CHECKING:
    from tfplace.pipeline.value import PipelinePlan
    from tfplace.splits.splitplan import SplitPlan

__all__ = ["OpPlacement", "VariablePlacement", "CutEdge", "DeviceUsage", "GradientSyncPlan",
           "Bucket", "Plan", "FORMAT_VERSION"]

FORMAT_VERSION = "tfplace.plan/1"


@dataclass(frozen=True)
class OpPlacement:
    name: str
    device: str


@dataclass(frozen=True)
class VariablePlacement:
    node: str                     # captured resource placeholder in the GraphDef
    name: str                     # the variable's own name
    device: str
    bytes: int
    shape: tuple[int, ...] = ()
    dtype: str = ""


@dataclass(frozen=True)
class CutEdge:
    tensor: str                   # "node:index"
    src_device: str
    dst_device: str
    bytes: int


@dataclass(frozen=True)
class DeviceUsage:
    device: str
    ops: int
    flops: float
    param_bytes: int
    peak_bytes: int
    capacity_bytes: int
    busy_seconds: float


@dataclass(frozen=True)
class GradientSyncPlan:
    """How the replicas' gradients are synced, and the predicted costs that chose it."""

    method: str                   # ring | ps | hierarchical
    backend: str                  # tf | horovod
    replicas: int
    fusion_bytes: int
    reason: str                   # one line: each method's formula and figure, cheapest first
    costs: tuple[tuple[str, float], ...] = ()     # (method, seconds), by name
    exposed_seconds: float = 0.0  # the chosen method's seconds not hidden behind backward


@dataclass(frozen=True)
class Bucket:
    gradients: tuple[str, ...]    # gradient tensors fused into one sync, in production order
    bytes: int


@dataclass(frozen=True)
class Plan:
    cluster: Cluster
    placer: str
    ops: tuple[OpPlacement, ...]
    variables: tuple[VariablePlacement, ...] = ()
    cut_edges: tuple[CutEdge, ...] = ()
    usage: tuple[DeviceUsage, ...] = ()
    predicted_step_seconds: float = 0.0
    graph_fingerprint: str = ""
    replicas: tuple[tuple[str, ...], ...] = ()   # data parallelism: each replica's devices
    sync: GradientSyncPlan | None = None
    buckets: tuple[Bucket, ...] = ()
    pipeline: "PipelinePlan | None" = None     # pipeline parallelism: stages, queues, schedule
    splits: "SplitPlan | None" = None          # model-parallel splits: split ops, boxing, shards

    # -- queries ------------------------------------------------------------------------------
    def placement(self) -> dict[str, str]:
        return {o.name: o.device for o in self.ops}

    def device_of(self, op: str) -> str:
        for o in self.ops:
            if o.name == op:
                return o.device
        raise KeyError(op)

    @property
    def devices_used(self) -> tuple[str, ...]:
        """Devices that run ops: replica 0's placement and its image in every other replica."""
        used = {o.device for o in self.ops}
        for group in self.replicas[1:]:
            used |= {dict(zip(self.replicas[0], group)).get(d, d) for d in list(used)}
        return tuple(d for d in self.cluster.names if d in used)

    @property
    def cut_bytes(self) -> int:
        return sum(e.bytes for e in self.cut_edges)

    @property
    def num_replicas(self) -> int:
        return max(1, len(self.replicas))

    # -- proto --------------------------------------------------------------------------------
    def to_proto(self) -> Any:
        from tfplace._pb import plan_pb2
        p = plan_pb2.Plan(format_version=FORMAT_VERSION, placer=self.placer,
                          graph_fingerprint=self.graph_fingerprint,
                          predicted_step_seconds=self.predicted_step_seconds)
        p.cluster.CopyFrom(self.cluster.to_proto())
        p.ops.extend(plan_pb2.OpPlacement(name=o.name, device=o.device) for o in self.ops)
        p.variables.extend(plan_pb2.VariablePlacement(node=v.node, name=v.name, device=v.device,
                                                      bytes=v.bytes, shape=list(v.shape),
                                                      dtype=v.dtype) for v in self.variables)
        p.cut_edges.extend(plan_pb2.CutEdge(tensor=e.tensor, src_device=e.src_device,
                                            dst_device=e.dst_device, bytes=e.bytes)
                           for e in self.cut_edges)
        p.usage.extend(plan_pb2.DeviceUsage(device=u.device, ops=u.ops, flops=u.flops,
                                            param_bytes=u.param_bytes, peak_bytes=u.peak_bytes,
                                            capacity_bytes=u.capacity_bytes,
                                            busy_seconds=u.busy_seconds) for u in self.usage)
        p.replicas.extend(plan_pb2.Replica(devices=list(r)) for r in self.replicas)
        if self.sync is not None:
            s = self.sync
            p.sync.CopyFrom(plan_pb2.GradientSync(
                method=s.method, backend=s.backend, replicas=s.replicas,
                fusion_bytes=s.fusion_bytes, reason=s.reason, exposed_seconds=s.exposed_seconds,
                costs=[plan_pb2.SyncCost(method=m, seconds=c) for m, c in s.costs]))
        p.buckets.extend(plan_pb2.Bucket(gradients=list(b.gradients), bytes=b.bytes)
                         for b in self.buckets)
        if self.pipeline is not None:
            p.pipeline.CopyFrom(self.pipeline.to_proto())
        if self.splits is not None:
            p.split_plan.CopyFrom(self.splits.to_proto())
        return p

    @classmethod
    def from_proto(cls, p: Any) -> "Plan":
        from tfplace.errors import PlanError
        if p.format_version != FORMAT_VERSION:
            raise PlanError(f"plan format {p.format_version!r} is not {FORMAT_VERSION!r}; "
                            "re-create the plan with this tfplace version (tfplace plan ...)")
        return cls(cluster=Cluster.from_proto(p.cluster), placer=p.placer,
                   ops=tuple(OpPlacement(o.name, o.device) for o in p.ops),
                   variables=tuple(VariablePlacement(v.node, v.name, v.device, int(v.bytes),
                                                     tuple(int(s) for s in v.shape), v.dtype)
                                   for v in p.variables),
                   cut_edges=tuple(CutEdge(e.tensor, e.src_device, e.dst_device, int(e.bytes))
                                   for e in p.cut_edges),
                   usage=tuple(DeviceUsage(u.device, int(u.ops), float(u.flops),
                                           int(u.param_bytes), int(u.peak_bytes),
                                           int(u.capacity_bytes), float(u.busy_seconds))
                               for u in p.usage),
                   predicted_step_seconds=float(p.predicted_step_seconds),
                   graph_fingerprint=p.graph_fingerprint,
                   replicas=tuple(tuple(r.devices) for r in p.replicas),
                   sync=_sync_from_proto(p.sync) if p.HasField("sync") else None,
                   buckets=tuple(Bucket(tuple(b.gradients), int(b.bytes)) for b in p.buckets),
                   pipeline=_pipeline_from_proto(p.pipeline) if p.HasField("pipeline") else None,
                   splits=_splits_from_proto(p.split_plan) if p.HasField("split_plan") else None)

    def to_bytes(self) -> bytes:
        return bytes(self.to_proto().SerializeToString(deterministic=True))

    @classmethod
    def from_bytes(cls, data: bytes) -> "Plan":
        from tfplace._pb import plan_pb2
        p = plan_pb2.Plan()
        p.ParseFromString(data)
        return cls.from_proto(p)

    def save(self, path: str) -> None:
        """`.pbtxt` (text) or anything else (binary)."""
        from tfplace.planio import save_plan
        save_plan(self, path)

    @classmethod
    def load(cls, path: str) -> "Plan":
        from tfplace.planio import load_plan
        return load_plan(path)

    def summary(self) -> str:
        from tfplace.planio import summary_table
        return summary_table(self)


def _sync_from_proto(s: Any) -> GradientSyncPlan:
    return GradientSyncPlan(method=s.method, backend=s.backend, replicas=int(s.replicas),
                            fusion_bytes=int(s.fusion_bytes), reason=s.reason,
                            costs=tuple((c.method, float(c.seconds)) for c in s.costs),
                            exposed_seconds=float(s.exposed_seconds))


def _splits_from_proto(p: Any) -> "SplitPlan":
    from tfplace.splits.splitplan import SplitPlan
    return SplitPlan.from_proto(p)


def _pipeline_from_proto(p: Any) -> "PipelinePlan":
    from tfplace.pipeline.value import PipelinePlan
    return PipelinePlan.from_proto(p)
