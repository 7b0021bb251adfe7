"""Op-level Chrome traces of executed steps, read from TF's profiler (the overlap of gradient
sync with backward compute that they show is measured in ``runtime.overlap``).

Where the numbers come from (TF 2.21): ``context.enable_run_metadata()`` no longer records
``step_stats`` for functions (it returns only the partition graphs), so the timings come from
the TF profiler instead. Its host plane has one line per thread; every synchronous kernel is a
``"<node>:<OpType>"`` event, and every asynchronous kernel (collectives, _Recv) a pair of
``ExecutorState::ProcessAsync::Start``/``Done`` events naming the node. The profiler does not
say which logical device ran a kernel, so the device comes from the rewritten GraphDef (the
executor imports it under the ``tfplace/`` scope)::

    XSpace /host:CPU line (thread) --events--> node name --graph_def--> device --> Chrome "pid"

``trace_ops`` profiles only the calling process: ops that run inside remote gRPC workers appear
as the client's _Send/_Recv and remote-call events, not as the workers' kernels.
``trace_workers`` profiles the workers themselves, through the profiler service that every
``tf.distribute.Server`` hosts on its own gRPC port (all on one host: one clock).
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from tfplace.errors import BackendError
from tfplace.runtime.overlap import format_overlap, is_backward_op, is_sync_op, overlap_report
from tfplace.runtime.per_replica import INPUT_SCOPE

__all__ = ["OpTrace", "trace_ops", "trace_steps", "xspace_events", "overlap_report",
           "format_overlap", "op_kinds", "is_sync_op", "is_backward_op", "write_trace",
           "IMPORT_SCOPE", "trace_workers"]

IMPORT_SCOPE = "tfplace"            # the name= the executor imports the rewritten graph under
_ASYNC_START = "ExecutorState::ProcessAsync::Start"
_ASYNC_DONE = "ExecutorState::ProcessAsync::Done"
_PROCESS = "ExecutorState::Process"
_HOST = "host (unplaced)"


def op_kinds(graph_def: Any) -> dict[str, str]:
    """node -> "sync" | "backward" for the nodes that are either.

    A sync node is a ``tfplace_sync/`` node that reads a gradient through data edges: the
    batch split and the loss average live in the same scope but move no gradients."""
    consumers: dict[str, list[str]] = {}
    for n in graph_def.node:
        for i in n.input:                         # data edges: a control edge moves no bytes
            if not i.startswith("^"):
                consumers.setdefault(i.split(":")[0], []).append(n.name)
    todo = [n.name for n in graph_def.node if is_backward_op(n.name)]
    downstream = set(todo)                        # everything a gradient flows into
    while todo:
        for c in consumers.get(todo.pop(), ()):
            if c not in downstream:
                downstream.add(c)
                todo.append(c)
    kinds: dict[str, str] = {}
    for n in graph_def.node:
        if is_sync_op(n.name):
            if n.name in downstream:
                kinds[n.name] = "sync"
        elif is_backward_op(n.name):
            kinds[n.name] = "backward"
    return kinds


def _node_devices(graph_def: Any) -> dict[str, str]:
    return {n.name: n.device for n in graph_def.node if n.device}


def _graph_events(space: Any, graph_def: Any, inputs: Mapping[str, str] | None
                  ) -> list[dict[str, Any]]:
    """The events of a step's run: its nodes' and input reads' devices, its nodes' kinds."""
    return xspace_events(space, {**_node_devices(graph_def), **(inputs or {})},
                         op_kinds(graph_def))


# the scope a node was imported under: the step's graph ("tfplace/"), or its copy j >= 1 in a
# call that runs several steps ("tfplace_step2/", tfplace.runtime.executor)
_SCOPE = re.compile(rf"{IMPORT_SCOPE}(?:_step\d+)?/")
# a step's own reads of its arguments (per_replica.Shares.get_next), TF numbering the scopes of
# copy j >= 1: "tfplace_input/r0_1/IteratorGetNext" is read where "tfplace_input/r0" is
_INPUT = re.compile(rf"^{INPUT_SCOPE}(?:_\d+)?/(r\d+)(?:_\d+)?/")


def _resolve(node: str, table: Mapping[str, str]) -> str | None:
    """``table``'s entry (keyed by the rewritten graph's node names) for ``node`` or for the
    nearest enclosing name (TF adds ``/_12``-style suffixes for the _Send/_Recv pairs it
    inserts between partitions). Every copy of the step resolves to the graph's node."""
    scope = _SCOPE.match(node)
    name = node[scope.end():] if scope else _INPUT.sub(rf"{INPUT_SCOPE}/\1/", node, count=1)
    while name:
        if name in table:
            return table[name]
        name = name.rpartition("/")[0]
    return None


def _stats(plane: Any, event: Any) -> dict[str, Any]:
    out = {}
    for s in event.stats:
        key = plane.stat_metadata[s.metadata_id].name
        out[key] = (s.str_value or s.int64_value or s.uint64_value or s.double_value
                    or (plane.stat_metadata[s.ref_value].name if s.ref_value else None))
    return out


_COPY = re.compile(r"tfplace_step(\d+)/")


def xspace_events(xspace: Any, devices: Mapping[str, str],
                  kinds: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Chrome trace events ("ph": "X", microseconds from the first op) for every kernel in an
    XSpace: one process per device (named by an "M" event), one thread per profiler thread.

    A synchronous kernel is one event. An asynchronous one (a collective, a _Recv) is one
    event from launch to done, which includes waiting for its peers, on a lane of its own
    ("tid" >= 1000, "phase": "launch-to-done"); the collective's own execution, when TF
    traces it, is a separate event on the collective_ops thread. ``args.step`` numbers the
    training steps: TF's step id (one per call), and within a call that runs several steps
    (``steps_per_execution``) the copy of the step the node belongs to ("tfplace_step2/...").
    """
    pids: dict[str, int] = {}
    events: list[dict[str, Any]] = []
    keys: list[tuple[dict[str, Any], str, tuple[int, int]]] = []  # (args, node, (TF step, copy))

    def emit(node: str, op: str, start_ps: int, dur_ps: int, tid: int, step: int | None,
             phase: str | None = None) -> None:
        device = _resolve(node, devices) or _HOST
        pid = pids.setdefault(device, len(pids))
        args: dict[str, Any] = {"op": op, "device": device}
        kind = _resolve(node, kinds or {})
        if kind:
            args["kind"] = kind
        if step is not None:
            copy = _COPY.match(node)
            keys.append((args, node, (step, int(copy.group(1)) if copy else 0)))
        if phase:
            args["phase"] = phase
        events.append({"name": node, "cat": kind or "op", "ph": "X", "pid": pid, "tid": tid,
                       "ts": start_ps / 1e6, "dur": dur_ps / 1e6, "args": args})

    for plane in xspace.planes:
        if not plane.name.startswith("/host:"):
            continue
        pending: dict[tuple[str, int], tuple[int, str]] = {}
        done: list[tuple[str, int, int]] = []
        for tid, line in enumerate(plane.lines):
            base_ps = line.timestamp_ns * 1000
            process_end, process_step = -1, None      # the executor run enclosing the ops
            for ev in sorted(line.events, key=lambda e: e.offset_ps):
                meta = plane.event_metadata[ev.metadata_id]
                start = base_ps + ev.offset_ps
                if meta.name == _PROCESS:
                    process_end = start + ev.duration_ps
                    process_step = _stats(plane, ev).get("id")
                    continue
                if meta.name in (_ASYNC_START, _ASYNC_DONE):
                    st = _stats(plane, ev)
                    key = (str(st.get("name", "")), int(st.get("step_id") or 0))
                    if meta.name == _ASYNC_START:
                        pending[key] = (start, str(st.get("kernel_type", "")))
                    else:
                        done.append((key[0], key[1], start + ev.duration_ps))
                    continue
                node, sep, op = meta.name.rpartition(":")
                if sep and node and op == meta.display_name:
                    step = _stats(plane, ev).get("step_id") if ev.stats else None
                    if step is None and start < process_end:
                        step = process_step
                    emit(node, op, start, ev.duration_ps, tid, step)
        lanes: dict[str, list[int]] = {}              # per device: end time of each async lane
        for node, step, end in sorted(done, key=lambda d: pending.get(d[:2], (0,))[0]):
            got = pending.pop((node, step), None)
            if got is None:
                continue
            device = _resolve(node, devices) or _HOST
            ends = lanes.setdefault(device, [])
            lane = next((i for i, e in enumerate(ends) if e <= got[0]), len(ends))
            ends[lane:lane + 1] = [end]
            emit(node, got[1], got[0], end - got[0], 1000 + lane, step, "launch-to-done")
    # a TF step id is a training step if it ran one of the step's own nodes (imported as
    # "tfplace/...", "tfplace_step2/...", its input reads "tfplace_input/..."): the function
    # runs of a tf.data pipeline prefetching beside the steps have step ids of their own
    ran = {tf_step for _args, node, (tf_step, _copy) in keys if node.startswith("tfplace")}
    step_ids: dict[tuple[int, int], int] = {}
    for args, _node, step_copy in keys:
        if step_copy[0] in ran:
            args["step"] = step_ids.setdefault(step_copy, len(step_ids))
    t0 = min((e["ts"] for e in events), default=0.0)
    for e in events:
        e["ts"] = round(e["ts"] - t0, 3)
        e["dur"] = round(e["dur"], 3)
    meta_events = [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": dev}}
                   for dev, pid in pids.items()]
    meta_events += [{"name": "process_sort_index", "ph": "M", "pid": pid,
                     "args": {"sort_index": pid}} for pid in pids.values()]
    return meta_events + sorted(events, key=lambda e: (e["ts"], e["pid"]))


@dataclass
class OpTrace:
    """The events of one profiled run (filled when ``trace_ops`` exits)."""
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"traceEvents": self.events, "displayTimeUnit": "ms",
                "otherData": {"tfplace_overlap": overlap_report(self.events)}}

    def overlap(self) -> dict[str, Any]:
        return overlap_report(self.events)


def write_trace(trace: OpTrace, path: str) -> None:
    with open(path, "w") as f:
        json.dump(trace.as_json(), f)


@contextlib.contextmanager
def trace_ops(graph_def: Any, inputs: Mapping[str, str] | None = None) -> Iterator[OpTrace]:
    """Profile the TF ops run inside the block; the events appear on the yielded OpTrace.
    ``inputs``: the executor's ``input_devices``, read when the block has run."""
    import tensorflow as tf
    result = OpTrace()
    with tempfile.TemporaryDirectory(prefix="tfplace_trace_") as logdir:
        opts = tf.profiler.experimental.ProfilerOptions(host_tracer_level=3,
                                                        python_tracer_level=0,
                                                        device_tracer_level=1)
        try:
            tf.profiler.experimental.start(logdir, options=opts)
        except tf.errors.AlreadyExistsError as e:
            raise BackendError("another TF profiler session is running in this process; stop "
                               "it before tracing a tfplace step") from e
        try:
            yield result
        finally:
            tf.profiler.experimental.stop()
        space = _read_xspace(logdir)
    result.events = _graph_events(space, graph_def, inputs)


def _read_xspace(logdir: str) -> Any:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    for path in glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")):
        with open(path, "rb") as f:
            part = xplane_pb2.XSpace()
            part.ParseFromString(f.read())
        space.planes.extend(part.planes)
    return space


@contextlib.contextmanager
def trace_workers(addresses: Sequence[str], graph_def: Any, *, duration_ms: int,
                  start_delay: float = 0.5, inputs: Mapping[str, str] | None = None
                  ) -> Iterator[OpTrace]:
    """Profile the gRPC workers at ``addresses`` ("host:port") for ``duration_ms`` while the
    block runs (the block should fit in that window, after ``start_delay`` seconds of set-up);
    their kernels appear on the yielded OpTrace, one Chrome process per device (``inputs`` as
    in ``trace_ops``)."""
    import threading
    import tensorflow as tf
    result = OpTrace()
    failed: list[BaseException] = []
    with tempfile.TemporaryDirectory(prefix="tfplace_trace_") as logdir:
        def run() -> None:
            try:
                tf.profiler.experimental.client.trace(
                    ",".join(f"grpc://{a}" for a in addresses), logdir, int(duration_ms))
            except Exception as e:  # noqa: BLE001 - reported below, after the block
                failed.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        import time
        time.sleep(start_delay)
        yield result
        thread.join()
        if failed:
            raise BackendError(f"profiling the workers ({', '.join(addresses)}) failed: "
                               f"{failed[0]}") from failed[0]
        space = _read_xspace(logdir)
    result.events = _graph_events(space, graph_def, inputs)


def trace_steps(executor: Any, args: Sequence[Any], steps: int, path: str | None = None,
                kwargs: Mapping[str, Any] | None = None) -> OpTrace:
    """Run ``executor(*args, **kwargs)`` ``steps`` times under the profiler; write the Chrome
    trace to ``path`` when given, and return it."""
    import tensorflow as tf
    with trace_ops(executor.graph_def, executor.input_devices) as trace:
        for _ in range(steps):
            out = executor(*args, **dict(kwargs or {}))
            for t in tf.nest.flatten(out):          # wait for the step before the next one
                getattr(t, "numpy", lambda: None)()
    if path:
        write_trace(trace, path)
    return trace
