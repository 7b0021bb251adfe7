"""The pipeline plan value: stages, the queues between them and the schedule, mirrored by protos."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfplace.pipeline.schedules import Op, stage_orders
from tfplace.pipeline.waits import Timeline, simulate

__all__ = ["PipelineStage", "PipelineQueue", "PipelinePlan", "FORWARD", "BACKWARD"]

FORWARD, BACKWARD = "forward", "backward"


@dataclass(frozen=True)
class PipelineStage:
    index: int
    devices: tuple[str, ...]      # one, or several when the stage itself is placed
    units: tuple[str, ...]        # layers, in forward order
    ops: tuple[str, ...]          # every op of those units: forward, backward, optimizer
    flops: float                  # per step, all micro-batches
    param_bytes: int
    peak_bytes: int               # predicted (tfplace.pipeline.planner.stage_need)
    stash: int                    # micro-batches whose activations it holds at the peak
    seconds: float                # predicted per micro-batch: compute F+B and its sends


@dataclass(frozen=True)
class PipelineQueue:
    src: int                      # stage index
    dst: int
    direction: str                # forward (activations) | backward (gradients)
    capacity: int                 # items; 0 = rendezvous
    item_bytes: int               # one micro-batch
    peak: int = 0                 # predicted most items queued at once


@dataclass(frozen=True)
class PipelinePlan:
    schedule: str
    micro_batches: int
    stages: tuple[PipelineStage, ...]
    queues: tuple[PipelineQueue, ...] = ()
    predicted_step_seconds: float = 0.0
    global_batch: int = 0         # 0 when unknown

    # -- queries ------------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_of(self, op: str) -> int:
        for s in self.stages:
            if op in s.ops:
                return s.index
        raise KeyError(op)

    def placement(self) -> dict[str, str]:
        """Op name -> device, for stages of one device each (place multi-device stages with a
        placer over their ops)."""
        wide = [s.index for s in self.stages if len(s.devices) != 1]
        if wide:
            from tfplace.errors import PlanError
            raise PlanError(f"stages ({', '.join(map(str, wide))}) span several devices; place "
                            "their ops with a placer (tfplace.placers) instead of placement()")
        return {op: s.devices[0] for s in self.stages for op in s.ops}

    def queue(self, src: int, dst: int) -> PipelineQueue:
        for q in self.queues:
            if (q.src, q.dst) == (src, dst):
                return q
        raise KeyError((src, dst))

    def capacities(self, direction: str) -> tuple[int, ...]:
        """Per queue between stage s and s+1 (s ascending), in one direction."""
        qs = sorted((q for q in self.queues if q.direction == direction),
                    key=lambda q: min(q.src, q.dst))
        return tuple(q.capacity for q in qs)

    def orders(self) -> tuple[tuple[Op, ...], ...]:
        """Every stage's F/B ops in order: what each stage's loop runs."""
        return stage_orders(self.schedule, self.num_stages, self.micro_batches)

    def timeline(self) -> Timeline:
        return simulate(self.schedule, self.num_stages, self.micro_batches,
                        forward_capacity=self.capacities(FORWARD),
                        backward_capacity=self.capacities(BACKWARD))

    def grid(self) -> str:
        from tfplace.pipeline.grid import schedule_grid
        return schedule_grid(self.timeline())

    # -- proto --------------------------------------------------------------------------------
    def to_proto(self) -> Any:
        from tfplace._pb import plan_pb2
        p = plan_pb2.Pipeline(schedule=self.schedule, micro_batches=self.micro_batches,
                              global_batch=self.global_batch,
                              predicted_step_seconds=self.predicted_step_seconds)
        p.stages.extend(plan_pb2.Stage(index=s.index, devices=list(s.devices), units=list(s.units),
                                       ops=list(s.ops), flops=s.flops, param_bytes=s.param_bytes,
                                       peak_bytes=s.peak_bytes, stash=s.stash, seconds=s.seconds)
                        for s in self.stages)
        p.queues.extend(plan_pb2.PipelineQueue(src=q.src, dst=q.dst, direction=q.direction,
                                               capacity=q.capacity, item_bytes=q.item_bytes,
                                               peak=q.peak) for q in self.queues)
        return p

    @classmethod
    def from_proto(cls, p: Any) -> "PipelinePlan":
        return cls(schedule=p.schedule, micro_batches=int(p.micro_batches),
                   global_batch=int(p.global_batch),
                   predicted_step_seconds=float(p.predicted_step_seconds),
                   stages=tuple(PipelineStage(int(s.index), tuple(s.devices), tuple(s.units),
                                              tuple(s.ops), float(s.flops), int(s.param_bytes),
                                              int(s.peak_bytes), int(s.stash), float(s.seconds))
                                for s in p.stages),
                   queues=tuple(PipelineQueue(int(q.src), int(q.dst), q.direction,
                                              int(q.capacity), int(q.item_bytes), int(q.peak))
                                for q in p.queues))

    def to_bytes(self) -> bytes:
        return bytes(self.to_proto().SerializeToString(deterministic=True))

    @classmethod
    def from_bytes(cls, data: bytes) -> "PipelinePlan":
        from tfplace._pb import plan_pb2
        p = plan_pb2.Pipeline()
        p.ParseFromString(data)
        return cls.from_proto(p)
