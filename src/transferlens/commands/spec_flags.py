"""Command-line flags made from a spec model's fields, as open_lth makes its flags from
its hyper-parameter dataclasses: a field added to a spec is a flag without more code.

One flag per field, ``--field-name``, its help the field's description (Sphinx markup
removed: :func:`transferlens.docstrings.plain_text`). How a field's type becomes a flag:

* a nested spec (``data: DataSpec``): its fields become flags of their own names
  (``--domain``, ``--image-size``); :data:`FLAG_NAMES` renames the few that would be
  unclear alone (``data.name`` -> ``--data``);
* a discriminated union of specs (``init``): ``--init KIND`` picks the member, and each
  member's fields are ``--init-<field>``; given alone, such a flag picks its member
  (``--init-run DIR`` means ``init.kind = run``);
* a mapping (``model_kwargs``): repeatable ``--model-kwarg KEY=VALUE``, values read as YAML;
* a list: one flag taking several values; a plain bool: ``--x`` / ``--no-x``;
* anything else: one value, kept as text.

Values are not converted here: the spec validates them like YAML values, so a bad
value is the spec's one-line error naming the key (exit 2), not an argparse usage dump.
"""

from __future__ import annotations

import argparse
import copy
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from transferlens.data import DataSpec
from transferlens.docstrings import plain_text
from transferlens.errors import UserInputError
from transferlens.train.spec import FileInit

# Flags whose generated name would be unclear (``--name``) or would break a flag users
# already have (``--init-file``): (spec type, field) -> flag name.
FLAG_NAMES: dict[tuple[type[BaseModel], str], str] = {
    (DataSpec, "name"): "data",
    (DataSpec, "root"): "data-root",
    (DataSpec, "options"): "data-option",
    (FileInit, "path"): "init-file",
}
FlagKind = Literal["value", "values", "mapping", "switch", "choice"]
DEST_PREFIX = "spec:"


@dataclass(frozen=True)
class SpecFlag:
    """One generated flag: where its value goes in the spec and how argparse reads it."""

    path: tuple[str, ...]  # key path in the spec, e.g. ("data", "image_size")
    option: str  # "--image-size"
    kind: FlagKind
    help: str
    metavar: str | None = None
    union: str | None = None  # the union field this flag belongs to, e.g. "init"
    member: str | None = None  # the union member (its kind) this flag belongs to

    @property
    def dest(self) -> str:
        return DEST_PREFIX + ".".join(self.path)


def _without_none(annotation: Any) -> Any:
    """``X`` from ``X | None``; other annotations unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _is_spec(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _choices(annotation: Any) -> list[str]:
    """The literal values (and true/false for a bool) of a Literal-based annotation."""
    if typing.get_origin(annotation) is Literal:
        return [str(value) for value in typing.get_args(annotation)]
    if annotation is bool:
        return ["true", "false"]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [_choices(arg) for arg in typing.get_args(annotation)]
        if all(found):
            return [choice for choices in found for choice in choices]
    return []


def _help(field: Any, required: bool) -> str:
    text = plain_text(field.description or "")
    if required:
        suffix = "required"
    elif field.default is PydanticUndefined or field.default is None:
        suffix = ""
    else:
        shown = str(field.default).lower() if isinstance(field.default, bool) else field.default
        suffix = f"default {shown}"
    if suffix:
        text = f"{text} ({suffix})" if text else suffix
    return text.replace("%", "%%")  # argparse formats help with %


def _option(spec_type: type[BaseModel], name: str, prefix: str) -> str:
    renamed = FLAG_NAMES.get((spec_type, name))
    return "--" + (renamed or prefix + name.replace("_", "-"))


def _fields(
    spec_type: type[BaseModel],
    path: tuple[str, ...] = (),
    prefix: str = "",
    *,
    union: str | None = None,
    member: str | None = None,
    top: bool = True,
) -> Iterator[SpecFlag]:
    for name, field in spec_type.model_fields.items():
        annotation = _without_none(field.annotation)
        where = (*path, name)
        option = _option(spec_type, name, prefix)
        if field.discriminator and isinstance(field.discriminator, str):
            yield from _union_flags(annotation, field, where, option)
        elif _is_spec(annotation):  # nested spec: its fields under their own names
            yield from _fields(annotation, where, union=union, member=member, top=False)
        elif union is not None and name == "kind":
            continue  # the union's own --<union> flag sets it
        else:
            kind, metavar = _kind(annotation, option)
            if kind == "mapping" and option.endswith("s"):
                option = option[:-1]  # one KEY=VALUE per flag: --model-kwarg
            required = top and field.is_required()
            yield SpecFlag(where, option, kind, _help(field, required), metavar, union, member)


def _kind(annotation: Any, option: str) -> tuple[FlagKind, str | None]:
    """How argparse reads a field of this type, and the placeholder of its value."""
    name = option.removeprefix("--").replace("-", "_").upper()
    origin = typing.get_origin(annotation)
    if annotation is dict or origin is dict:
        return "mapping", "KEY=VALUE"
    if annotation is list or origin is list:
        return "values", name
    if annotation is bool:
        return "switch", None
    choices = _choices(annotation)
    if choices:
        return "choice", "{" + ",".join(choices) + "}"
    return "value", name


def _union_flags(annotation: Any, field: Any, path: tuple[str, ...], option: str):
    """``--<union> KIND`` and ``--<union>-<field>`` for every member's fields."""
    key = field.discriminator
    members = [arg for arg in typing.get_args(annotation) if _is_spec(arg)]
    kinds = [typing.get_args(m.model_fields[key].annotation)[0] for m in members]
    yield SpecFlag(
        (*path, key), option, "choice",
        f"{plain_text(field.description or '')} ({', '.join(kinds)})".strip(),
        "{" + ",".join(kinds) + "}", union=path[-1],
    )  # fmt: skip
    prefix = option.removeprefix("--") + "-"
    for member, kind in zip(members, kinds):
        yield from _fields(member, path, prefix, union=path[-1], member=kind, top=False)


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def key_values(items: list[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a mapping, values read as YAML (``width=4`` -> 4)."""
    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"{option}: expected KEY=VALUE (got {item!r})")
        found[key] = _yaml_value(value)
    return found


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[path[-1]] = value


class SpecFlags:
    """The flags of ``spec_type`` (see the module docstring): add them, read them back."""

    def __init__(self, spec_type: type[BaseModel]) -> None:
        self.spec_type = spec_type
        self.flags = list(_fields(spec_type))
        options = [flag.option for flag in self.flags]
        repeated = {option for option in options if options.count(option) > 1}
        if repeated:  # a new field's name clashes: rename it in FLAG_NAMES
            raise ValueError(f"{spec_type.__name__}: flags made twice: {sorted(repeated)}")

    def add_to(self, parser: argparse.ArgumentParser | Any) -> None:
        """Add every flag to ``parser`` (or an argument group); unset flags read None."""
        for flag in self.flags:
            options: dict[str, Any] = {"dest": flag.dest, "help": flag.help, "default": None}
            if flag.kind == "switch":
                options["action"] = argparse.BooleanOptionalAction
            elif flag.kind == "mapping":
                options.update(action="append", metavar=flag.metavar)
            elif flag.kind == "values":
                options.update(nargs="+", metavar=flag.metavar)
            else:
                options["metavar"] = flag.metavar
            parser.add_argument(flag.option, **options)

    def value(self, args: argparse.Namespace, *path: str) -> Any:
        """The value given for the field at ``path`` (None when its flag was not given)."""
        return getattr(args, DEST_PREFIX + ".".join(path), None)

    def given(self, args: argparse.Namespace) -> list[SpecFlag]:
        """The flags set on the command line."""
        return [flag for flag in self.flags if getattr(args, flag.dest, None) is not None]

    def apply(self, data: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
        """A copy of the spec data ``data`` with every given flag applied on top.

        Mapping flags add keys to the mapping; union flags update the union's value when
        they name its kind and replace it otherwise.
        """
        merged = copy.deepcopy(dict(data))
        given = self.given(args)
        for flag in given:
            if flag.union is None:
                _set(merged, flag.path, self._value(flag, args, _get(merged, flag.path)))
        unions = {flag.union: flag.path[:-1] for flag in given if flag.union is not None}
        for union, path in unions.items():
            self._apply_union(merged, path, [flag for flag in given if flag.union == union], args)
        return merged

    def _value(self, flag: SpecFlag, args: argparse.Namespace, current: Any) -> Any:
        """The flag's value; for a mapping flag, ``current`` with the flag's keys added."""
        value = getattr(args, flag.dest)
        if flag.kind != "mapping":
            return value
        base = dict(current) if isinstance(current, dict) else {}
        return {**base, **key_values(value, flag.option)}

    def _apply_union(
        self,
        data: dict[str, Any],
        path: tuple[str, ...],
        flags: list[SpecFlag],
        args: argparse.Namespace,
    ) -> None:
        union = flags[0].union
        selector = next(f for f in self.flags if f.union == union and f.member is None)
        key = selector.path[-1]  # the discriminator, e.g. "kind"
        members = {flag.member for flag in flags if flag.member is not None}
        kind = getattr(args, selector.dest)
        if kind is not None:
            strays = [flag.option for flag in flags if flag.member not in (None, kind)]
            if strays:
                raise UserInputError(f"{strays[0]}: not a setting of {selector.option} {kind}")
        elif len(members) > 1:
            raise UserInputError(f"{' and '.join(flag.option for flag in flags)}: give only one")
        else:
            kind = members.pop()
        current = _get(data, path)
        # The same kind is updated (``--init-epoch`` on a YAML ``init``); another replaced.
        same = isinstance(current, dict) and current.get(key) == kind
        value = copy.deepcopy(current) if same else {}
        value[key] = kind
        for flag in flags:
            if flag.member is not None:
                name = flag.path[-1]
                value[name] = self._value(flag, args, value.get(name))
        _set(data, path, value)
