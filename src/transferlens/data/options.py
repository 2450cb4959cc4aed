"""Checking a data set's ``DataSpec.options`` (unknown keys and bad values are user errors)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from transferlens.errors import UserInputError

NORMALIZATION_OPTIONS = ("mean", "std")


def check_options(dataset: str, options: Mapping[str, object], allowed: Iterable[str]) -> None:
    """Raise :class:`UserInputError` naming the first option ``dataset`` does not know."""
    known = sorted(set(allowed))
    for key in options:
        if key not in known:
            listed = ", ".join(known) if known else "none"
            raise UserInputError(f"{dataset}: unknown option options.{key} (known: {listed})")


def float_option(options: Mapping[str, object], key: str, default: float) -> float:
    """``options[key]`` as a float (``default`` when absent)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserInputError(f"options.{key}: expected a number (got {value!r})")
    try:
        return float(value)
    except ValueError:
        raise UserInputError(f"options.{key}: expected a number (got {value!r})") from None


def int_option(options: Mapping[str, object], key: str, default: int) -> int:
    """``options[key]`` as an int (``default`` when absent)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UserInputError(f"options.{key}: expected an integer (got {value!r})")
    try:
        return int(value)
    except ValueError:
        raise UserInputError(f"options.{key}: expected an integer (got {value!r})") from None
