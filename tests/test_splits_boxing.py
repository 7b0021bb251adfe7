"""tfplace.splits.boxing: for each layout pair, the expected collective and bytes, exactly."""
from __future__ import annotations

import pytest

from tfplace.errors import PlanError
from tfplace.splits import B, P, S, boxing_routes, choose_boxing

T = 4096          # tensor bytes

# (src, dst, n, collective, bytes per device)
PAIRS = [
    (B, B, 4, "identity", 0),
    (B, P, 4, "zeros", 0),
    (B, S(0), 4, "slice", 0),
    (B, S(1), 4, "slice", 0),
    (P, B, 4, "all_reduce", 6144),            # 2(n-1)/n T
    (P, P, 4, "identity", 0),
    (P, S(0), 4, "reduce_scatter", 3072),     # (n-1)/n T
    (P, S(2), 4, "reduce_scatter", 3072),
    (S(0), B, 4, "all_gather", 3072),         # (n-1)/n T
    (S(1), B, 4, "all_gather", 3072),
    (S(0), P, 4, "pad_zeros", 0),
    (S(0), S(0), 4, "identity", 0),
    (S(0), S(1), 4, "all_to_all", 768),       # (n-1)/n^2 T
    (S(1), S(0), 4, "all_to_all", 768),
    (P, B, 2, "all_reduce", 4096),
    (P, S(1), 2, "reduce_scatter", 2048),
    (S(1), B, 2, "all_gather", 2048),
    (S(0), S(1), 2, "all_to_all", 1024),
    (P, B, 8, "all_reduce", 7168),
    (S(0), S(1), 8, "all_to_all", 448),
    (S(0), B, 3, "all_gather", 2731),         # rounded up: 2730.67
]


@pytest.mark.parametrize("src,dst,n,collective,nbytes", PAIRS,
                         ids=[f"{s}->{d}@{n}" for s, d, n, _, _ in PAIRS])
def test_each_pair_picks_the_expected_collective(src, dst, n, collective, nbytes) -> None:
    box = choose_boxing(src, dst, n, T)
    assert (box.collective, box.bytes) == (collective, nbytes)
    assert (box.src, box.dst) == (src, dst)


def test_one_device_is_always_the_identity() -> None:
    for src in (B, P, S(0)):
        for dst in (B, P, S(1)):
            assert choose_boxing(src, dst, 1, T).collective == "identity"
            assert choose_boxing(src, dst, 1, T).bytes == 0


def test_costlier_routes_are_weighed_and_lose() -> None:
    assert [(b.collective, b.bytes) for b in boxing_routes(S(0), S(1), 4, T)] == [
        ("all_to_all", 768), ("all_gather+slice", 3072)]
    assert [(b.collective, b.bytes) for b in boxing_routes(P, S(0), 4, T)] == [
        ("reduce_scatter", 3072), ("all_reduce+slice", 6144)]


def test_bad_arguments() -> None:
    with pytest.raises(PlanError, match=r"boxing needs n >= 1 devices and bytes >= 0 "
                                        r"\(got n=0, bytes=4096\)"):
        choose_boxing(P, B, 0, T)
