"""Op-level Chrome traces from TF's profiler, and the measured overlap of sync with backward."""
from __future__ import annotations

import json

import models
import tfplace
from tfplace.runtime.trace import (_resolve, format_overlap, op_kinds, overlap_report,
                                   trace_steps, xspace_events)

D0, D1 = "/job:localhost/replica:0/task:0/device:CPU:0", "/job:localhost/replica:0/task:0/device:CPU:1"


def _x(name: str, pid: int, ts: float, dur: float, kind: str | None, step: int = 0,
       phase: str | None = None) -> dict:
    args = {"op": "Op", "step": step, **({"kind": kind} if kind else {}),
            **({"phase": phase} if phase else {})}
    return {"name": name, "ph": "X", "pid": pid, "tid": 0, "ts": ts, "dur": dur, "args": args}


def test_overlap_report_exact_values() -> None:
    events = [
        {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": D0}},
        {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": D1}},
        _x("r0/gradient_tape/a", 0, 0, 10, "backward"),
        _x("r1/gradient_tape/b", 1, 5, 15, "backward"),           # backward busy: [0, 20)
        _x("tfplace_sync/concat", 0, 8, 4, "sync"),               # [8, 12): all during backward
        _x("tfplace_sync/collective", 0, 12, 20, "sync", phase="launch-to-done"),  # [12, 32)
        _x("tfplace_sync/collective", 0, 25, 2, "sync"),          # the reduction itself
        _x("r1/gradient_tape/c", 1, 40, 5, "backward", step=1),
        _x("tfplace_sync/collective_1", 1, 50, 5, "sync", step=1),   # after backward: no overlap
        _x("r1/gradient_tape/wait", 1, 0, 100, "backward", phase="launch-to-done"),  # a wait
    ]
    r = overlap_report(events)
    assert r["devices"][D0] == {"sync_us": 24.0, "overlap_us": 12.0,
                                "active_us": 6.0, "active_overlap_us": 4.0}
    assert r["devices"][D1] == {"sync_us": 5.0, "overlap_us": 0.0,
                                "active_us": 5.0, "active_overlap_us": 0.0}
    assert (r["steps"], r["steps_sync_before_backward_end"]) == (2, 1)
    assert (r["sync_ops"], r["backward_ops"], r["backward_us"]) == (4, 3, 25.0)
    assert (r["first_sync_us"], r["last_backward_end_us"]) == (8, 45)
    assert "1 of 2" in format_overlap(r)


def test_op_kinds_follow_data_edges_only() -> None:
    from tensorflow.core.framework import graph_pb2
    gd = graph_pb2.GraphDef()
    for name, inputs in [("x", []), ("tfplace_sync/split_x", ["x"]),
                         ("tfplace_r0/loss", ["tfplace_sync/split_x:0"]),
                         ("tfplace_r0/gradient_tape/g", ["tfplace_r0/loss"]),
                         ("tfplace_sync/concat", ["tfplace_r0/gradient_tape/g"]),
                         ("tfplace_sync/collective", ["tfplace_sync/concat"]),
                         ("tfplace_sync/out_sum", ["tfplace_r0/loss", "^tfplace_sync/collective"])]:
        n = gd.node.add()
        n.name, n.op = name, "Identity"
        n.input.extend(inputs)
    assert op_kinds(gd) == {"tfplace_r0/gradient_tape/g": "backward",
                            "tfplace_sync/concat": "sync", "tfplace_sync/collective": "sync"}


def test_every_copy_of_the_step_resolves_to_its_node() -> None:
    table = {"dense/MatMul": D1, "x": D0}
    assert _resolve("tfplace/dense/MatMul", table) == D1
    assert _resolve("tfplace_step3/dense/MatMul", table) == D1        # steps_per_execution
    assert _resolve("tfplace_step3/dense/MatMul/_12", table) == D1    # TF's _Send/_Recv
    assert _resolve("dense/MatMul", table) == D1
    assert _resolve("tfplace_stepx/dense/MatMul", table) is None
    assert _resolve("tfplace_input/x", table) is None
    reads = {"tfplace_input/r1": D1}                                  # executor.input_devices
    assert _resolve("tfplace_input/r1/IteratorGetNext", reads) == D1
    assert _resolve("tfplace_input/r1_2/IteratorGetNext", reads) == D1  # in a later copy
    assert _resolve("tfplace_input_2/r1/IteratorGetNext", reads) == D1
    assert _resolve("tfplace_input_2/r0/IteratorGetNext", reads) is None


def test_empty_xspace_has_no_events() -> None:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    assert xspace_events(xplane_pb2.XSpace(), {}) == []


def test_data_parallel_trace(local4, tmp_path) -> None:
    """A real profile of a 2-replica MLP step: kernels on both replicas' devices, the
    gradient all-reduces, and sync that starts before backward has finished."""
    _ref, (model, step) = models.twin("mlp")
    pstep = tfplace.parallelize(step, cluster=local4, data_parallel=2, placer="single",
                                fusion_bytes=1024)          # several buckets, so some go early
    x, y = models.data("mlp", batch=16)
    pstep(x, y)                                             # compile and warm up
    assert len(pstep.plan.buckets) > 1
    path = tmp_path / "trace.json"
    trace = trace_steps(pstep.executor, (x, y), 3, str(path))
    data = json.loads(path.read_text())
    events = [e for e in data["traceEvents"] if e["ph"] == "X"]
    names = {e["pid"]: e["args"]["name"] for e in data["traceEvents"] if e["ph"] == "M"
             and e["name"] == "process_name"}
    assert {e["pid"] for e in events} <= set(names)
    devices = {e["args"]["device"] for e in events}
    g0, g1 = pstep.plan.replicas[0][0], pstep.plan.replicas[1][0]
    assert {g0, g1} <= devices
    for e in events:
        assert e["dur"] >= 0 and e["ts"] >= 0 and e["args"]["op"]
    sync = [e for e in events if e["args"].get("kind") == "sync"]
    assert {e["args"]["op"] for e in sync} >= {"CollectiveReduceV2", "ConcatV2"}
    assert {e["args"]["device"] for e in sync} >= {g0, g1}
    assert any(e["args"].get("kind") == "backward" for e in events)
    report = data["otherData"]["tfplace_overlap"]
    assert report == trace.overlap()
    assert report["steps"] == 3
    # Buckets are fused in the order backward produces gradients, so the last layer's bucket
    # is flattened (and its all-reduce launched) while earlier layers' gradients are still
    # being computed. Which kernels interleave depends on the scheduler; that it happens in
    # at least one of three steps does not (measured: 3 of 3 on a loaded 2-core machine).
    assert report["steps_sync_before_backward_end"] >= 1
    assert report["first_sync_us"] < report["last_backward_end_us"]
