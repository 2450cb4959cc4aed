"""Errors the user can fix, and how they are reported.

Every bad input (a config key, a path, a value) raises :class:`UserInputError`
with a message that names the offending key, file or value. The CLI prints it on
one line and exits with code 2; anything else exits 1.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class UserInputError(ValueError):
    """Bad input (config, path, argument). The message is one line naming the culprit."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def format_validation_error(error: Any, source: str) -> str:
    """One line from a pydantic ``ValidationError``: ``source: key.path: message (got value)``.

    Only the first error is reported (the user fixes one thing at a time; the rest
    are counted) so the message stays on one line.
    """
    problems = error.errors()
    first = problems[0]
    location = ".".join(str(part) for part in first.get("loc", ())) or "(top level)"
    message = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        message = "unknown key"
    got = first.get("input")
    shown = ""
    if first.get("type") not in ("missing", "extra_forbidden") and not isinstance(got, dict | list):
        shown = f" (got {got!r})"
    more = f" [and {len(problems) - 1} more problem(s)]" if len(problems) > 1 else ""
    return f"{source}: {location}: {message}{shown}{more}"
