"""tfplace.splits.layout and .spec: SBP values, parsing, split specs, name resolution."""
from __future__ import annotations

import pytest

from tfplace.errors import PlanError
from tfplace.splits import B, P, S, Layout, parse_layout, parse_split_spec, resolve_splits


def test_parse_and_print_round_trip() -> None:
    assert parse_layout("S(1)") == S(1) == Layout("S", 1)
    assert parse_layout(" S( 0 ) ") == S(0)
    assert parse_layout("B") is not None and parse_layout("B") == B
    assert parse_layout("P") == P
    assert [str(x) for x in (S(0), S(12), B, P)] == ["S(0)", "S(12)", "B", "P"]
    assert parse_layout(S(2)) == S(2)
    assert S(1).is_split and B.is_broadcast and P.is_partial and not S(0).is_partial


@pytest.mark.parametrize("junk", ["S", "S()", "S(-1)", "s(1)", "split", "BP", "", "S(1.5)"])
def test_junk_layouts_name_the_valid_forms(junk: str) -> None:
    with pytest.raises(PlanError) as e:
        parse_layout(junk)
    assert str(e.value) == (f"cannot read layout {junk!r}; write one of "
                            "S(axis) with axis >= 0 (e.g. S(0), S(1)), B or P")


def test_bad_layout_values() -> None:
    with pytest.raises(PlanError, match=r"a layout is a string \(got 3 of type int\)"):
        parse_layout(3)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match=r"layout B takes no axis \(got axis=1\)"):
        Layout("B", 1)
    with pytest.raises(PlanError, match=r"unknown layout kind 'X'"):
        Layout("X")


def test_shard_shapes() -> None:
    assert S(1).shard_shape((12, 32), 4) == (12, 8)
    assert S(0).shard_shape((-1, 32), 4) == (-1, 32)
    assert B.shard_shape((12, 32), 4) == (12, 32) == P.shard_shape((12, 32), 4)
    with pytest.raises(PlanError) as e:
        S(0).shard_shape((10, 4), 4)
    assert str(e.value) == ("axis 0 of shape [10, 4] (10) does not divide into 4 equal shards; "
                            "split another axis or use a device count that divides 10")
    with pytest.raises(PlanError, match=r"layout S\(2\) does not fit a rank-2 tensor"):
        S(2).shard_shape((10, 4), 2)


def test_spec_forms_agree() -> None:
    want = {"dense_3/kernel": S(1), "embedding/embeddings": S(0)}
    assert parse_split_spec({"dense_3/kernel": "S(1)", "embedding/embeddings": "S(0)"}) == want
    assert parse_split_spec("dense_3/kernel:S(1);embedding/embeddings:S(0)") == want
    assert parse_split_spec(" dense_3/kernel : S(1) ; embedding/embeddings:S(0); ") == want
    assert parse_split_spec({"dense_3/kernel": S(1)}) == {"dense_3/kernel": S(1)}
    assert parse_split_spec("auto") == "auto"
    assert parse_split_spec(None) == {} == parse_split_spec("")


def test_spec_errors() -> None:
    with pytest.raises(PlanError) as e:
        parse_split_spec("dense_3")
    assert str(e.value) == ("cannot read split 'dense_3' in 'dense_3'; write NAME:LAYOUT entries "
                            "joined by ';' (LAYOUT: S(axis) with axis >= 0 (e.g. S(0), S(1)), "
                            'B or P), e.g. "dense_3:S(1);embedding:S(0)"')
    with pytest.raises(PlanError, match=r"cannot read layout 'R\(1\)'"):
        parse_split_spec("dense_3:R(1)")
    with pytest.raises(PlanError, match=r"'d' is split twice \(S\(0\) and S\(1\)\)"):
        parse_split_spec("d:S(0);d:S(1)")
    with pytest.raises(PlanError, match=r"splits must be a dict .* \(got list \['d'\]\)"):
        parse_split_spec(["d"])  # type: ignore[arg-type]


VARS = ["dense/kernel", "dense/bias", "dense_3/kernel", "dense_3/bias", "embedding/embeddings",
        "conv2d/kernel", "conv2d/bias", "mha/query/kernel", "mha/query/bias",
        "adam/dense_3_kernel_momentum"]
SHAPES = {"dense/kernel": (12, 32), "dense/bias": (32,), "dense_3/kernel": (32, 64),
          "dense_3/bias": (64,), "embedding/embeddings": (50, 8), "conv2d/kernel": (3, 3, 3, 8),
          "conv2d/bias": (8,), "mha/query/kernel": (16, 2, 8), "mha/query/bias": (2, 8),
          "adam/dense_3_kernel_momentum": (32, 64)}


def test_layer_names_resolve_to_their_weights() -> None:
    assert resolve_splits("dense_3:S(1);embedding:S(0)", VARS) == {
        "dense_3/kernel": S(1), "embedding/embeddings": S(0)}
    # with shapes, a split on the bias's axis splits the bias too
    assert resolve_splits("dense_3:S(1);dense:S(0);conv2d:S(3);mha/query:S(1)", VARS,
                          shapes=SHAPES) == {
        "conv2d/bias": S(0), "conv2d/kernel": S(3), "dense/kernel": S(0),
        "dense_3/bias": S(0), "dense_3/kernel": S(1), "mha/query/bias": S(0),
        "mha/query/kernel": S(1)}
    assert resolve_splits({"dense_3/kernel": "S(1)"}, VARS, shapes=SHAPES) == {
        "dense_3/kernel": S(1)}
    assert resolve_splits("dense_3:S(1)", ["model/dense_3/kernel"]) == {
        "model/dense_3/kernel": S(1)}
    assert resolve_splits("dense_3/kernel:S(1)", ["model/dense_3/kernel"]) == {
        "model/dense_3/kernel": S(1)}
    # a bias that is not the weight's trailing axes stays whole
    assert resolve_splits("odd:S(1)", ["odd/kernel", "odd/bias"],
                          shapes={"odd/kernel": (4, 6), "odd/bias": (4,)}) == {"odd/kernel": S(1)}


def test_unknown_names_list_close_ones_all_at_once() -> None:
    with pytest.raises(PlanError) as e:
        resolve_splits("dense3:S(1);embeding/embeddings:S(0);zzz:B", VARS)
    assert str(e.value) == (
        "cannot resolve the requested splits:\n"
        "  - 'dense3' names no variable or layer; did you mean 'dense_3', 'dense', "
        "'dense_3/bias', 'dense/bias'?\n"
        "  - 'embeding/embeddings' names no variable or layer; did you mean "
        "'embedding/embeddings', 'embedding'?\n"
        "  - 'zzz' names no variable or layer (layers with weights: conv2d, dense, dense_3, "
        "embedding, mha/query; or a full variable name such as 'dense/kernel')")


def test_resolve_checks_rank_and_auto() -> None:
    with pytest.raises(PlanError) as e:
        resolve_splits("dense/bias:S(1)", VARS, shapes=SHAPES)
    assert str(e.value) == ("cannot resolve the requested splits:\n  - 'dense/bias': S(1) does "
                            "not fit 'dense/bias' of shape [32]; split an axis below 1")
    with pytest.raises(PlanError, match='splits="auto" has no fixed layouts'):
        resolve_splits("auto", VARS)
