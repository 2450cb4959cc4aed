"""The reference page of the YAML files (``docs/reference.md``), generated from the specs.

Every key of the train YAML (:class:`~transferlens.train.TrainSpec`, its ``init`` kinds),
the data keys (:class:`~transferlens.data.DataSpec`, with each built-in data set's own
documentation: layout, defaults, options) and the study YAML
(:class:`~transferlens.study.spec.StudySpec`, its nested settings and every analysis's
settings), as tables of key, type, default and description read from the pydantic
models themselves, so the page cannot drift from the code: ``tests/test_reference.py``
compares ``docs/reference.md`` with :func:`reference_markdown`. Regenerate it with::

    python -m transferlens.reference docs/reference.md
"""

from __future__ import annotations

import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typing_extensions import is_typeddict

from transferlens import catalog
from transferlens.data.spec import DataSpec
from transferlens.docstrings import markdown_text, paragraphs
from transferlens.io import atomic_write_text
from transferlens.study.spec import ArmSettings, StudySpec
from transferlens.train.spec import TrainSpec

REGENERATE = "python -m transferlens.reference docs/reference.md"
# A study arm's unset field keeps TrainSpec's default and means what it means there
# (``augment``: the data key); the first of these models with the field describes it.
FALLBACKS: dict[type[BaseModel], tuple[type[BaseModel], ...]] = {ArmSettings: (TrainSpec, DataSpec)}
# Keys a model accepts that are not fields (a "before" validator consumes them).
EXTRA_KEYS: dict[type[BaseModel], list[tuple[str, str, str, str]]] = {
    StudySpec: [
        (
            "data_defaults",
            "mapping (DataSpec, partial)",
            "none",
            "data keys merged into every `source.data` and `targets[].data` "
            "(an entry's own keys win)",
        )
    ]
}


@dataclass
class Section:
    """One model's table, and the key paths where that model appears."""

    model: type[BaseModel]
    paths: list[str] = field(default_factory=list)


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _union_text(members: list[Any], path: str) -> str:
    """``int, str or null``; members that are all models: ``mapping (A or B)``."""
    models = [member.__name__ for member in members if _is_model(member)]
    others = [type_text(member, path) for member in members if not _is_model(member)]
    words = [f"mapping ({_join(models)})"] if models else []
    words += [word for word in others if word != "null"]
    return _join(words + [word for word in others if word == "null"])


def type_text(annotation: Any, path: str = "", nested: bool = False) -> str:
    """A YAML user's name for a field type: ``int or null``, ``list of str``, ``mapping (X)``.

    ``nested``: inside a list or mapping, where a union is put in parentheses.
    """
    annotation = _strip_annotated(annotation)
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if _is_union(annotation):
        members = [_strip_annotated(arg) for arg in typing.get_args(annotation)]
        text = _union_text(members, path)
        return f"({text})" if nested and " or " in text else text
    if origin is Literal:
        text = _join([repr(value) for value in typing.get_args(annotation)])
        return f"({text})" if nested and " or " in text else text
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return f"list of {type_text(item, path, nested=True)}"
    if origin is dict or annotation is dict:
        key, value = typing.get_args(annotation) or (str, Any)
        return f"mapping of {type_text(key, path, True)} to {type_text(value, path, True)}"
    if _is_model(annotation):
        return f"mapping ({annotation.__name__})"
    if is_typeddict(annotation):
        return f"mapping (`{path}.*` below)"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(info: FieldInfo) -> list[str]:
    """``>= 1``, ``non-empty``, ``matching ^...$`` from a field's metadata."""
    found = []
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for meta in info.metadata:
        for name, symbol in bounds.items():
            if isinstance(meta, getattr(annotated_types, name.capitalize())):
                found.append(f"{symbol} {getattr(meta, name)}")
        if isinstance(meta, annotated_types.MinLen):
            found.append("non-empty" if meta.min_length == 1 else f"length >= {meta.min_length}")
        pattern = getattr(meta, "pattern", None)
        if isinstance(pattern, str):
            found.append(f"matching `{pattern}`")
    return found


def yaml_inline(value: Any) -> str:
    """``value`` as one line of YAML (``null``, ``true``, ``[0, 1]``, ``{kind: random}``)."""
    if isinstance(value, BaseModel):
        data = value.model_dump(mode="json", exclude_defaults=True)
        if "kind" in type(value).model_fields:  # the key that picks a union member
            data = {"kind": value.model_dump(mode="json")["kind"], **data}
        value = data
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _fallback(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    return next((base for base in FALLBACKS.get(model, ()) if name in base.model_fields), None)


def default_text(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    """``required``, the default as YAML, or (a study arm's null) the default it keeps."""
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    fallback = _fallback(model, name)
    if value is None and fallback is not None:
        base = fallback.model_fields[name]
        return f"{fallback.__name__}'s ({default_text(fallback, name, base)})"
    return f"`{yaml_inline(value)}`"


def description_text(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    text = info.description
    fallback = _fallback(model, name)
    if not text and fallback is not None:
        text = fallback.model_fields[name].description
    if not text and info.discriminator is None and name == "kind":
        text = "selects this kind"  # the discriminator of a union member (``init.kind``)
    return markdown_text(text or "")


def _children(annotation: Any, info: FieldInfo | None, path: str) -> list[tuple[Any, str]]:
    """The nested models of a field's type with the key path each one sits at."""
    annotation = _strip_annotated(annotation)
    discriminator = info.discriminator if info is not None else None
    if _is_union(annotation):
        found = []
        for member in typing.get_args(annotation):
            where = path
            if isinstance(discriminator, str) and _is_model(_strip_annotated(member)):
                kind = typing.get_args(member.model_fields[discriminator].annotation)[0]
                where = f"{path}` with `{discriminator}: {kind}"
            found += _children(member, None, where)
        return found
    if typing.get_origin(annotation) is list:
        return _children(typing.get_args(annotation)[0], None, f"{path}[]")
    if is_typeddict(annotation):
        hints = typing.get_type_hints(annotation, include_extras=True)
        return [
            pair for key, hint in hints.items() for pair in _children(hint, None, f"{path}.{key}")
        ]
    return [(annotation, path)] if _is_model(annotation) else []


def collect_sections(
    model: type[BaseModel], path: str = "", stop: tuple[type[BaseModel], ...] = ()
) -> list[Section]:
    """``model`` and every model nested in it (depth first, in field order), once each
    with all the paths it appears at; models in ``stop`` are documented elsewhere."""
    sections: dict[type[BaseModel], Section] = {}

    def visit(current: type[BaseModel], where: str) -> None:
        known = current in sections
        sections.setdefault(current, Section(current)).paths.append(where)
        if known:
            return
        for name, info in current.model_fields.items():
            child_path = f"{where}.{name}" if where else name
            for child, child_where in _children(info.annotation, info, child_path):
                if child not in stop:
                    visit(child, child_where)

    visit(model, path)
    return list(sections.values())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def section_markdown(section: Section, level: str = "###") -> str:
    model = section.model
    where = ", ".join(f"`{path}`" for path in section.paths if path)
    heading = f"{level} {where or 'Top level'} ({model.__name__})"
    parts = [heading]
    intro = paragraphs(model)
    if intro:
        parts.append(intro)
    rows = []
    for name, info in model.model_fields.items():
        path = section.paths[0]
        type_cell = type_text(info.annotation, f"{path}.{name}" if path else name)
        type_cell = ", ".join([type_cell, *_constraints(info)])
        rows.append(
            (name, type_cell, default_text(model, name, info), description_text(model, name, info))
        )
    rows += EXTRA_KEYS.get(model, [])
    if rows:
        table = ["| key | type | default | description |", "|---|---|---|---|"]
        table += [
            f"| `{key}` | {_cell(kind)} | {_cell(default)} | {_cell(text)} |"
            for key, kind, default, text in rows
        ]
        parts.append("\n".join(table))
    else:
        parts.append("Nothing to set: `{}` or `null`.")
    return "\n\n".join(parts)


def _module_doc(model: type[BaseModel]) -> str:
    return paragraphs(sys.modules[model.__module__])


def _datasets_markdown() -> str:
    """Each built-in data set module's documentation (layout, defaults, options)."""
    modules: dict[str, list[str]] = {}
    for entry in catalog.datasets(builtin_only=True):
        modules.setdefault(entry.target.__module__, []).append(entry.name)
    parts = [
        "### Data sets (`data.name`)",
        "The registered data sets (`transferlens list datasets`), each with its own "
        "layout, defaults and `options`; an unknown option is refused naming the known ones.",
    ]
    for module, names in modules.items():
        heading = ", ".join(f"`{name}`" for name in names)
        parts += [f"#### {heading}", paragraphs(sys.modules[module])]
    return "\n\n".join(parts)


def _models_markdown() -> str:
    rows = ["| `model` | keyword arguments (`model_kwargs`) | description |", "|---|---|---|"]
    for entry in catalog.models(builtin_only=True):
        keywords = ", ".join(f"`{k}`" for k in catalog.model_keywords(entry.target)) or "none"
        rows.append(f"| `{entry.name}` | {_cell(keywords)} | {_cell(entry.description)} |")
    return "\n\n".join(["## Models (`model`)", "\n".join(rows)])


def reference_markdown() -> str:
    """The whole reference page (Markdown), from the spec models and the registries."""
    header = [
        "# Reference: the train, data and study YAML files",
        f"<!-- Generated by transferlens.reference from the spec models; do not edit by hand. "
        f"Regenerate: {REGENERATE} -->",
        "Every key with its type, default and meaning, read from the spec models "
        f"(regenerate this page with `{REGENERATE}`). `required` keys have no default; "
        "`null` is YAML's null. A misspelt key or a bad value is refused with one line "
        "naming it (exit code 2). The registered names: `transferlens list models | "
        "datasets | analyses`.",
    ]
    train = [
        "## Train YAML (`transferlens train CONFIG.yaml`)",
        _module_doc(TrainSpec),
        *(section_markdown(s) for s in collect_sections(TrainSpec, stop=(DataSpec,))),
    ]
    data = [
        "## Data keys (`data`)",
        "The `data` of a train YAML, and `source.data`, `targets[].data` and "
        "`data_defaults` of a study YAML.",
        section_markdown(Section(DataSpec, ["data"])),
        _datasets_markdown(),
    ]
    study = [
        "## Study YAML (`transferlens plan | run STUDY.yaml`)",
        _module_doc(StudySpec),
        *(section_markdown(s) for s in collect_sections(StudySpec, stop=(DataSpec,))),
    ]
    blocks = [*header, *train, *data, _models_markdown(), *study]
    return "\n\n".join(block.strip() for block in blocks if block.strip()) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m transferlens.reference [PATH]``: write the page to PATH, or print it."""
    args = sys.argv[1:] if argv is None else argv
    text = reference_markdown()
    if args:
        atomic_write_text(Path(args[0]), text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
