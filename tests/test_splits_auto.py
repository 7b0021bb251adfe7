"""splits="auto" decisions and the split plan's memory, by exact value (pure, no TensorFlow)."""
from __future__ import annotations

from tfplace.analysis import OpDag
from tfplace.cluster import Cluster
from tfplace.splits import B, S, SplitPlan, VariableSize
from tfplace.splits.auto import AutoChoice, SpeedCandidate, choose_for_speed, speed_choice
from tfplace.splits.memory_fit import split_order
from tfplace.splits.peaks import shard_params, split_peaks
from tfplace.splits.splitplan import BoxingStep, SplitOp, VariableShard

MS = 2.0 ** -10                   # powers of two: every figure below is exact in floating point


def test_speed_split_when_the_compute_saved_beats_the_boxing() -> None:
    c = SpeedCandidate("w", S(1), 4, 4 * MS, 2, 1024)
    a = speed_choice(c, bandwidth=2.0 ** 20, latency=2.0 ** -17)
    assert a == AutoChoice("w", S(1), 4, "speed", 3 * MS, 2.0 ** -16 + MS, True)
    assert a.describe() == ("w S(1) over 4: split (saves 2929.7 us of compute, boxing costs "
                            "991.8 us)")


def test_speed_keeps_whole_when_the_boxing_costs_as_much_or_more() -> None:
    c = SpeedCandidate("w", S(0), 2, 2 * MS, 1, 2 ** 10)
    tie = speed_choice(c, bandwidth=2.0 ** 20, latency=0.0)        # saves MS, boxing MS
    assert (tie.saved_seconds, tie.boxing_seconds, tie.chosen) == (MS, MS, False)
    one_way = speed_choice(SpeedCandidate("w", S(0), 1, 8 * MS, 0, 0), bandwidth=1.0,
                           latency=0.0)
    assert (one_way.saved_seconds, one_way.chosen) == (0.0, False)


def test_only_the_best_gain_is_chosen() -> None:
    cands = [SpeedCandidate("small", S(1), 2, 4 * MS, 0, 0),           # gain 2 MS
             SpeedCandidate("big", S(1), 2, 8 * MS, 0, 0),             # gain 4 MS
             SpeedCandidate("slow", S(0), 2, 2 * MS, 1, 2 ** 20)]      # gain MS - 1 s
    got = choose_for_speed(cands, bandwidth=2.0 ** 20, latency=0.0)
    assert [(a.variable, a.chosen) for a in got] == [("big", True), ("small", False),
                                                     ("slow", False)]
    assert got[1].saved_seconds == 2 * MS and got[2].boxing_seconds == 1.0


def test_split_order_largest_first_on_the_widest_dividing_axis() -> None:
    sizes = [VariableSize("bias", (128,), 1536, ""), VariableSize("k", (64, 128), 98304, ""),
             VariableSize("odd", (7, 5), 420, ""), VariableSize("head", (6, 4), 288, "")]
    assert split_order(sizes, 4) == [("k", S(1)), ("bias", S(0)), ("head", S(1))]
    assert split_order(sizes, 3) == [("k", S(1)), ("bias", S(0)), ("head", S(0))]   # k: 2 ways


def _dag() -> OpDag:
    return OpDag.from_records([
        dict(name="w", op="VarHandleOp", out_bytes=0, param_bytes=800),
        dict(name="x", op="Placeholder", out_bytes=64),
        dict(name="mm", op="MatMul", inputs=["x", "w"], out_bytes=128),
        dict(name="loss", op="Sum", inputs=["mm"], out_bytes=4),
    ])


def test_split_peaks_shards_split_activations_and_boxing() -> None:
    c = Cluster.local(2, configure=False)
    d0, d1 = c.names
    plan = SplitPlan(devices=(d0, d1),
                     ops=(SplitOp("mm", "MatMul", (B, S(1)), (S(1),)),),
                     boxing=(BoxingStep("mm:0", S(1), B, "all_gather", 64, 128, ("loss",)),),
                     variables=(VariableShard("w", "w", S(1), (d0, d1), ((4, 10), (4, 10))),))
    assert shard_params(_dag(), plan) == {d0: 400, d1: 400}
    # d0: x 64 live, then mm's half (64) and its gathered copy (128) -> 256 at mm
    # d1: mm's half and the gathered copy only -> 192
    assert split_peaks(_dag(), {n: d0 for n in ("w", "x", "mm", "loss")}, c, plan) == {
        d0: (400, 656), d1: (400, 592)}
    whole = split_peaks(_dag(), {n: d0 for n in ("w", "x", "mm", "loss")}, c,
                        SplitPlan(devices=(d0, d1)))
    assert whole == {d0: (800, 992), d1: (0, 0)}


def test_auto_choices_round_trip_and_show_in_the_summary() -> None:
    choices = (AutoChoice("dense/kernel", S(1), 4, "speed", 3 * MS, MS, False),)
    plan = SplitPlan(devices=(), auto=choices)
    assert plan.is_empty
    assert SplitPlan.from_bytes(plan.to_bytes()) == plan
    assert plan.summary().splitlines() == [
        'splits="auto": no split (none saves more than its boxing costs)',
        "  speed   dense/kernel S(1) over 4: kept whole (saves 2929.7 us of compute, boxing "
        "costs 976.6 us)"]
    assert SplitPlan(devices=()).summary() == (
        'splits="auto": no split (no variable splits over the devices)')
