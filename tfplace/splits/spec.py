"""The user's split spec: a dict, the one-line string "dense_3:S(1);embedding:S(0)", or "auto".

Keys name variables ("dense_3/kernel") or layers ("dense_3"); a layer name stands for the
layer's weight (LAYER_WEIGHTS: `kernel` of Dense/Conv/EinsumDense, `embeddings` of Embedding)
and, when that weight is split on one of its trailing output axes that the bias also has (a
Dense kernel's S(1), a Conv kernel's S(3), an attention projection's heads axis), for the
layer's `bias` too, split on the same axis, so that the bias add stays local (Megatron's
column-parallel layer). Shapes are needed for that rule.
"""
from __future__ import annotations

import difflib
from typing import Literal, Mapping, Sequence, Union

from tfplace.errors import PlanError, bullets
from tfplace.splits.layout import LAYOUT_FORMS, Layout, S, parse_layout

__all__ = ["SplitSpec", "LAYER_WEIGHTS", "AUTO", "parse_split_spec", "resolve_splits"]

SplitSpec = Union[str, Mapping[str, Union[str, Layout]], None]
LAYER_WEIGHTS = ("kernel", "embeddings")
AUTO = "auto"
_FORMS = ('a dict {"dense_3/kernel": "S(1)"}, a string "dense_3:S(1);embedding:S(0)" '
          'or "auto"')


def parse_split_spec(spec: SplitSpec) -> dict[str, Layout] | Literal["auto"]:
    """The spec as {variable or layer name: Layout} in the given order, or "auto"."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        text = spec.strip()
        if text == AUTO:
            return "auto"
        out: dict[str, Layout] = {}
        for part in text.split(";"):
            part = part.strip()
            if not part:
                continue
            name, sep, text_layout = part.rpartition(":")
            if not sep or not name.strip() or not text_layout.strip():
                raise PlanError(f"cannot read split {part!r} in {spec!r}; write NAME:LAYOUT "
                                f"entries joined by ';' (LAYOUT: {LAYOUT_FORMS}), e.g. "
                                '"dense_3:S(1);embedding:S(0)"')
            _put(out, name.strip(), parse_layout(text_layout), spec)
        return out
    if isinstance(spec, Mapping):
        out = {}
        for name, layout in spec.items():
            if not isinstance(name, str) or not name.strip():
                raise PlanError(f"split names are variable or layer names (got {name!r}); "
                                f"pass {_FORMS}")
            _put(out, name.strip(), parse_layout(layout), spec)
        return out
    raise PlanError(f"splits must be {_FORMS} (got {type(spec).__name__} {spec!r})")


def _put(out: dict[str, Layout], name: str, layout: Layout, spec: object) -> None:
    if name in out and out[name] != layout:
        raise PlanError(f"{name!r} is split twice ({out[name]} and {layout}) in {spec!r}; "
                        "keep one layout per name")
    out[name] = layout


def resolve_splits(spec: SplitSpec, variable_names: Sequence[str], *,
                   shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Layout]:
    """{variable name: Layout} for an explicit spec, names checked against the model's variables.

    `shapes` (variable name -> shape), when given, checks each split axis against the rank and
    enables the bias rule of layer names. Every unknown name is reported at once, with the
    closest variable and layer names.
    """
    parsed = parse_split_spec(spec)
    if isinstance(parsed, str):
        raise PlanError('splits="auto" has no fixed layouts to resolve; pass it to the '
                        "planner (tfplace.splits.fit_memory) instead of resolve_splits")
    names = list(variable_names)
    known = set(names)
    layers = _layers(names)
    out: dict[str, Layout] = {}
    problems: list[str] = []
    for key, layout in parsed.items():
        targets = _targets(key, layout, known, names, shapes)
        if not targets:
            problems.append(_unknown(key, names, layers))
            continue
        for var, lay in targets:
            if shapes is not None and var in shapes and lay.is_split \
                    and lay.axis >= len(shapes[var]):
                problems.append(f"{key!r}: {lay} does not fit {var!r} of shape "
                                f"{list(shapes[var])}; split an axis below {len(shapes[var])}")
            elif var in out and out[var] != lay:
                problems.append(f"{var!r} gets two layouts ({out[var]} and {lay}); "
                                "name it once")
            else:
                out[var] = lay
    if problems:
        raise PlanError(bullets("cannot resolve the requested splits:", problems))
    return dict(sorted(out.items()))


def _targets(key: str, layout: Layout, known: set[str], names: list[str],
             shapes: Mapping[str, Sequence[int]] | None) -> list[tuple[str, Layout]]:
    exact = _find(key, known, names)
    if exact is not None:
        return [(exact, layout)]
    for weight in LAYER_WEIGHTS:
        var = _find(f"{key}/{weight}", known, names)
        if var is None:
            continue
        found = [(var, layout)]
        bias = _find(f"{key}/bias", known, names)
        if bias is not None and shapes is not None and var in shapes and bias in shapes \
                and layout.is_split:
            weight_shape, bias_shape = tuple(shapes[var]), tuple(shapes[bias])
            axis = layout.axis - (len(weight_shape) - len(bias_shape))
            if axis >= 0 and weight_shape[-len(bias_shape):] == bias_shape:
                found.append((bias, S(axis)))   # the bias has the weight's trailing axes
        return found
    return []


def _find(path: str, known: set[str], names: list[str]) -> str | None:
    """`path` itself, or the one variable whose name ends with '/' + path (a nested model)."""
    if path in known:
        return path
    hits = [n for n in names if n.endswith("/" + path)]
    return hits[0] if len(hits) == 1 else None


def _layers(names: list[str]) -> list[str]:
    return sorted({n.rsplit("/", 1)[0] for n in names
                   if "/" in n and n.rsplit("/", 1)[1] in LAYER_WEIGHTS})


def _unknown(key: str, names: list[str], layers: list[str]) -> str:
    close = difflib.get_close_matches(key, layers + names, n=4, cutoff=0.6)
    if close:
        return f"{key!r} names no variable or layer; did you mean {', '.join(map(repr, close))}?"
    valid = layers[:12] + (["..."] if len(layers) > 12 else [])
    return (f"{key!r} names no variable or layer (layers with weights: "
            f"{', '.join(valid) or 'none'}; or a full variable name such as "
            f"{names[0]!r})" if names else f"{key!r} names no variable (the model has none)")
