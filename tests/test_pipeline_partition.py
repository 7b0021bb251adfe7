"""Stage partition: exact min-max splits, deterministic ties, forced starts, memory fits, batch split."""
from __future__ import annotations

import pytest

from tfplace.errors import PlanError
from tfplace.pipeline.partition import balance, balance_costs, check_stage_count, split_batch


@pytest.mark.parametrize("costs, k, want", [
    ([1, 2, 3, 4, 5, 6, 7, 8, 9], 3, (0, 5, 7)),     # Skiena's example: 15 | 13 | 17
    ([1, 1, 1, 1, 1, 1, 1, 1, 1], 3, (0, 3, 6)),
    ([9, 1, 1, 1], 2, (0, 1)),                        # a heavy head stands alone
    ([1, 1, 1, 9], 2, (0, 3)),
    ([5, 5, 5, 5], 1, (0,)),
    ([3, 1, 2], 3, (0, 1, 2)),                         # one unit per stage
])
def test_exact_min_max(costs: list[float], k: int, want: tuple[int, ...]) -> None:
    assert balance_costs(costs, k) == want


@pytest.mark.parametrize("costs, k, want", [
    ([1, 1, 1, 1], 3, (0, 1, 2)),             # max 2 either way: the last stage takes the pair
    ([2, 2, 2], 2, (0, 1)),                   # 2|4 vs 4|2: the earlier stage gets less
    ([1, 3, 1, 1, 1, 1], 2, (0, 2)),          # 4|4
])
def test_ties_give_earlier_stages_less(costs: list[float], k: int, want: tuple[int, ...]) -> None:
    assert balance_costs(costs, k) == want


def test_forced_starts() -> None:
    # unforced optimum is (0, 5, 7) with max 17; forcing a stage at unit 1 costs 24
    assert balance_costs([1, 2, 3, 4, 5, 6, 7, 8, 9], 3, starts={1}) == (0, 1, 6)
    assert balance_costs([1, 2, 3, 4, 5, 6, 7, 8, 9], 3, starts={0, 5}) == (0, 5, 7)
    assert balance_costs([1, 1, 1, 1], 2, starts={3}) == (0, 3)
    with pytest.raises(PlanError, match=r"cannot split 4 units into 2 stages with stage starts "
                                        r"at \(1, 3\)"):
        balance_costs([1, 1, 1, 1], 2, starts={1, 3})


def test_fits_and_stage_dependent_time() -> None:
    costs = [4, 4, 1, 1]
    prefix = [0, 4, 8, 9, 10]

    def time(s: int, i: int, j: int) -> float:
        return (prefix[j] - prefix[i]) / (2.0 if s == 1 else 1.0)     # stage 1 is twice as fast

    assert balance(4, 2, time) == (0, 1)                    # 4 | 6/2 = 3
    # stage 1 may hold at most two units
    assert balance(4, 2, time, fits=lambda s, i, j: s == 0 or j - i <= 2) == (0, 2)
    assert balance(4, 2, time, fits=lambda s, i, j: j - i <= 1) is None
    assert balance(1, 2, time) is None


def test_split_batch() -> None:
    assert split_batch(32, 8) == 4
    with pytest.raises(PlanError, match=r"a global batch of 12 does not split into 5 equal "
                                        r"micro-batches; use micro_batches in \(1, 2, 3, 4, 6, 12\)"):
        split_batch(12, 5)


def test_stage_count_reports_every_problem() -> None:
    check_stage_count(2, 5, 2)
    with pytest.raises(PlanError) as e:
        check_stage_count(6, 4, 4)
    assert str(e.value) == (
        "cannot make the pipeline stages:\n"
        "  - 6 stages need 6 devices but the cluster has 4; use pipeline_stages <= 4 or add devices\n"
        "  - 6 stages cannot split 4 units (layers); use pipeline_stages <= 4")
