"""tfplace.splits.memory_fit: splits="auto" for memory, by exact value."""
from __future__ import annotations

import pytest

from tfplace.errors import PlanError
from tfplace.splits import MemorySplit, S, VariableSize, fit_memory
from tfplace.splits.memory_fit import split_axis

CAP = {"d0": 1000, "d1": 1000, "d2": 1000}


def test_a_plan_that_fits_splits_nothing() -> None:
    fit = fit_memory([VariableSize("w", (8, 64), 800, "d0")], CAP, {"d0": 900, "d1": 0})
    assert fit.splits == ()
    assert fit.usage == (("d0", 900), ("d1", 0), ("d2", 0))


def test_the_largest_variable_splits_over_the_fewest_devices_that_fit() -> None:
    variables = [VariableSize("bias", (16,), 100, "d0"), VariableSize("w", (8, 64), 800, "d0")]
    fit = fit_memory(variables, CAP, {"d0": 1300, "d1": 200, "d2": 900})
    assert fit.splits == (MemorySplit("w", S(1), ("d0", "d1"), 400),)
    assert fit.usage == (("d0", 900), ("d1", 600), ("d2", 900))
    assert fit.layouts() == {"w": S(1)}


def test_more_ways_when_two_are_not_enough() -> None:
    fit = fit_memory([VariableSize("w", (6, 10), 900, "d0")], CAP,
                     {"d0": 1500, "d1": 100, "d2": 0})
    assert fit.splits == (MemorySplit("w", S(0), ("d0", "d2", "d1"), 300),)
    assert fit.usage == (("d0", 900), ("d1", 400), ("d2", 300))
    with pytest.raises(PlanError) as e:
        fit_memory([VariableSize("w", (6, 10), 900, "d0")], CAP,
                   {"d0": 1500, "d1": 100, "d2": 0}, max_ways=2)
    assert str(e.value) == (
        "the variables do not fit in memory even split across the devices:\n"
        "  - d0: needs 1050 bytes of 1000 (50 over)\n"
        "  - d1: needs 100 bytes of 1000\n"
        "  - d2: needs 450 bytes of 1000\n"
        "raise the memory caps in the cluster YAML, add devices, or shrink the model or the batch")


def test_several_devices_over_capacity() -> None:
    variables = [VariableSize("a", (4, 100), 1600, "d0"), VariableSize("b", (4, 50), 800, "d1"),
                 VariableSize("c", (2, 2), 16, "d1")]
    fit = fit_memory(variables, {"d0": 1000, "d1": 1000, "d2": 2000},
                     {"d0": 1700, "d1": 1100, "d2": 0})
    assert fit.splits == (MemorySplit("a", S(1), ("d0", "d2"), 800),
                          MemorySplit("b", S(1), ("d1", "d2"), 400))
    assert fit.usage == (("d0", 900), ("d1", 700), ("d2", 1200))


def test_unsplittable_or_too_large_is_a_plan_error_with_every_device() -> None:
    with pytest.raises(PlanError) as e:
        fit_memory([VariableSize("odd", (7,), 28, "d0")], {"d0": 20, "d1": 100},
                   {"d0": 40, "d1": 0})
    assert str(e.value).splitlines()[1:3] == ["  - d0: needs 40 bytes of 20 (20 over)",
                                              "  - d1: needs 0 bytes of 100"]
    with pytest.raises(PlanError) as e:
        fit_memory([VariableSize("w", (4, 4), 64, "d0")], {"d0": 10, "d1": 40},
                   {"d0": 80, "d1": 0})
    assert str(e.value).splitlines()[1:3] == ["  - d0: needs 48 bytes of 10 (38 over)",
                                              "  - d1: needs 32 bytes of 40"]


def test_devices_without_capacity() -> None:
    with pytest.raises(PlanError, match=r"devices \['d9'\] have no capacity or are not in the "
                                        r"group \['d0'\]"):
        fit_memory([VariableSize("w", (4,), 16, "d9")], {"d0": 10}, {})


def test_split_axis() -> None:
    assert split_axis((8, 64), 2) == 1
    assert split_axis((6, 10), 3) == 0
    assert split_axis((16, 16), 4) == 0
    assert split_axis((7, 5), 2) is None
    assert split_axis((), 2) is None
