"""Pipeline planning, pure Python: schedules, the queue deadlock check, stage partition, the plan.

    units_from_dag(dag)            layers of a captured step, with FLOPs, params, activations
    plan_pipeline(dag, cluster, stages=4, micro_batches=8, schedule="1f1b") -> PipelinePlan
    plan.orders()                  each stage's ("F", m) / ("B", m) ops, what its loop runs
    plan.timeline(), plan.grid()   the clock view and its ASCII grid

The rewrite and the runtime consume a PipelinePlan; nothing here imports TensorFlow.
"""
from tfplace.pipeline.grid import bubble_fraction, clock_cycles, clock_grid, schedule_grid
from tfplace.pipeline.partition import balance, balance_costs, check_stage_count, split_batch
from tfplace.pipeline.planner import DEFAULT_CAPACITY, plan_pipeline, resolve_boundaries
from tfplace.pipeline.schedules import (SCHEDULE_NAMES, SCHEDULES, Op, get_schedule, register,
                                        stage_orders, stash_peaks)
from tfplace.pipeline.units import Unit, layer_names_of, unit_of_ops, units_from_dag
from tfplace.pipeline.value import (BACKWARD, FORWARD, PipelinePlan, PipelineQueue,
                                    PipelineStage)
from tfplace.pipeline.waits import (Timeline, check_deadlock, find_deadlock, min_capacity,
                                    simulate)

__all__ = ["Op", "SCHEDULES", "SCHEDULE_NAMES", "register", "get_schedule", "stage_orders",
           "stash_peaks", "Timeline", "simulate", "find_deadlock", "check_deadlock",
           "min_capacity", "clock_grid", "clock_cycles", "schedule_grid", "bubble_fraction",
           "Unit", "units_from_dag", "unit_of_ops", "layer_names_of", "balance", "balance_costs",
           "split_batch", "check_stage_count", "PipelinePlan", "PipelineStage", "PipelineQueue",
           "FORWARD", "BACKWARD", "plan_pipeline", "resolve_boundaries", "DEFAULT_CAPACITY"]
