"""Pairs of models to compare: ``(pair name, first model key, second model key)``."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from transferlens.errors import UserInputError

Pair = tuple[str, str, str]


def resolve_pairs(keys: Sequence[str], pairs: Iterable[Sequence[str]] | None) -> list[Pair]:
    """Check ``pairs`` against the model ``keys``; ``None`` means every two keys, ``"a-b"``.

    Several pairs may share a name (e.g. ``PT-PT`` over different seeds); analyses then
    report their mean under that name.
    """
    if pairs is None:
        return [(f"{a}-{b}", a, b) for a, b in itertools.combinations(keys, 2)]
    resolved = []
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 3:
            raise UserInputError(f"a pair is (name, first model, second model) (got {pair!r})")
        name, first, second = (str(part) for part in pair)
        for key in (first, second):
            if key not in keys:
                raise UserInputError(
                    f"pair {name!r}: unknown model {key!r} (models: {', '.join(keys)})"
                )
        resolved.append((name, first, second))
    if not resolved:
        raise UserInputError("no pairs of models to compare")
    return resolved
