"""YAML files in, typed and validated specs out, with one-line errors.

All specs are pydantic models with ``extra="forbid"`` so that a misspelt key is an
error, not a silently ignored setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from transferlens.errors import UserInputError, format_validation_error

SpecT = TypeVar("SpecT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every spec: unknown keys rejected, values validated on assignment, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping, raising :class:`UserInputError` naming the file on any problem."""
    source = Path(path)
    if not source.is_file():
        raise UserInputError(f"{source}: file not found")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserInputError(f"{source}: not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: expected a mapping of keys at the top level")
    return data


def validate(spec_type: type[SpecT], data: Any, source: str) -> SpecT:
    """Validate ``data`` as ``spec_type``; errors become one-line :class:`UserInputError`."""
    try:
        return spec_type.model_validate(data)
    except ValidationError as error:
        raise UserInputError(format_validation_error(error, source, spec_type)) from None


def load_spec(spec_type: type[SpecT], path: str | os.PathLike) -> SpecT:
    """Read and validate a YAML spec file."""
    return validate(spec_type, read_yaml(path), str(path))
