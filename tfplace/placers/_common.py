"""What every placer shares: colocation groups, the memory tracker, and the out-of-memory error."""
from __future__ import annotations

from typing import Sequence

from tfplace.analysis import OpDag
from tfplace.errors import PlanError, bullets
from tfplace.memory import MemoryTracker, fmt_bytes

__all__ = ["no_room_error", "fitting_devices"]


def fitting_devices(tracker: MemoryTracker, group: Sequence[int]) -> list[int]:
    params, acts = tracker.group_need(group)
    return [d for d in range(len(tracker.names)) if tracker.fits(params, acts, d)]


def no_room_error(tracker: MemoryTracker, group: Sequence[int], dag: OpDag) -> PlanError:
    """A PlanError listing each device's need for `group` against its capacity, and the fixes."""
    first = dag.nodes[group[0]].name
    what = (f"op {first!r}" if len(group) == 1
            else f"colocation group of {len(group)} ops starting at {first!r}")
    lines = []
    for d, name in enumerate(tracker.names):
        params, acts = tracker.need(group, d)
        cap = tracker.capacity[d]
        rel = ">" if params + acts > cap else "<="
        lines.append(f"{name}: needs {fmt_bytes(params + acts)} (params {fmt_bytes(params)} + "
                     f"activations {fmt_bytes(acts)}) {rel} capacity {fmt_bytes(cap)}")
    return PlanError(bullets(
        f"no device has memory for {what}:", lines)
        + "\n  fix: add devices, give devices more `memory` in the cluster YAML, "
          "or use a smaller batch")
