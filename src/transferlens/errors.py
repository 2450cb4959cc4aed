"""Errors the user can fix, and how they are reported.

Every bad input (a config key, a path, a value) raises :class:`UserInputError`
with a message that names the offending key, file or value. The CLI prints it on
one line and exits with code 2; anything else exits 1.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

# typing's own is_typeddict misses typing_extensions' TypedDict on Python < 3.12.
from typing_extensions import is_typeddict

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
# How many valid keys an "unknown key" message lists when none is close to the given one.
KEYS_SHOWN = 20


class UserInputError(ValueError):
    """Bad input (config, path, argument). The message is one line naming the culprit."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def format_validation_error(error: Any, source: str, model: type | None = None) -> str:
    """One line from a pydantic ``ValidationError``: ``source: key.path: message (got value)``.

    Only one problem is reported (the user fixes one thing at a time; the rest are
    counted), so the message stays on one line. An unknown key comes first: a misspelt
    key (``lrate``) also makes the key it stands for missing (``lr``), and the unknown
    one is the cause. It is named with the closest valid key (``did you mean 'lr'?``),
    found among the fields of ``model`` (the validated spec) at that key's place and
    the keys reported missing beside it; a missing key explained by that suggestion is
    not counted again.
    """
    problems = error.errors()
    unknown = [problem for problem in problems if problem.get("type") == "extra_forbidden"]
    first = unknown[0] if unknown else problems[0]
    loc = tuple(first.get("loc", ()))
    location = ".".join(str(part) for part in loc) or "(top level)"
    explained: list[dict] = []
    if first.get("type") == "extra_forbidden":
        message, explained = _unknown_key(loc, problems, model)
    else:
        message = first.get("msg", "invalid value")
        # pydantic prefixes the text of a validator's ValueError; the text says it all.
        message = message.removeprefix("Value error, ")
    got = first.get("input")
    shown = ""
    if first.get("type") not in ("missing", "extra_forbidden") and not isinstance(got, dict | list):
        shown = f" (got {got!r})"
    others = len(problems) - 1 - len(explained)
    more = f" [and {others} more problem(s)]" if others > 0 else ""
    return f"{source}: {location}: {message}{shown}{more}"


def _unknown_key(loc: tuple, problems: list[dict], model: type | None) -> tuple[str, list[dict]]:
    """``unknown key; did you mean 'x'?`` (or the valid keys), and the missing-key
    problems the suggestion explains."""
    parent, given = loc[:-1], str(loc[-1]) if loc else ""
    missing = [
        problem
        for problem in problems
        if problem.get("type") == "missing" and tuple(problem.get("loc", ()))[:-1] == parent
    ]
    required = [str(problem["loc"][-1]) for problem in missing]
    valid = list(dict.fromkeys([*_keys_at(model, parent), *required]))
    close = difflib.get_close_matches(given, valid, n=1) or _missing_match(given, required)
    if close:
        explained = [problem for problem in missing if str(problem["loc"][-1]) == close[0]]
        return f"unknown key; did you mean {close[0]!r}?", explained
    if not valid:
        return "unknown key", []
    listed = ", ".join(valid[:KEYS_SHOWN]) + (", ..." if len(valid) > KEYS_SHOWN else "")
    return f"unknown key (valid keys: {listed})", []


def _missing_match(given: str, required: list[str]) -> list[str]:
    """A required key that is missing where an unknown one was given stands for it even
    when the two look less alike (``lrate`` for ``lr``): the closer one, or the only one."""
    close = difflib.get_close_matches(given, required, n=1, cutoff=0.3)
    return close or (required if len(required) == 1 else [])


def _keys_at(model: type | None, path: tuple) -> list[str]:
    """The field names of the pydantic model(s) at ``path`` (a pydantic error location)
    inside ``model``; empty when the path cannot be followed."""
    types_here: list[Any] = [model] if model is not None else []
    for part in path:
        types_here = [found for kind in types_here for found in _step(kind, part)]
    return [name for kind in types_here for leaf in _leaves(kind) for name in _fields(leaf)]


def _leaves(annotation: Any) -> list[Any]:
    """The alternatives of an annotation: ``Annotated`` unwrapped, unions flattened."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaves(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [leaf for arg in get_args(annotation) for leaf in _leaves(arg)]
    return [annotation]


def _fields(kind: Any) -> dict[str, Any]:
    """Field name -> annotation of a pydantic model or a TypedDict; empty for anything else."""
    if is_typeddict(kind):
        return dict(kind.__annotations__)
    fields = getattr(kind, "model_fields", None) if isinstance(kind, type) else None
    return {name: info.annotation for name, info in (fields or {}).items()}


def _is_branch(kind: Any, part: Any) -> bool:
    """Whether a location ``part`` names this union member: its tag or its class name."""
    if part == getattr(kind, "__name__", None):
        return True
    return any(
        get_origin(annotation) is Literal and part in get_args(annotation)
        for annotation in _fields(kind).values()
    )


def _step(annotation: Any, part: Any) -> list[Any]:
    """What is found at ``part`` (a field, a list index, a mapping key or a union tag)."""
    found = []
    for leaf in _leaves(annotation):
        fields, origin, args = _fields(leaf), get_origin(leaf), get_args(leaf)
        if isinstance(part, str) and part in fields:
            found.append(fields[part])
        elif fields and _is_branch(leaf, part):
            found.append(leaf)  # pydantic names the branch of a union it validated against
        elif isinstance(part, int) and isinstance(origin, type) and issubclass(origin, Sequence):
            found.extend(args[:1])
        elif isinstance(part, str) and isinstance(origin, type) and issubclass(origin, Mapping):
            found.extend(args[1:2])
    return found
