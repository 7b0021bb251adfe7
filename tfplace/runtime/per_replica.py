"""Per-replica input: each data-parallel replica reads its own share of every batch on its own
device, so the batch never passes through the calling process.

``ParallelFunction.prefetch(dataset)`` on a data-parallel step: for replica r, the dataset's
rows [r·B/R, (r+1)·B/R) of every batch-split argument (the replication pass's even split)
are taken by ``dataset.map``; that dataset is serialised and rebuilt on replica r's device
(``prefetch.on_worker``: a gRPC worker reads and prefetches its own share), and the iterator
yields, per argument, a ``PerReplica`` of the replicas' shares (arguments every replica reads
whole come from replica 0's iterator). The step, called on them, feeds each share straight to
its replica (``rewrite.presplit``).

    client:  step(x, y) -> dispatch only
    worker r:  dataset -> rows of replica r -> prefetch -> tfplace_r{r}/x, tfplace_r{r}/y

With one replica (a pipeline, a step placed over several devices) the same mechanism reads each
argument whole on the device of the op that uses it: a pipeline's inputs on its first stage,
its targets on its last (``Shares.columns``).

A dataset that cannot be serialised (a Python generator, an unseeded random op) is read here and
split by the step, as without ``prefetch``.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

__all__ = ["PerReplica", "Shares", "batches_for", "split_dataset", "flatten_shares",
           "lazy_source"]


class PerReplica:
    """One argument of a data-parallel step, already split across the replicas: either
    ``values[r]``, replica r's share on replica r's device, or (``source``) component ``index``
    of the next element of each replica's iterator, read inside the step itself, so that the
    calling process only dispatches the step. ``shape`` and ``dtype`` are the global batch's."""

    __slots__ = ("values", "source", "index", "serial", "_spec")

    def __init__(self, values: Sequence[Any] = (), *, source: "Shares | None" = None,
                 index: int = 0, serial: int = 0) -> None:
        self.values, self.source, self.index = tuple(values), source, index
        self.serial = serial              # which batch of ``source`` (lazy values only)
        self._spec = source.specs[index] if source is not None else None

    @property
    def count(self) -> int:
        return self.source.count if self.source is not None else len(self.values)

    @property
    def dtype(self) -> Any:
        return self._spec.dtype if self._spec is not None else self.values[0].dtype

    @property
    def shape(self) -> Any:
        if self.source is not None:
            return self.source.shapes[self.index]
        first = self.values[0].shape
        if first.rank is None or not first.rank or first[0] is None:
            return first
        return first.__class__([first[0] * self.count, *first[1:]])

    @property
    def devices(self) -> tuple[str, ...]:
        if self.source is not None:
            return self.source.devices_of(self.index)
        return tuple(v.device for v in self.values)

    def __repr__(self) -> str:
        how = "read in the step" if self.source is not None else "on their devices"
        what = f"{self.count} shares of " if self.count > 1 else ""
        return f"PerReplica({what}{self.shape} {self.dtype.name}, {how})"


class Shares:
    """The replicas' iterators behind lazy ``PerReplica`` arguments: ``iterators[r]`` yields
    replica r's element (``specs``, one per argument; ``split[i]`` says whether argument i is
    split or read whole, from replica 0's element) on ``devices[r]``; ``shapes``: the global
    batch's argument shapes (the first batch's, which the step was compiled for).

    With ``columns`` (one replica: a pipeline, or a step placed on several devices) the
    iterators are readers, not replicas: ``iterators[r]`` yields arguments ``columns[r]``,
    whole, on ``devices[r]``, the device of the op that reads them."""

    def __init__(self, iterators: Sequence[Any], devices: Sequence[str], specs: Sequence[Any],
                 split: Sequence[bool], shapes: Sequence[Any],
                 columns: Sequence[Sequence[int]] | None = None) -> None:
        self.iterators, self.devices = list(iterators), list(devices)
        self.specs, self.split, self.shapes = list(specs), list(split), list(shapes)
        self.columns = None if columns is None else [list(c) for c in columns]
        self.read = 0                     # batches the steps have read so far

    @property
    def count(self) -> int:
        """Shares per split argument (1 for readers of whole arguments)."""
        return len(self.iterators) if self.columns is None else 1

    def _reader(self, index: int) -> tuple[int, int]:
        """(iterator, position in its element) of argument ``index`` (readers only)."""
        assert self.columns is not None
        return next((r, cols.index(index)) for r, cols in enumerate(self.columns)
                    if index in cols)

    def devices_of(self, index: int) -> tuple[str, ...]:
        if self.columns is None:
            return tuple(self.devices)
        return (self.devices[self._reader(index)[0]],)

    def pick(self, got: Sequence[Sequence[Any]], r: int, index: int) -> Any:
        """Argument ``index`` of replica r in ``get_next``'s result."""
        if self.columns is None:
            return got[r][index]
        reader, pos = self._reader(index)
        return got[reader][pos]

    def claim(self, serials: Sequence[int]) -> None:
        """Check that a call reads batches ``serials``, the next ones in order, and count them
        read: each lazy batch is read by the step it is passed to, once, in the order the
        iterator yielded it (otherwise the step would train on other rows than it was given)."""
        from tfplace.errors import GraphError
        want = list(range(self.read, self.read + len(serials)))
        if list(serials) != want:
            raise GraphError(
                f"per-replica batch(es) {list(serials)} of step.prefetch(dataset) passed to a "
                f"step that would read batch(es) {want}: the step reads each replica's next "
                "rows itself, so pass every yielded batch once, in order, to the step")
        self.read += len(serials)

    @property
    def handles(self) -> list[Any]:
        return [it._iterator_resource for it in self.iterators]  # noqa: SLF001 - the resource

    def scopes(self) -> dict[str, str]:
        """The name scope of each reader's reads in a step -> its device: the traces know the
        devices of the step's graph nodes only."""
        return {_scope(r): device for r, device in enumerate(self.devices)}

    def get_next(self, handles: Sequence[Any]) -> list[list[Any]]:
        """Inside a step's function: each replica's next element, read on its device."""
        import tensorflow as tf
        out = []
        for r, (device, handle) in enumerate(zip(self.devices, handles)):
            specs = self.specs if self.columns is None else [self.specs[i]
                                                             for i in self.columns[r]]
            with tf.device(device), tf.name_scope(_scope(r)):
                out.append(list(tf.raw_ops.IteratorGetNext(
                    iterator=handle, output_types=[s.dtype for s in specs],
                    output_shapes=[s.shape for s in specs])))
        return out


INPUT_SCOPE = "tfplace_input"       # a step's own reads: "tfplace_input/r0/IteratorGetNext"


def _scope(reader: int) -> str:
    return f"{INPUT_SCOPE}/r{reader}"


def flatten_shares(flat: Sequence[Any], names: Sequence[Sequence[str]],
                   inputs: Sequence[str]) -> list[Any]:
    """A call's flat arguments as the per-replica graph takes them (``presplit.apply``'s
    ``names``): each split input's shares in replica order, each shared input whole."""
    from tfplace.errors import GraphError
    source = lazy_source(flat)
    if source is not None:
        if len(flat) != len(names) or any(
                not isinstance(t, PerReplica) or t.source is not source or t.index != i or
                t.serial != flat[0].serial for i, t in enumerate(flat)):
            raise GraphError("per-replica arguments read inside the step must be one whole "
                             "batch of step.prefetch(dataset), in order")
        if source.split != [len(g) > 1 for g in names] or source.count != max(
                len(g) for g in names):
            raise GraphError("these per-replica batches were made for another step's split")
        return source.handles
    out: list[Any] = []
    for i, (t, group) in enumerate(zip(flat, names)):
        if len(group) == 1:
            if isinstance(t, PerReplica):
                raise GraphError(f"argument {i} ({inputs[i]!r}) is read whole by every "
                                 "replica; pass one tensor, not per-replica shares")
            out.append(t)
        elif not isinstance(t, PerReplica) or t.count != len(group):
            got = f"{t.count} shares" if isinstance(t, PerReplica) else "one tensor"
            raise GraphError(f"argument {i} ({inputs[i]!r}) is split across {len(group)} "
                             f"replicas but the call gave {got}; pass every argument from "
                             "step.prefetch(dataset), or every one as a whole tensor")
        else:
            out += list(t.values)
    return out


def lazy_source(flat: Sequence[Any]) -> "Shares | None":
    """The iterators a call's lazy per-replica arguments read from, or None."""
    return next((t.source for t in flat if isinstance(t, PerReplica) and t.source is not None),
                None)


def batches_for(executor: Any, dataset: Any, args: Sequence[Any], buffer_size: int = 2
                ) -> Iterator[Any]:
    """``dataset``'s batches for ``executor``'s step (compiled on ``args``, its first batch),
    read where the step reads them: each data-parallel replica's share on its own device;
    with one replica (a pipeline, a placed step), each argument on the device of the op that
    reads it (a pipeline's inputs on its first stage, its labels on its last). A Horovod
    process, and a pipeline of several replicas, read the global batch on the input's device
    (``prefetch.to_device``)."""
    from tfplace.runtime.prefetch import input_device, reader_device, to_device
    names = executor.per_replica_inputs()
    plan = executor.plan
    horovod = plan.sync is not None and plan.sync.backend == "horovod"
    if len(args) == len(executor.captured.inputs) and not horovod and (
            names is not None or plan.pipeline is None or plan.num_replicas < 2):
        shapes = [a.shape for a in args]
        if names is not None:         # data parallel: each replica's share on its device
            devices = [d or group[0] for d, group in zip(executor.replica_input_devices(),
                                                          plan.replicas)]
            it = split_dataset(dataset, [len(g) > 1 for g in names], devices, shapes,
                               buffer_size)
        else:                         # one replica: each argument where it is read
            where = [reader_device(executor, i) for i in range(len(args))]
            devices = list(dict.fromkeys(where))
            columns = [[i for i, d in enumerate(where) if d == device] for device in devices]
            it = split_dataset(dataset, [False] * len(args), devices, shapes, buffer_size,
                               columns=columns)
        if it is not None:
            return it
    return to_device(dataset, input_device(executor), buffer_size)


def split_dataset(dataset: Any, split: Sequence[bool], devices: Sequence[str],
                  shapes: Sequence[Any], buffer_size: int = 2,
                  columns: Sequence[Sequence[int]] | None = None
                  ) -> Iterator[tuple[Any, ...]] | None:
    """Batches of ``dataset`` (elements: a tuple of the step's arguments, or one tensor) as
    tuples with a ``PerReplica`` for each argument ``split[i]``, replica r's share read and
    prefetched on ``devices[r]`` (``shapes``: the first batch's argument shapes); None when
    the dataset cannot move to the devices. With ``columns`` the devices are readers instead
    of replicas: ``devices[r]`` reads arguments ``columns[r]`` whole (``Shares``). With a
    known length (or an endless dataset) the step reads the shares itself (lazy
    ``PerReplica``s); otherwise they are read here, one step ahead of the caller, as tensors
    on the replicas' devices."""
    import tensorflow as tf
    from tfplace.runtime.prefetch import on_worker
    count = len(devices) if columns is None else 1
    single = not isinstance(dataset.element_spec, tuple)

    def share(r: int) -> Any:
        def rows(*element: Any) -> Any:
            out = tuple(_rows(t, r, count, shape[0]) if s else _whole(t, shape)
                        for t, s, shape in zip(element, split, shapes))
            if columns is not None:
                return tuple(out[i] for i in columns[r])
            return out[0] if single else out
        return dataset.map(rows)

    iterators = []
    for r, device in enumerate(devices):
        moved = on_worker(share(r), device, buffer_size)
        if moved is None:
            return None
        with tf.device(device):
            iterators.append(iter(moved))
    length = _length(dataset)
    specs = dataset.element_spec if columns is not None else share(0).element_spec
    specs = [specs] if single else list(specs)       # (a replica's share: its rows)
    source = Shares(iterators, devices, specs, split, shapes, columns)
    if length is None:              # the end must be asked for: read here, step by step
        return _zip(source, length)
    return _lazy(source, length)


def _lazy(source: Shares, length: int) -> Iterator[tuple[Any, ...]]:
    """``length`` batches (endless when negative) whose shares the step reads itself."""
    done = 0
    while length < 0 or done < length:
        done += 1
        yield tuple(PerReplica(source=source, index=i, serial=done - 1)
                    for i in range(len(source.split)))


def _rows(t: Any, r: int, count: int, rows: int | None) -> Any:
    """Replica r's rows of batch ``t``: the r-th of ``count`` equal slices along dim 0. A
    batch of another size than ``rows`` (the step's, e.g. a last, shorter batch) is an error
    when it is read, never a silently uneven or dropped share."""
    import tensorflow as tf
    if rows is not None:
        tf.debugging.assert_equal(
            tf.shape(t)[0], rows, message=f"tfplace prefetch: the step was compiled for "
            f"batches of {rows} rows ({count} replicas x {rows // count}), and this batch has "
            "another size; batch the dataset with drop_remainder=True, or call the step on the "
            "odd batch yourself")
    n = (rows if rows is not None else tf.shape(t)[0]) // count
    return t[r * n:(r + 1) * n]


def _whole(t: Any, shape: Any) -> Any:
    """``t``, checked to have the rows the step was compiled for (``shape``, the first
    batch's), when that is known: another size is an error when it is read."""
    import tensorflow as tf
    rows = shape[0] if shape.rank else None
    if rows is None:
        return t
    check = tf.debugging.assert_equal(
        tf.shape(t)[0], rows, message=f"tfplace prefetch: the step was compiled for batches "
        f"of {rows} rows, and this batch has another size; batch the dataset with "
        "drop_remainder=True, or call the step on the odd batch yourself")
    with tf.control_dependencies([check]):
        return tf.identity(t)


def _length(dataset: Any) -> int | None:
    """The number of batches, -1 for an endless dataset, None when TF does not know."""
    import tensorflow as tf
    n = int(dataset.cardinality())
    if n == int(tf.data.INFINITE_CARDINALITY):
        return -1
    return None if n < 0 else n


def _zip(source: Shares, length: int | None) -> Iterator[tuple[Any, ...]]:
    """Every replica's (reader's) next element, zipped. With a known length the end is
    counted; otherwise it is asked for as an optional (a remote IteratorGetNext past the end
    leaves its error pending in the eager executor)."""
    import tensorflow as tf
    done = 0
    while length is None or length < 0 or done < length:
        if length is None:
            got = [it.get_next_as_optional() for it in source.iterators]
            if not all(bool(g.has_value()) for g in got):
                return
            elements = [g.get_value() for g in got]
        else:
            elements = [next(it) for it in source.iterators]
        done += 1
        per = [tf.nest.flatten(e) for e in elements]
        yield tuple(PerReplica([source.pick(per, r, i) for r in range(source.count)])
                    if source.split[i] else source.pick(per, 0, i)
                    for i in range(len(source.split)))
