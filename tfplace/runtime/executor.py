"""Executor: imports a rewritten GraphDef as a tf.function bound to variables on their planned devices."""
from __future__ import annotations

from typing import Any, Sequence

from tfplace.capture import Captured
from tfplace.errors import GraphError, StageFailed, WorkerLost
from tfplace.rewrite.repeat import step_copy
from tfplace.runtime.devices import prepare
from tfplace.runtime.graph_import import import_graph_def as tf_import
from tfplace.runtime import writeback
from tfplace.runtime.constants import attached_value, consumer_devices, near, same_device
from tfplace.runtime.live import live
from tfplace.runtime.per_replica import PerReplica, flatten_shares, lazy_source

__all__ = ["Executor", "WRITEBACK_MODES"]

WRITEBACK_MODES = ("step", "manual")


def _replica_path(node: str) -> tuple[list[int], str]:
    """'tfplace_r1/tfplace_r0/dense/kernel' -> ([1, 0], 'dense/kernel'): the replica copies
    (outermost first; pipeline x data parallel nests micro-batch copies in replicas) and the
    captured node a copy stands for."""
    path: list[int] = []
    while True:
        head, sep, rest = node.partition("/")
        if not (sep and head.startswith("tfplace_r") and head[9:].isdigit()):
            return path, node
        path.append(int(head[9:]))
        node = rest


def _what_failed(message: str) -> str:
    """The line of a TF error that says what went wrong: the one before the first
    ``[[{{node ...}}]]`` (TF puts tracebacks and "Graph execution error:" first)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "{{node" in ln:
            return (lines[i - 1] if i else ln)[:300]
    return (lines[-1] if lines else "")[:300]


def _base_name(node: str) -> str:
    """'tfplace_r3/dense/kernel' -> 'dense/kernel': the captured node a replica copy stands for."""
    return _replica_path(node)[1]


def _is_primary(node: str) -> bool:
    return not any(_replica_path(node)[0])


class Executor:
    """Runs one rewritten step. Variables the plan moves are created on their device once,
    initialised from the user's variable; ``writeback="step"`` copies their new values back to
    the user's variables at the end of every step, so the user's model always sees them."""

    def __init__(self, captured: Captured, graph_def: Any, plan: Any, *,
                 cluster: Any = None, writeback: str = "step",
                 sum_variables: Any = ()) -> None:
        """``sum_variables``: the user's variables that are accumulators (Keras metric totals
        and counts): with replicas, each replica accumulates its own share and the user's
        variable receives the SUM over replicas; every other variable receives replica 0's."""
        import tensorflow as tf
        if writeback not in WRITEBACK_MODES:
            from tfplace.errors import PlanError
            raise PlanError(f"unknown writeback {writeback!r} (valid: {', '.join(WRITEBACK_MODES)})")
        self.captured, self.graph_def, self.plan, self.writeback = captured, graph_def, plan, writeback
        self.cluster = cluster if cluster is not None else plan.cluster
        devices = tuple(sorted({n.device for n in graph_def.node if n.device}))
        prepare(self.cluster, devices)
        self.pairs: list[tuple[str, Any, Any]] = []      # (placeholder, user's var, placed var)
        # id(user's var) -> (var, axis, shard placeholders in order): model-parallel splits
        self.shards: dict[int, tuple[Any, int, list[str]]] = {}
        self.shard_copies: list[tuple[str, Any, int, int, int]] = []   # other replicas' shards
        self.constants: list[tuple[str, Any]] = []
        self.tokens: list[tuple[str, Any]] = []
        self.input_devices: dict[str, str] = {}    # its input reads' scopes -> devices (traces)
        sum_ids = {id(v) for v in sum_variables}
        readers = consumer_devices(graph_def)
        made: dict = {}                                # constants' copies, one per device
        for node in graph_def.node:
            if node.op != "Placeholder" or node.name in captured.inputs:
                continue
            base = _base_name(node.name)
            if "_tfplace_shard_of" in node.attr:       # shard i of a split variable
                self._add_shard(node, captured)
                continue
            if "_tfplace_value" in node.attr:          # a constant the rewrite needs fed
                self.constants.append((node.name, near(readers.get(node.name, set()),
                                                       attached_value(node))))
                continue
            if base.startswith("tfplace_token/"):      # a collective's per-device ordering token
                with tf.device(node.device):
                    self.tokens.append((node.name, tf.Variable(0.0, trainable=False)))
                continue
            if base in captured.constants:
                self.constants.append((node.name, near(readers.get(node.name, set()),
                                                       captured.constants[base], made)))
                continue
            orig = captured.bindings.get(base)
            if orig is None:
                raise GraphError(f"placeholder {node.name!r} of the rewritten graph is neither an "
                                 "argument, a captured constant nor a variable of the step")
            if same_device(orig.device, node.device) and _is_primary(node.name) and \
                    id(orig) not in sum_ids:
                placed = orig
            else:
                with tf.device(node.device):
                    placed = tf.Variable(orig.read_value(), trainable=orig.trainable,
                                         name=base.replace("/", "_") + "_tfplace")
            self.pairs.append((node.name, orig, placed))
        self.sums: dict[int, tuple[Any, list[Any]]] = {}   # id(user var) -> (var, replicas)
        if len({_base_name(n) for n, _o, _p in self.pairs}) < len(self.pairs):  # replicated
            for _n, orig, placed in self.pairs:
                if id(orig) in sum_ids:
                    self.sums.setdefault(id(orig), (orig, []))[1].append(placed)
        self._consumers = self._resource_consumers()
        # what the import needs: TF would prune the rest when it instantiates the function
        self._live = live(graph_def, [*captured.inputs, *(o.split(":")[0] for o in
                                                          captured.outputs), *self._consumers])
        # the pipeline's channels outlive a step: after a failed one they may hold its items
        self._channels = any(n.name.startswith("tfplace_pipeline/queue/")
                             for n in graph_def.node)
        self._split: tuple[Any, tuple[tuple[str, ...], ...]] | None = None   # per_replica_inputs
        self._trace()

    def _trace(self) -> None:
        import tensorflow as tf
        # plain Python around import_graph_def: autograph would only cost conversion time
        self._fn = tf.function(self._body, input_signature=self._input_specs(), autograph=False)
        self._call = self._fn.get_concrete_function()    # traced once; no per-call dispatch
        # (k, "whole" | "shares" | "lazy") -> k steps in one call (see _function)
        self._multi: dict[tuple[int, str], Any] = {}

    def _add_shard(self, node: Any, captured: Captured) -> None:
        """A variable on the placeholder's device holding its slice of the user's variable."""
        import tensorflow as tf
        base = node.attr["_tfplace_shard_of"].s.decode()
        axis, index = node.attr["_tfplace_shard_axis"].i, node.attr["_tfplace_shard_index"].i
        count = node.attr["_tfplace_shard_count"].i
        orig = captured.bindings.get(base)
        if orig is None:
            raise GraphError(f"shard placeholder {node.name!r} stands for {base!r}, which is "
                             "not a variable of the step")
        with tf.device(node.device):
            placed = tf.Variable(tf.split(orig.read_value(), count, axis)[index],
                                 trainable=orig.trainable,
                                 name=f"{base.replace('/', '_')}_shard{index}_tfplace")
        self.pairs.append((node.name, orig, placed))
        if _is_primary(node.name):                      # replica 0's shards make the whole
            entry = self.shards.setdefault(id(orig), (orig, axis, [""] * count))
            entry[2][index] = node.name
        else:                                           # another replica's copy of shard i
            self.shard_copies.append((node.name, orig, axis, index, count))

    def _input_specs(self, split: bool = False) -> list[Any]:
        """The arguments' specs, read off the rewritten graph (global shapes after replication;
        ``split``: one per replica's share of each split input, see ``per_replica_inputs``)."""
        import tensorflow as tf
        if split:
            graph_def, groups = self._presplit()
            names = [n for group in groups for n in group]
        else:
            graph_def, names = self.graph_def, list(self.captured.inputs)
        nodes = {n.name: n for n in graph_def.node}
        specs = []
        for name in names:
            attr = nodes[name].attr
            shape = None if attr["shape"].shape.unknown_rank else \
                [d.size if d.size >= 0 else None for d in attr["shape"].shape.dim]
            specs.append(tf.TensorSpec(shape, tf.dtypes.as_dtype(attr["dtype"].type), name=name))
        return specs

    def _resource_consumers(self) -> list[str]:
        """The ops touching a moved variable (its reads, writes and optimizer updates)."""
        moved = {node for node, orig, placed in self.pairs if placed is not orig}
        return [n.name for n in self.graph_def.node
                if any(i.split(":")[0].lstrip("^") in moved for i in n.input)]

    def _body(self, *flat: Any) -> list[Any]:
        return self._body_steps(1, *flat)

    def _body_steps(self, k: int, *flat: Any, split: bool = False, source: Any = None
                    ) -> list[Any]:
        """``k`` copies of the step imported one after another (copy j on the j-th share of
        ``flat``); automatic control dependencies order each copy's reads of a variable after
        the previous copy's writes, so they run as k sequential steps. The outputs of every
        copy, in order; with writeback "step", the copies back to the user's variables after
        the last. ``split``: the per-replica graph, each split input fed one tensor per replica;
        ``source`` (``per_replica.Shares``): ``flat`` is its iterators, each copy reads the
        replicas' next elements itself."""
        import tensorflow as tf
        g = tf.compat.v1.get_default_graph()
        c = self.captured
        live_def, groups = self._presplit() if split else (self._live, [(n,) for n in c.inputs])
        inputs = [n for group in groups for n in group]
        shared = {}
        for node, _orig, placed in self.pairs:
            shared[f"{node}:0"] = g.capture(placed.handle)
        for node, const in self.constants:
            shared[f"{node}:0"] = g.capture(const)
        for node, token in self.tokens:
            shared[f"{node}:0"] = g.capture(token.handle)
        wanted = list(c.outputs) + self._consumers
        n_in = len(inputs)
        outputs: list[Any] = []
        got: list[Any] = []
        for j in range(k):
            input_map = dict(shared)
            if source is not None:
                self.input_devices.update(source.scopes())
                got = source.get_next(flat)
                step_in = [source.pick(got, r, i) for i, group in enumerate(groups)
                           for r in range(len(group))]
            else:
                step_in = list(flat[j * n_in:(j + 1) * n_in])
            input_map.update({f"{name}:0": t for name, t in zip(inputs, step_in)})
            graph_def = live_def if j == 0 else step_copy(live_def, j)
            got = tf_import(graph_def, input_map=input_map, return_elements=wanted,
                            name="tfplace" if j == 0 else f"tfplace_step{j}")
            outputs += list(got[:len(c.outputs)])
        if self.writeback == "step":
            # the copies wait for the ops on the variables they copy (the step returns after all)
            after: dict[str, list[Any]] = {}
            for op in got[len(c.outputs):]:
                for t in op.inputs:
                    if t.dtype == tf.resource:
                        after.setdefault(t.name, []).append(op)
            deps = {node: after.get(g.capture(placed.handle).name, [])
                    for node, _o, placed in self.pairs}
            self._write_back_ops(deps)
        return outputs

    def run_steps(self, batches: Sequence[tuple[tuple, dict]]) -> list[Any]:
        """``len(batches)`` steps in one call, step j on ``batches[j]`` (its args and kwargs):
        one dispatch to the workers (and one write-back) for all of them. Returns each step's
        outputs. The function for a given count is traced on first use."""
        return self._steps([self.captured.flatten_inputs(args, kwargs)
                            for args, kwargs in batches])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._steps([self.captured.flatten_inputs(args, kwargs)])[0]

    def _steps(self, flats: Sequence[Sequence[Any]]) -> list[Any]:
        """One call of ``len(flats)`` steps on these flat arguments (whole tensors, per-replica
        shares, or lazy per-replica batches whose rows the step reads itself); each step's
        outputs."""
        k = len(flats)
        per = any(isinstance(t, PerReplica) for t in flats[0])
        shares = [self._per_replica_flat(f) for f in flats] if per else flats
        source = lazy_source(flats[0]) if per else None
        if source is not None and any(lazy_source(f) is not source for f in flats):
            raise GraphError("the per-replica batches of one call must come from one "
                             "step.prefetch(dataset)")
        fn = self._function(k, per and self.per_replica_inputs() is not None, source)
        if source is not None:
            source.claim([f[0].serial for f in flats])
            flat = list(shares[0])                   # the iterators; each copy reads them
        else:
            flat = [t for f in shares for t in f]
        out = self._run(fn, flat)
        n = len(self.captured.outputs)
        return [self.captured.pack_outputs(list(out[j * n:(j + 1) * n]) if n else [])
                for j in range(k)]

    def per_replica_inputs(self) -> tuple[tuple[str, ...], ...] | None:
        """Per argument of the step, the placeholders of the per-replica graph that take it:
        one per replica for an input the replication pass splits, itself for one every replica
        reads whole; None when no input is split (one replica, a pipeline, Horovod)."""
        if self._split is None:
            from tfplace.rewrite import presplit
            if self.plan.pipeline is not None or self.plan.num_replicas < 2 or not any(
                    presplit.split_of(self._live, n) for n in self.captured.inputs):
                return None
            self._split = presplit.apply(self._live, self.captured.inputs)
        return self._split[1]

    def _presplit(self) -> tuple[Any, tuple[tuple[str, ...], ...]]:
        """The per-replica graph and its input groups (``per_replica_inputs``)."""
        if self.per_replica_inputs() is None or self._split is None:
            raise GraphError("this step's batch is not split across replicas; call it with "
                             "whole tensors, not per-replica ones")
        return self._split

    def replica_input_devices(self) -> list[str]:
        """Each replica's device for its share of the batch ("" where the plan leaves it to
        TF); [] when no input is split."""
        names = self.per_replica_inputs() or ()
        group = next((g for g in names if len(g) > 1), ())
        nodes = {n.name: n for n in self._split[0].node} if group and self._split else {}
        return [nodes[n].device for n in group]

    def _function(self, k: int, split: bool, source: Any) -> Any:
        """The concrete function of ``k`` steps per call (traced on first use): on whole
        arguments, on per-replica shares (``split``), or reading ``source``'s iterators."""
        import tensorflow as tf
        if k == 1 and not split and source is None:
            return self._call
        mode = "lazy" if source is not None else "shares" if split else "whole"
        if (k, mode) not in self._multi:
            if source is not None:
                specs = [tf.TensorSpec([], tf.resource)] * len(source.iterators)
            else:
                specs = self._input_specs(split) * k
            fn = tf.function(lambda *flat: self._body_steps(k, *flat, split=split,
                                                            source=source),
                             input_signature=specs, autograph=False)
            self._multi[k, mode] = fn.get_concrete_function()
        return self._multi[k, mode]

    def _per_replica_flat(self, flat: Sequence[Any]) -> list[Any]:
        names = self.per_replica_inputs()
        source = lazy_source(flat)
        if names is None and source is not None and source.count == 1:
            names = tuple((n,) for n in self.captured.inputs)   # readers of whole arguments
        if names is None:
            raise GraphError("this step's batch is not split across replicas; call it with "
                             "whole tensors, not per-replica ones")
        return flatten_shares(flat, names, self.captured.inputs)

    def _run(self, call: Any, flat: list[Any]) -> Any:
        """``call(*flat)``, with a lost worker or a failed pipeline stage made a tfplace error."""
        import tensorflow as tf
        try:
            return call(*flat)
        except (tf.errors.UnavailableError, tf.errors.AbortedError,
                tf.errors.CancelledError, tf.errors.DeadlineExceededError) as e:
            self._after_failure()
            launcher = getattr(self.cluster, "_launcher", None)
            if launcher is not None:
                launcher.check(ran=self._stages_on)
            raise WorkerLost(f"a worker stopped answering during the step ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}); nothing after the failure was "
                             "applied: restart the workers and retry") from e
        except tf.errors.OpError as e:
            self._after_failure()
            where = self._failed_stage(str(e))
            if where is None:
                raise
            first = _what_failed(str(e))
            raise StageFailed(f"{where} failed during the step ({type(e).__name__}: {first}); "
                              "the step was aborted and its queues closed; the original TF "
                              "error is chained as __cause__") from e

    def _after_failure(self) -> None:
        """The pipeline's channels may still hold the failed step's items: trace the step
        anew, so that the next one gets new kernels and with them new, empty channels (both
        backends make one channel per kernel instance)."""
        if self._channels:
            self._trace()

    def _failed_stage(self, message: str) -> str | None:
        """'pipeline stage 1 (device), forward of micro-batch 2, op dense_3/Assert' for the op
        an error message names, or None outside a pipeline (or when no op is named)."""
        import re
        pipe = getattr(self.plan, "pipeline", None)
        if pipe is None:
            return None
        nodes = {n.name: n for n in self.graph_def.node}
        for name in re.findall(r"\{\{node ([^}]+)\}\}", message):
            node = nodes.get(re.sub(r"^tfplace(_step\d+)?/", "", name))
            if node is None:
                continue
            stage = next((s for s in pipe.stages if node.device in s.devices), None)
            if stage is None:
                continue
            path, base = _replica_path(node.name)
            part = "backward" if "gradient_tape/" in node.name else "forward"
            mb = f", {part} of micro-batch {path[-1]}" if path else ""
            return f"pipeline stage {stage.index} ({node.device}){mb}, op {base}"
        return None

    def _stages_on(self, task: Any) -> str:
        """'pipeline stage 1' (or 'stages 0, 1'): the plan's stages with a device on ``task``."""
        pipe = getattr(self.plan, "pipeline", None)
        if pipe is None:
            return ""
        prefix = f"/job:{task.job}/replica:0/task:{task.index}/"
        hit = [str(s.index) for s in pipe.stages if any(d.startswith(prefix) for d in s.devices)]
        if not hit:
            return ""
        return f"pipeline stage{'s' if len(hit) > 1 else ''} {', '.join(hit)}"

    def _write_back_ops(self, deps: dict[str, list[Any]] | None = None) -> list[Any]:
        return writeback.copy_back(self.pairs, self.shards, self.sums, _is_primary, deps)

    def write_back(self) -> None:
        """Copy the placed values into the user's variables (replica 0's, or the replicas'
        sum for accumulators)."""
        self._write_back_ops()

    def refresh(self) -> None:
        """Copy the user's variables into the placed ones (after the user assigned to them);
        an accumulator's value goes to replica 0 and the other replicas restart from zero."""
        writeback.refresh(self.pairs, self.shards, self.shard_copies, self.sums, _is_primary)

    @property
    def moved_variables(self) -> int:
        return sum(1 for _n, o, p in self.pairs if p is not o)
