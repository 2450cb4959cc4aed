"""Docstrings and field descriptions as users read them: Sphinx markup out.

The library's docstrings are written for Sphinx (``:class:`~transferlens.train.TrainSpec```,
````key````). Where one becomes text for a user it goes through :func:`plain_text`
(command-line help: ``TrainSpec``, ``key``) or :func:`markdown_text` (the reference
page: the same names as Markdown code). Roles: ``:role:`~a.b.C``` -> ``C`` (Sphinx's
short form), ``:role:`a.b.C``` -> ``a.b.C``, ``:role:`title <target>``` -> ``title``.
"""

from __future__ import annotations

import inspect
import re

# :class:`~a.b.C`, :func:`x`, :data:`y`, :mod:`m` (also :py:class: and the like)
_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")
_EXPLICIT_TITLE = re.compile(r"^(.*?)\s*<[^>]+>$")


def _role_target(text: str) -> str:
    """What Sphinx shows for a role's content: its title, or the (short) target name."""
    titled = _EXPLICIT_TITLE.match(text)
    if titled and titled.group(1):
        return titled.group(1)
    if text.startswith("~"):
        return text[1:].rsplit(".", 1)[-1]
    return text


def plain_text(text: str) -> str:
    """``text`` without Sphinx roles and literals (for command-line help)."""
    text = _ROLE.sub(lambda match: _role_target(match.group(1)), text)
    return _LITERAL.sub(r"\1", text)


def markdown_text(text: str) -> str:
    """``text`` with Sphinx roles and ````literals```` as Markdown code spans."""
    text = _ROLE.sub(lambda match: f"``{_role_target(match.group(1))}``", text)
    return _LITERAL.sub(r"`\1`", text)


def _own_doc(obj: object) -> str:
    # Not inspect.getdoc: a class without a docstring would show its base class's.
    return inspect.cleandoc(getattr(obj, "__doc__", None) or "")


def summary(obj: object) -> str:
    """The first paragraph of ``obj``'s docstring on one line, markup removed ("" if none)."""
    doc = _own_doc(obj)
    first = doc.split("\n\n", 1)[0]
    return plain_text(" ".join(first.split()))


def paragraphs(obj: object) -> str:
    """``obj``'s whole docstring, dedented, as Markdown ("" if none)."""
    return markdown_text(_own_doc(obj))
