"""docs/reference.md is generated from the spec models, lists every key of every spec and
every built-in name; help texts show no Sphinx markup."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from typing_extensions import is_typeddict

from transferlens import catalog
from transferlens.cli import build_parser
from transferlens.data import DataSpec
from transferlens.docstrings import markdown_text, plain_text
from transferlens.reference import REGENERATE, reference_markdown
from transferlens.study.analyses.registry import ANALYSES
from transferlens.study.spec import StudySpec
from transferlens.train import TrainSpec

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
MARKUP = ("``", ":class:", ":func:", ":mod:", ":data:", ":meth:")


@pytest.fixture(scope="module")
def page() -> str:
    return reference_markdown()


def test_docs_reference_is_the_generated_page(page: str) -> None:
    written = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    assert written == page, f"docs/reference.md is out of date; regenerate it: {REGENERATE}"
    assert REGENERATE in page  # the page says how it is made


def _models_in(annotation: typing.Any) -> list[type[BaseModel]]:
    """Every pydantic model inside a type (unions, lists, mappings, Annotated, TypedDicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if is_typeddict(annotation):
        hints = typing.get_type_hints(annotation, include_extras=True).values()
        return [model for hint in hints for model in _models_in(hint)]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _reachable(root: type[BaseModel]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model not in found:
            found.append(model)
            for info in model.model_fields.values():
                todo += _models_in(info.annotation)
    return found


def _section(page: str, model: type[BaseModel]) -> str:
    """The text under the heading naming ``(Model)``, up to the next heading of its level."""
    lines = page.splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if line.startswith("#") and f"({model.__name__})" in line
        ),
        None,
    )
    assert start is not None, f"no section for {model.__name__}"
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "### "))),
        len(lines),
    )
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("root", [TrainSpec, DataSpec, StudySpec], ids=lambda m: m.__name__)
def test_every_field_of_every_spec_has_a_row(page: str, root: type[BaseModel]) -> None:
    models = _reachable(root)
    assert len(models) > (1 if root is not DataSpec else 0)
    for model in models:
        section = _section(page, model)
        for name, info in model.model_fields.items():
            row = next(
                (line for line in section.splitlines() if line.startswith(f"| `{name}` |")), None
            )
            assert row is not None, f"{model.__name__}.{name} is not in docs/reference.md"
            cells = [cell.strip() for cell in row.strip("|").split(" | ")]
            assert cells[2] == "required" if info.is_required() else cells[2] != "required"


def test_known_defaults_are_stated(page: str) -> None:
    rows = {
        (section, key): line
        for section in ("TrainSpec", "DataSpec")
        for key in ("batch_size", "image_size", "lr")
        for line in _section(page, TrainSpec if section == "TrainSpec" else DataSpec).splitlines()
        if line.startswith(f"| `{key}` |")
    }
    assert "| `128` |" in rows[("TrainSpec", "batch_size")]
    assert "| required |" in rows[("TrainSpec", "lr")]
    assert "| `null` |" in rows[("DataSpec", "image_size")]
    assert "test_fraction" in page and "default 0.2" in page  # the image folder's split


def test_every_builtin_name_is_documented(page: str) -> None:
    for entry in catalog.datasets(builtin_only=True):
        assert f"`{entry.name}`" in page.split("### Data sets", 1)[1].split("\n## ", 1)[0]
    models = page.split("## Models", 1)[1].split("\n## ", 1)[0]
    for entry in catalog.models(builtin_only=True):
        assert f"| `{entry.name}` |" in models
    for name, analysis in ANALYSES.items():
        assert f"### `analyses.{name}` ({analysis.settings.__name__})" in page


def test_the_page_has_no_sphinx_markup(page: str) -> None:
    for text in (":class:", ":func:", ":mod:", ":data:", "``"):
        assert text not in page


@pytest.mark.parametrize(
    ("text", "plain", "markdown"),
    [
        (":class:`~transferlens.train.TrainSpec`", "TrainSpec", "`TrainSpec`"),
        (":func:`load_study`", "load_study", "`load_study`"),
        (
            ":mod:`transferlens.data.splits`",
            "transferlens.data.splits",
            "`transferlens.data.splits`",
        ),
        (":py:meth:`~a.B.c`", "c", "`c`"),
        (":func:`the loader <transferlens.inputs.loader>`", "the loader", "`the loader`"),
        (
            "``--batch-size`` sets ``batch_size``",
            "--batch-size sets batch_size",
            "`--batch-size` sets `batch_size`",
        ),
        ("no markup: a, b", "no markup: a, b", "no markup: a, b"),
    ],
)
def test_sphinx_markup_is_removed(text: str, plain: str, markdown: str) -> None:
    assert plain_text(text) == plain
    assert markdown_text(text) == markdown


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_no_command_help_shows_sphinx_markup() -> None:
    for parser in _parsers(build_parser()):
        text = parser.format_help()
        for markup in MARKUP:
            assert markup not in text, f"{parser.prog} --help shows {markup!r}"
