"""Pipeline schedules: exact per-stage orders, the registry, stash peaks, the clock grid."""
from __future__ import annotations

import pytest

from tfplace.errors import PlanError
from tfplace.pipeline.grid import bubble_fraction, clock_cycles, schedule_grid
from tfplace.pipeline.schedules import (SCHEDULE_NAMES, Op, get_schedule, stage_orders,
                                        stash_peaks)
from tfplace.pipeline.waits import simulate


def orders(name: str, k: int, m: int) -> list[str]:
    return [" ".join(map(str, o)) for o in stage_orders(name, k, m)]


def test_registry_names_and_unknown() -> None:
    assert SCHEDULE_NAMES == ("1f1b", "gpipe")
    with pytest.raises(PlanError, match=r"unknown pipeline schedule 'pipedream' \(valid: 1f1b, gpipe\)"):
        get_schedule("pipedream")


def test_ops_compare_as_tuples() -> None:
    assert stage_orders("gpipe", 1, 2) == ((("F", 0), ("F", 1), ("B", 1), ("B", 0)),)
    assert str(Op("B", 12)) == "B12"


@pytest.mark.parametrize("k, m, want", [
    (1, 1, ["F0 B0"]),
    (2, 1, ["F0 B0", "F0 B0"]),
    (3, 2, ["F0 F1 B1 B0"] * 3),
    (2, 4, ["F0 F1 F2 F3 B3 B2 B1 B0"] * 2),
])
def test_gpipe_orders(k: int, m: int, want: list[str]) -> None:
    assert orders("gpipe", k, m) == want


@pytest.mark.parametrize("k, m, want", [
    (1, 3, ["F0 B0 F1 B1 F2 B2"]),
    (2, 1, ["F0 B0", "F0 B0"]),
    (2, 3, ["F0 F1 B0 F2 B1 B2", "F0 B0 F1 B1 F2 B2"]),
    (3, 4, ["F0 F1 F2 B0 F3 B1 B2 B3", "F0 F1 B0 F2 B1 F3 B2 B3", "F0 B0 F1 B1 F2 B2 F3 B3"]),
    (4, 2, ["F0 F1 B0 B1", "F0 F1 B0 B1", "F0 F1 B0 B1", "F0 B0 F1 B1"]),     # M < K
    (4, 1, ["F0 B0"] * 4),
    (4, 8, ["F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7",
            "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 B6 B7",
            "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7",
            "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7"]),
])
def test_1f1b_orders(k: int, m: int, want: list[str]) -> None:
    assert orders("1f1b", k, m) == want


@pytest.mark.parametrize("k, m, gpipe, ofob", [
    (4, 8, (8, 8, 8, 8), (4, 3, 2, 1)),
    (4, 2, (2, 2, 2, 2), (2, 2, 2, 1)),
    (3, 1, (1, 1, 1), (1, 1, 1)),
])
def test_stash_peaks(k: int, m: int, gpipe: tuple, ofob: tuple) -> None:
    assert stash_peaks(stage_orders("gpipe", k, m)) == gpipe
    assert stash_peaks(stage_orders("1f1b", k, m)) == ofob


@pytest.mark.parametrize("k, m", [(0, 4), (2, 0), (2, 1.5), (True, 2)])
def test_bad_shapes(k, m) -> None:
    with pytest.raises(PlanError, match="must be an int >= 1"):
        stage_orders("gpipe", k, m)


def test_gpipe_grid_string() -> None:
    assert schedule_grid(simulate("gpipe", 3, 4)) == "\n".join([
        "tick  0              5              10",
        "s0    F0 F1 F2 F3 .  .  .  .  B3 B2 B1 B0",
        "s1    .  F0 F1 F2 F3 .  .  B3 B2 B1 B0 .",
        "s2    .  .  F0 F1 F2 F3 B3 B2 B1 B0 .  ."])


def test_1f1b_grid_string_two_digit_cells() -> None:
    assert schedule_grid(simulate("1f1b", 2, 11)) == "\n".join([
        "tick  0                   5                   10                  15                  20",
        "s0    F0  F1  .   B0  F2  B1  F3  B2  F4  B3  F5  B4  F6  B5  F7  B6  F8  B7  F9  B8  F10 B9  .   B10",
        "s1    .   F0  B0  F1  B1  F2  B2  F3  B3  F4  B4  F5  B5  F6  B6  F7  B7  F8  B8  F9  B9  F10 B10 ."])


def test_clock_cycles_and_bubble() -> None:
    t = simulate("gpipe", 2, 2)
    assert list(clock_cycles(t)) == [((0, ("F", 0)),), ((0, ("F", 1)), (1, ("F", 0))),
                                     ((1, ("F", 1)),), ((1, ("B", 1)),),
                                     ((0, ("B", 1)), (1, ("B", 0))), ((0, ("B", 0)),)]
    # GPipe at one tick per op: (K-1)/(M+K-1) idle on every stage.
    assert bubble_fraction(simulate("gpipe", 4, 8)) == pytest.approx((3 / 11,) * 4)
