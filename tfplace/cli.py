"""The `tfplace` console script: parse arguments, call the core API, map errors to exit code 2."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from tfplace.cli_options import (CLUSTER_HELP, DEFAULT_PLACER, SPLITS_HELP, _batch_option,
                                  _bytes_arg, _check_placer, _micro_batch, _parse_task,
                                  _pipeline_options, _placer_help, _planned_replicas,
                                  _replica_micro_batch, _replicas_arg, _shard_batch, _source_options, _stages_arg,
                                  _sync_names, _sync_options, check_cluster_spec,
                                  resolve_cluster)
from tfplace.errors import BackendError, TfplaceError
from tfplace.sources import check_source
from tfplace.tf_startup import quiet_tensorflow_import

if TYPE_CHECKING:
    from tfplace.plan import Plan

__all__ = ["parse_args", "main", "resolve_cluster"]

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


def _check_source_first(args: argparse.Namespace) -> None:
    """Bad --cluster syntax, then a missing source, fail before TF loads (about 5 s) or
    workers start."""
    check_cluster_spec(args.cluster)
    check_source(args.source)


def _cmd_plan(args: argparse.Namespace) -> int:
    _check_placer(args.placer)                           # bad input fails before TF loads
    _check_source_first(args)
    if args.calibration:
        from tfplace.profile import load_calibration
        load_calibration(args.calibration)               # a bad file fails before any launch
    with resolve_cluster(args.cluster) as cluster:
        from tfplace.api import load_source, plan_captured
        pipeline = _pipeline_options(args)
        replicas = _planned_replicas(cluster, args.data_parallel, args.sync_backend, pipeline)
        calibration = None
        if args.calibration:                             # scales relative to the cluster's peak
            calibration = load_calibration(args.calibration,
                                           device_flops=cluster.devices[0].flops)
        if pipeline is not None and replicas > 1:        # one micro-batch of one replica
            from tfplace.pipeline_replicas import plan_pipeline_replicas
            opts = _source_options(args)
            opts["batch_size"] = _replica_micro_batch(args, replicas, pipeline["micro_batches"])
            captured = load_source(args.source, **opts)
            plan = plan_pipeline_replicas(captured, cluster, replicas=replicas, pipeline=pipeline,
                                          sync=args.sync, backend=args.sync_backend,
                                          fusion_bytes=args.fusion_bytes,
                                          calibration=calibration)
        elif pipeline is not None:                       # capture one micro-batch
            from tfplace.pipeline_parallel import plan_pipeline_step
            opts = _source_options(args)
            opts["batch_size"] = _micro_batch(args, pipeline["micro_batches"])
            captured = load_source(args.source, **opts)
            groups = None
            if args.splits:                              # splits within a stage: groups
                from tfplace.split_compose import stage_groups
                groups = stage_groups(cluster.names, pipeline["stages"])
            plan = plan_pipeline_step(captured, cluster, **pipeline, calibration=calibration,
                                      devices=groups, placer=args.placer)
        elif replicas == 1 and args.splits:            # memory checked as split; "auto"
            from tfplace.split_auto import plan_split_step
            captured = load_source(args.source, **_source_options(args))
            plan = plan_split_step(captured, cluster, args.splits, placer=args.placer,
                                   calibration=calibration)
        elif replicas == 1:
            captured = load_source(args.source, **_source_options(args))
            plan = plan_captured(captured, cluster, placer=args.placer, calibration=calibration)
        else:                                            # capture one replica's share
            from tfplace.data_parallel import plan_data_parallel
            opts = _source_options(args)
            opts["batch_size"] = _shard_batch(args, replicas)
            captured = load_source(args.source, **opts)
            plan = plan_data_parallel(captured, cluster, replicas=replicas, placer=args.placer,
                                      sync=args.sync, backend=args.sync_backend,
                                      fusion_bytes=args.fusion_bytes, calibration=calibration)
        if args.splits and plan.splits is None:          # over a replica's or a stage's group
            from tfplace.split_parallel import plan_splits
            plan = plan_splits(captured, plan, args.splits)
    print(plan.summary())
    if args.out:
        plan.save(args.out)
        print(f"\nplan written to {args.out}")
    return EXIT_OK


def _cmd_rewrite(args: argparse.Namespace) -> int:
    from tfplace.planio import is_text_path, load_plan
    plan = load_plan(args.plan)
    check_source(args.source)                           # before TF loads (about 5 s)
    _check_plan_matches(args, plan)
    from tfplace.api import load_source, rewrite_captured
    opts = _source_options(args)
    if plan.pipeline is not None and plan.num_replicas > 1:     # ... one replica's micro-batch
        opts["batch_size"] = _replica_micro_batch(args, plan.num_replicas,
                                                  plan.pipeline.micro_batches,
                                                  plan.pipeline.global_batch)
    elif plan.num_replicas > 1:                          # the plan was made on one replica's share
        opts["batch_size"] = _shard_batch(args, plan.num_replicas)
    elif plan.pipeline is not None:                      # ... or on one micro-batch
        opts["batch_size"] = _micro_batch(args, plan.pipeline.micro_batches,
                                          args.batch_size or plan.pipeline.global_batch)
    captured = load_source(args.source, **opts)
    graph_def = rewrite_captured(captured, plan)
    if is_text_path(args.out):
        from google.protobuf import text_format
        Path(args.out).write_text(text_format.MessageToString(graph_def))
    else:
        Path(args.out).write_bytes(graph_def.SerializeToString())
    print(f"rewritten GraphDef ({len(graph_def.node)} nodes) written to {args.out}")
    return EXIT_OK


def _check_plan_matches(args: argparse.Namespace, plan: "Plan") -> None:
    """Data-parallel flags given to `rewrite` must agree with the plan, which decided them."""
    from tfplace.errors import PlanError, bullets
    problems = []
    if args.data_parallel is not None:
        want = _planned_replicas(plan.cluster, args.data_parallel,
                                 plan.sync.backend if plan.sync else "tf",
                                 {"stages": plan.pipeline.num_stages} if plan.pipeline else None)
        if want != plan.num_replicas:
            problems.append(f"--data-parallel {args.data_parallel} ({want} replicas) but the plan "
                            f"has {plan.num_replicas}")
    sync = plan.sync
    given = {"--sync": (args.sync, sync.method if sync else None, "auto"),
             "--sync-backend": (args.sync_backend, sync.backend if sync else None, None),
             "--fusion-bytes": (args.fusion_bytes, sync.fusion_bytes if sync else None, None)}
    for flag, (value, planned, free) in given.items():
        if value is not None and value != free and value != planned:
            problems.append(f"{flag} {value} but the plan has {planned or 'no data parallelism'}")
    if problems:
        raise PlanError(bullets(f"the options do not match plan {args.plan!r}; re-plan with "
                                f"them (tfplace plan ... --out {args.plan}) or drop them:",
                                problems))


def _cmd_run(args: argparse.Namespace) -> int:
    _check_placer(args.placer)
    _check_source_first(args)
    with resolve_cluster(args.cluster) as cluster:
        if not cluster.is_remote:                        # logical devices exist only if made first
            from tfplace.runtime.devices import configure_local_devices
            configure_local_devices(len(cluster.devices))
        from tfplace.runner import run_source
        losses = run_source(args.source, cluster, placer=args.placer, steps=args.steps,
                            trace=args.trace, data_parallel=args.data_parallel,
                            pipeline=_pipeline_options(args), splits=args.splits or None,
                            steps_per_execution=args.steps_per_execution,
                            input_from=args.input, **_sync_options(args), **_batch_option(args))
    for step, loss in enumerate(losses):
        print(f"step {step}: loss {float(loss):.6f}")
    if args.trace:
        import json
        from tfplace.runtime.trace import format_overlap
        with open(args.trace) as f:
            report = json.load(f).get("otherData", {}).get("tfplace_overlap")
        print(f"trace written to {args.trace}")
        if report:
            print(format_overlap(report))
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    job, index = _parse_task(args.task)
    cluster = resolve_cluster(args.cluster)
    from tfplace.runtime.worker import serve_task
    serve_task(cluster, job, index)
    return EXIT_OK


def _cmd_profile(args: argparse.Namespace) -> int:
    import yaml

    try:
        from tfplace.profile import calibrate
    except ModuleNotFoundError as e:
        if e.name != "tfplace.profile":
            raise
        raise BackendError("`tfplace profile` is not available in this build "
                           "(tfplace/profile.py is missing); reinstall tfplace") from None
    text = yaml.safe_dump(calibrate(device=args.device, repeats=args.repeats), sort_keys=True)
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")
    return EXIT_OK


def _cmd_placers(args: argparse.Namespace) -> int:
    from tfplace.placers import PLACER_NAMES
    for name in PLACER_NAMES:
        print(name)
    return EXIT_OK


# -- parsing ---------------------------------------------------------------------------------
def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    parser = argparse.ArgumentParser(
        prog="tfplace", parents=[common],
        description="Plan device placement for a TensorFlow training step, rewrite it, run it.")
    from tfplace import __version__
    parser.add_argument("--version", action="version", version=f"tfplace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help: str
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    sync_choices, backends = _sync_names()

    def dp_options(p: argparse.ArgumentParser, *, from_plan: bool = False) -> None:
        """--data-parallel, --sync, --sync-backend, --fusion-bytes (rewrite: checked vs plan)."""
        g = p.add_argument_group("data parallelism" + (" (must match the plan)" if from_plan
                                                       else ""))
        g.add_argument("--data-parallel", type=_replicas_arg, metavar="N|auto",
                       default=None if from_plan else 1,
                       help="synchronous replicas over the cluster's devices; --batch-size is "
                       "the global batch, split evenly (default 1; auto: one per device)")
        g.add_argument("--sync", choices=sync_choices, default=None if from_plan else "auto",
                       help="gradient sync method (default auto: the cost model picks)")
        g.add_argument("--sync-backend", choices=backends, default=None if from_plan else "tf",
                       help="gradient sync ops (default tf: TF collective ops; horovod: one "
                       "replica per process, launched by horovodrun --gloo -np N)")
        g.add_argument("--fusion-bytes", type=_bytes_arg, metavar="N",
                       help="gradient bucket size in bytes (default: chosen by the planner)")

    def pipeline_flags(p: argparse.ArgumentParser) -> None:
        """--pipeline-stages, --micro-batches, --schedule, --stage-boundaries,
        --devices-per-stage."""
        from tfplace.pipeline.schedules import SCHEDULE_NAMES
        g = p.add_argument_group("pipeline parallelism")
        g.add_argument("--pipeline-stages", type=_stages_arg, metavar="K|auto",
                       help="cut the step into K pipeline stages, one per device (auto: the "
                       "planner picks K)")
        g.add_argument("--micro-batches", type=int, default=1, metavar="M",
                       help="micro-batches per global batch (default 1; must divide it)")
        g.add_argument("--schedule", choices=SCHEDULE_NAMES, default="1f1b",
                       help="pipeline schedule (default 1f1b)")
        g.add_argument("--stage-boundaries", metavar="NAME,...",
                       help="layers or ops that must start a stage, comma-separated")
        g.add_argument("--devices-per-stage", type=int, default=1, metavar="D",
                       help="devices of each stage (default 1); --placer places a stage's ops "
                       "over its D devices")

    def source_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--signature", help="SavedModel signature to capture")
        p.add_argument("--batch-size", type=int, help="batch size to capture the step with")

    p = add("plan", _cmd_plan, "plan placement for SOURCE on a cluster and print the summary")
    p.add_argument("source", metavar="SOURCE",
                   help="a GraphDef (.pb/.pbtxt), a SavedModel dir or SCRIPT.py:NAME")
    p.add_argument("--cluster", required=True, help=CLUSTER_HELP)
    p.add_argument("--placer", default=DEFAULT_PLACER, help=_placer_help())
    p.add_argument("--out", help="write the plan here (.pbtxt is text, anything else binary)")
    p.add_argument("--calibration", metavar="FILE",
                   help="cost-model calibration written by `tfplace profile --out FILE`")
    source_options(p)
    dp_options(p)
    pipeline_flags(p)
    p.add_argument("--splits", metavar="SPEC", help=SPLITS_HELP)

    p = add("rewrite", _cmd_rewrite, "apply a saved plan to SOURCE and write the placed GraphDef")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--plan", required=True, help="a plan written by `tfplace plan --out`")
    p.add_argument("--out", required=True, help="output GraphDef (.pbtxt is text, else binary)")
    source_options(p)
    dp_options(p, from_plan=True)

    p = add("run", _cmd_run, "train SCRIPT.py:NAME for a few steps on a cluster")
    p.add_argument("source", metavar="SCRIPT.py:NAME")
    p.add_argument("--cluster", required=True, help=CLUSTER_HELP)
    p.add_argument("--placer", default=DEFAULT_PLACER, help=_placer_help())
    p.add_argument("--steps", type=int, default=5, help="training steps (default 5)")
    p.add_argument("--steps-per-execution", type=int, default=1, metavar="K",
                   help="steps sent to the workers in one call: one dispatch per K steps "
                        "(default 1)")
    p.add_argument("--batch-size", type=int, help="(global) batch size")
    p.add_argument("--input", choices=["client", "worker"], default="client",
                   help="client: this process passes the batch at every step (default); "
                        "worker: each replica reads its share of it on its own device, inside "
                        "the step (as step.prefetch)")
    p.add_argument("--trace", help="write an op-level Chrome trace (JSON) of the steps here and "
                   "print the measured overlap of gradient sync with backward")
    dp_options(p)
    pipeline_flags(p)
    p.add_argument("--splits", metavar="SPEC", help=SPLITS_HELP)

    p = add("serve", _cmd_serve, "run one task of a multi-host cluster (blocks)")
    p.add_argument("--cluster", required=True, help="a cluster YAML with tasks, or tf_config")
    p.add_argument("--task", required=True, help="JOB:INDEX of this process, e.g. worker:0")

    p = add("profile", _cmd_profile, "measure this machine and print a calibration YAML")
    p.add_argument("--device", help="TF device to measure (default: the first CPU)")
    p.add_argument("--out", help="also write the calibration YAML here")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per figure; the median is reported (default 5)")

    add("placers", _cmd_placers, "list the placement algorithms")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = _build_parser().parse_args(argv)
    if not hasattr(args, "debug"):
        args.debug = False
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 1 internal error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # TF's C++ banner is not our output
    quiet_tensorflow_import()                            # nor its lines logged while loading
    try:
        args = parse_args(argv)
    except SystemExit as e:                      # --help, --version, or argparse's usage error
        return e.code if isinstance(e.code, int) else EXIT_USER
    try:
        return int(args.handler(args))
    except TfplaceError as e:
        if args.debug:
            traceback.print_exc()
        print(f"tfplace: error: {e}", file=sys.stderr)
        return EXIT_USER
    except OSError as e:                         # a missing or unreadable file named on the line
        if args.debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"tfplace: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("tfplace: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last resort keeps the one-line contract
        if args.debug:
            raise
        print(f"tfplace: internal error: {type(e).__name__}: {e} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
