"""Checking a data set's ``DataSpec.options`` (unknown keys and bad values are user errors)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

from pydantic import ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from transferlens.errors import UserInputError

__all__ = ["DataOptions", "OptionValue", "check_options", "float_option", "int_option"]

# What a YAML option may hold. list[float] after list[str]: a list of numbers (options.mean:
# [0.5, 0.5, 0.5]) is numbers, a list of texts stays text.
OptionValue = int | float | str | bool | list[str] | list[float]


def _one_line(value: Any, handler: Callable[[Any], Any]) -> Any:
    """A bad option value as one message naming its key (not one per member of the union)."""
    try:
        return handler(value)
    except ValidationError as error:
        location = error.errors()[0].get("loc", ())
        if not isinstance(value, Mapping) or not location:
            raise PydanticCustomError(
                "options", "expected a mapping of option names to values"
            ) from None
        key = location[0]
        raise PydanticCustomError(
            "option_value",
            "key {key}: expected a number, text, true/false or a list of numbers or of "
            "texts (got {got})",
            {"key": repr(key), "got": repr(value.get(key))},
        ) from None


# DataSpec.options: names -> values; which names a data set knows is its own business.
DataOptions = Annotated[dict[str, OptionValue], WrapValidator(_one_line)]


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
