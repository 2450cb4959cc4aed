"""A user's own model by import path: ``mypkg.models:CifarResNet`` or ``path/to/file.py:resnet20``.

The part after the last ``:`` names any callable that returns an ``nn.Module`` (a class
or a factory function; dots reach inside, ``module:Outer.build``). The part before it is
a module to import or a ``.py`` file (relative paths from the current directory).

The current directory is put first on ``sys.path`` before importing, as ``python -m``
does and as uvicorn's ``--app-dir`` does: a console script such as ``transferlens`` does
not have it there, so ``mypkg`` beside the study file would otherwise not be found.
Every process that builds the model (the study's spawned workers, torchrun's ranks, a
SLURM job started in the submission folder) imports it again by this same rule.

``num_classes`` is passed when the callable declares it; otherwise the model is built
with its own head, which is replaced by a fresh one of ``num_classes`` outputs
(:func:`~transferlens.models.helpers.reset_head`) when its size differs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from transferlens.errors import UserInputError

SEPARATOR = ":"
PATTERN = "module.path:Callable"
DESCRIPTION = (
    "Your own class or factory function, imported from the current directory "
    "(mypkg.models:CifarResNet or path/to/file.py:CifarResNet)."
)
# Modules imported from a file path, by resolved path: each file is executed once.
_FILE_MODULES: dict[Path, ModuleType] = {}


def split_import_path(name: str) -> tuple[str, str]:
    """``("mypkg.models", "CifarResNet")`` from ``"mypkg.models:CifarResNet"`` (the last
    ``:`` splits, so a Windows drive letter stays in the file part)."""
    module, sep, attribute = name.rpartition(SEPARATOR)
    if not sep or not module or not attribute:
        raise UserInputError(
            f"model {name!r}: expected module.path:Callable or path/to/file.py:Callable"
        )
    return module, attribute


def is_file_path(module: str) -> bool:
    """Whether the module part names a ``.py`` file rather than a dotted module."""
    return module.endswith(".py") or "/" in module or os.sep in module


def put_working_dir_on_path() -> None:
    """Put the current directory first on ``sys.path`` (see the module docstring)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import_file(name: str, module: str) -> ModuleType:
    path = Path(module).expanduser().resolve()
    if not path.is_file():
        raise UserInputError(f"model {name!r}: file {module} not found")
    cached = _FILE_MODULES.get(path)
    if cached is not None:
        return cached
    # A private, stable module name per file: no clash with the user's own packages.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    module_name = f"_transferlens_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserInputError(f"model {name!r}: cannot import {module} as Python")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = loaded  # classes defined there can find their module
    try:
        spec.loader.exec_module(loaded)
    except Exception as error:  # the user's code may raise anything
        sys.modules.pop(module_name, None)
        raise UserInputError(
            f"model {name!r}: importing {module} failed: {_reason(error)}"
        ) from None
    _FILE_MODULES[path] = loaded
    return loaded


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


def _import_module(name: str, module: str) -> ModuleType:
    put_working_dir_on_path()
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        # Not found itself (or a parent package), or one of its own imports is missing.
        missing = error.name or ""
        if module == missing or module.startswith(missing + "."):
            raise UserInputError(
                f"model {name!r}: module {module!r} not found (looked in the current "
                f"directory {os.getcwd()} and sys.path){_not_a_family(module)}"
            ) from None
        raise UserInputError(
            f"model {name!r}: importing {module!r} failed: {_reason(error)}"
        ) from None
    except Exception as error:
        raise UserInputError(
            f"model {name!r}: importing {module!r} failed: {_reason(error)}"
        ) from None


def _not_a_family(module: str) -> str:
    """A hint for a misspelt family prefix (``timmm:resnet18``)."""
    if "." in module:
        return ""
    from transferlens.models.registry import list_families

    return f"; nor is {module!r} a model family ({', '.join(list_families())})"


def resolve_callable(name: str) -> Callable[..., Any]:
    """The callable ``name`` points to, imported (UserInputError, one line: module or
    file not found, import failed, attribute missing, not callable)."""
    module_part, attribute = split_import_path(name)
    if is_file_path(module_part):
        put_working_dir_on_path()
        module = _import_file(name, module_part)
    else:
        module = _import_module(name, module_part)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UserInputError(f"model {name!r}: {module_part} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UserInputError(
            f"model {name!r}: {attribute} is a {type(target).__name__}, not a class or function"
        )
    return target


def _parameters(target: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # some builtins and C extensions have no signature
        return None


def takes_num_classes(target: Callable[..., Any]) -> bool:
    """Whether the callable declares a ``num_classes`` parameter by name."""
    parameters = _parameters(target) or {}
    parameter = parameters.get("num_classes")
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def check_keywords(name: str, target: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Refuse a keyword the callable does not declare (one with ``**kwargs`` takes all)."""
    parameters = _parameters(target)
    if parameters is None or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        return
    accepted = [
        key
        for key, p in parameters.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and key != "num_classes"
    ]
    for key in kwargs:
        if key not in accepted:
            allowed = ", ".join(accepted) if accepted else "none"
            raise UserInputError(
                f"model {name!r}: unknown keyword argument {key!r} (accepted: {allowed})"
            )


def _fit_head(model: nn.Module, num_classes: int) -> None:
    """Replace the head by a fresh one of ``num_classes`` outputs unless it has that many."""
    from transferlens.models.helpers import head_prefix, reset_head

    head = model.get_submodule(head_prefix(model))
    if getattr(head, "out_features", None) != num_classes:
        reset_head(model, num_classes)


def build_user_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the model ``name`` (an import path) with a head of ``num_classes`` outputs.

    UserInputError for an import path that does not resolve, an undeclared keyword,
    an error the callable raises on its arguments (TypeError, ValueError), or a result
    that is not an ``nn.Module``.
    """
    target = resolve_callable(name)
    check_keywords(name, target, kwargs)
    passes = takes_num_classes(target)
    try:
        model = target(num_classes=num_classes, **kwargs) if passes else target(**kwargs)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"model {name!r}: {_reason(error)}") from None
    if not isinstance(model, nn.Module):
        raise UserInputError(
            f"model {name!r}: returned a {type(model).__name__}, not a torch nn.Module"
        )
    if not passes:
        _fit_head(model, num_classes)
    return model
