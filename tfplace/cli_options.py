"""Command-line option parsing for `tfplace`: cluster specs, batch, sync, pipeline and split
options, each turned into the keyword arguments the core API takes."""
from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any, TypedDict

from tfplace.errors import ClusterError

if TYPE_CHECKING:
    from tfplace.api import PipelineOptions, SyncOptions
    from tfplace.cluster import Cluster

__all__ = ["resolve_cluster", "DEFAULT_PLACER", "DEFAULT_BATCH", "CLUSTER_HELP", "SPLITS_HELP"]

DEFAULT_PLACER = "m_etf"
CLUSTER_HELP = "a cluster YAML file, local:N, launch:WxD (spawn W workers x D devices) or tf_config"


SPLITS_HELP = ('model-parallel splits, e.g. "dense_1:S(1);dense_2:S(0)" (a layer or variable '
               'name and S(axis)), or "auto" (split what does not fit in memory, or what the '
               'cost model finds faster); the split runs on the most devices dividing every axis')


def _placer_help() -> str:
    try:
        from tfplace.placers import PLACER_NAMES
        names = ", ".join(PLACER_NAMES)
    except ImportError:
        names = "see `tfplace placers`"
    return f"placement algorithm (default {DEFAULT_PLACER}; one of: {names})"


def _shorthand(spec: str) -> tuple[int, int] | None:
    """'local:N' -> (N, 0), 'launch:WxD' -> (W, D); None for other specs; ClusterError when
    malformed."""
    if spec.startswith("local:"):
        m = re.fullmatch(r"local:(\d+)", spec)
        if not m or int(m.group(1)) < 1:
            raise ClusterError(f"--cluster {spec!r}: expected local:N with N >= 1, e.g. local:4")
        return int(m.group(1)), 0
    if spec.startswith("launch:"):
        m = re.fullmatch(r"launch:(\d+)x(\d+)", spec)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise ClusterError(f"--cluster {spec!r}: expected launch:WxD (W workers with D devices "
                               "each, both >= 1), e.g. launch:2x2")
        return int(m.group(1)), int(m.group(2))
    return None


def check_cluster_spec(spec: str) -> None:
    """ClusterError for a malformed --cluster, without making the cluster when that would
    load TF or start workers (local:N, launch:WxD); a file or TF_CONFIG is read."""
    if _shorthand(spec) is None:
        resolve_cluster(spec)


def resolve_cluster(spec: str) -> "Cluster":
    """'local:N' | 'launch:WxD' | 'tf_config' | a YAML path -> Cluster."""
    from tfplace.cluster import Cluster

    if spec == "tf_config":
        return Cluster.from_tf_config()
    short = _shorthand(spec)
    if short is not None and spec.startswith("local:"):
        return Cluster.local(short[0])
    if short is not None:
        return Cluster.launch_local(workers=short[0], devices_per_worker=short[1])
    return Cluster.from_file(spec)


class _BatchOption(TypedDict, total=False):
    batch_size: int


class _SourceOptions(_BatchOption, total=False):
    signature: str


def _source_options(args: argparse.Namespace) -> _SourceOptions:
    """Only the options given on the line, so the core API keeps its own defaults."""
    opts: _SourceOptions = {}
    signature = getattr(args, "signature", None)
    if signature is not None:
        opts["signature"] = signature
    if args.batch_size is not None:
        opts["batch_size"] = args.batch_size
    return opts


def _batch_option(args: argparse.Namespace) -> _BatchOption:
    """`run` has no --signature: only --batch-size, when given."""
    return {} if args.batch_size is None else {"batch_size": args.batch_size}


DEFAULT_BATCH = 32                                      # api.load_source's default


def _replicas_arg(text: str) -> int | str:
    """--data-parallel: N >= 1 or 'auto' (checked against the cluster later)."""
    if text == "auto":
        return text
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a replica count: pass N >= 1 or auto")
    return int(text)


def _bytes_arg(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count >= 1")
    return int(text)


def _sync_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from tfplace.data_parallel import BACKENDS
    from tfplace.sync_cost import SYNC_CHOICES
    return tuple(SYNC_CHOICES), tuple(BACKENDS)


def _sync_options(args: argparse.Namespace) -> SyncOptions:
    return {"sync": args.sync, "sync_backend": args.sync_backend,
            "fusion_bytes": args.fusion_bytes}


def _planned_replicas(cluster: "Cluster", replicas: int | str, backend: str,
                      pipeline: Any = None) -> int:
    """Replicas to plan for: groups of the cluster's devices, or Horovod processes (each on
    the whole cluster; an int needs no running Horovod, so plans can be made offline); with
    pipeline options, whole pipelines (``pipeline_replicas.replica_count``)."""
    if pipeline is not None and replicas != 1:
        from tfplace.pipeline_replicas import replica_count as pipelines
        return pipelines(cluster, replicas, pipeline["stages"], backend)
    if backend == "horovod":
        from tfplace.data_parallel import horovod_groups
        return len(horovod_groups(cluster, replicas))
    from tfplace.replicas import replica_count
    return replica_count(cluster, replicas)


def _shard_batch(args: argparse.Namespace, replicas: int) -> int:
    """One replica's share of the global --batch-size (PlanError when it does not divide)."""
    from tfplace.replicas import split_batch
    return split_batch(args.batch_size or DEFAULT_BATCH, replicas)[0]


def _replica_micro_batch(args: argparse.Namespace, replicas: int, micro_batches: int,
                        batch: int | None = None) -> int:
    """One micro-batch of one replica's share of the global --batch-size (PlanError naming
    R, M and the batch when it does not split)."""
    from tfplace.pipeline_replicas import check_batch
    batch = batch or args.batch_size or DEFAULT_BATCH
    check_batch(batch, replicas, micro_batches)
    return batch // (replicas * micro_batches)


def _stages_arg(text: str) -> int | str:
    """--pipeline-stages: K >= 1 or 'auto'."""
    if text == "auto":
        return text
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a stage count: pass K >= 1 or auto")
    return int(text)


def _pipeline_options(args: argparse.Namespace) -> "PipelineOptions | None":
    """The pipeline flags as the core API's options (None without --pipeline-stages)."""
    from tfplace.api import pipeline_options
    bounds = args.stage_boundaries.split(",") if args.stage_boundaries else None
    return pipeline_options(stages=args.pipeline_stages, micro_batches=args.micro_batches,
                            schedule=args.schedule, stage_boundaries=bounds,
                            devices_per_stage=getattr(args, "devices_per_stage", 1))


def _micro_batch(args: argparse.Namespace, micro_batches: int, batch: int | None = None) -> int:
    """One micro-batch of the global --batch-size (PlanError with the sizes that work)."""
    from tfplace.pipeline.partition import split_batch
    return split_batch(batch or args.batch_size or DEFAULT_BATCH, micro_batches)


def _parse_task(spec: str) -> tuple[str, int]:
    m = re.fullmatch(r"([A-Za-z_][\w-]*):(\d+)", spec)
    if not m:
        raise ClusterError(f"--task {spec!r}: expected JOB:INDEX, e.g. worker:0")
    return m.group(1), int(m.group(2))


# -- subcommands -----------------------------------------------------------------------------
def _check_placer(name: str) -> None:
    from tfplace.placers import get_placer
    get_placer(name)                                     # PlanError listing the valid names
