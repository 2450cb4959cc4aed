"""One registry of models, built by name (timm style).

``build_model(name, num_classes, **kwargs)`` is the only way the rest of the
project creates a network. Names are either registered exactly
(``@register_model("fixup_resnet50")``), belong to a prefix family
(``timm:<any timm name>``, ``hf:<model id or folder>``, registered with
:func:`register_model_family`), or are a user's own callable by import path
(``mypkg.models:CifarResNet``, ``path/to/file.py:resnet20``: see
:mod:`transferlens.models.user_models`). A registered family keeps precedence: a name
whose part before the first ``:`` is a family's prefix is that family's.
Every builder receives ``num_classes`` first and its own keyword arguments;
a keyword a builder does not declare is rejected here, with its name, before
anything is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from transferlens.errors import UserInputError

ModelBuilder = Callable[..., nn.Module]
FamilyBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}
_FAMILIES: dict[str, FamilyBuilder] = {}
# What a family's listing shows after its prefix (``hf:<model-id-or-folder>``).
_PLACEHOLDERS: dict[str, str] = {}
FAMILY_SEPARATOR = ":"
DEFAULT_PLACEHOLDER = "<name>"


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make ``builder(num_classes, **kwargs) -> nn.Module`` buildable as ``name``."""
    if FAMILY_SEPARATOR in name:
        raise ValueError(f"model names may not contain {FAMILY_SEPARATOR!r}: {name!r}")

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorate


def register_model_family(
    prefix: str, placeholder: str = DEFAULT_PLACEHOLDER
) -> Callable[[FamilyBuilder], FamilyBuilder]:
    """Decorator: ``builder(model_name, num_classes, **kwargs)`` serves every ``prefix:<name>``.

    ``placeholder`` is what listings show for the member (``hf:<model-id-or-folder>``).
    """

    def decorate(builder: FamilyBuilder) -> FamilyBuilder:
        _FAMILIES[prefix] = builder
        _PLACEHOLDERS[prefix] = placeholder
        return builder

    return decorate


def _load_builtin() -> None:
    # Importing the modules registers their builders (idempotent: Python caches imports).
    import transferlens.models.fixup  # noqa: F401
    import transferlens.models.hf_models  # noqa: F401
    import transferlens.models.timm_models  # noqa: F401
    import transferlens.models.torchvision_models  # noqa: F401


def family_pattern(prefix: str) -> str:
    """How a family is listed: ``timm:<name>``, ``hf:<model-id-or-folder>``."""
    return f"{prefix}{FAMILY_SEPARATOR}{_PLACEHOLDERS.get(prefix, DEFAULT_PLACEHOLDER)}"


def list_models() -> list[str]:
    """Registered model names, sorted, then each family as a pattern (``timm:<name>``),
    then the pattern of a user's own callable, ``module.path:Callable``.

    :func:`check_model_name` is the one check of a name.
    """
    from transferlens.models.user_models import PATTERN

    _load_builtin()
    return sorted(_BUILDERS) + [family_pattern(prefix) for prefix in list_families()] + [PATTERN]


def list_families() -> list[str]:
    """Prefixes of model families: ``"timm"`` builds ``"timm:<any timm model name>"``."""
    _load_builtin()
    return sorted(_FAMILIES)


def _unknown(name: str) -> UserInputError:
    return UserInputError(f"unknown model {name!r}; known: {', '.join(list_models())}")


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(f"num_classes must be a positive integer (got {num_classes!r})")
    return num_classes


def _check_kwargs(name: str, builder: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Reject keywords the builder does not declare (builders with ``**kwargs`` accept all)."""
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [
        key
        for key, p in parameters.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and key not in ("num_classes", "model_name")
    ]
    for key in kwargs:
        if key not in accepted:
            allowed = ", ".join(accepted) if accepted else "none"
            raise UserInputError(
                f"model {name!r}: unknown keyword argument {key!r} (accepted: {allowed})"
            )


def check_model_name(name: str) -> str:
    """``name`` if it is registered, names a member of a family (``timm:<name>``) or a
    callable by import path that imports (``mypkg.models:CifarResNet``); else
    ``ValueError`` on one line: the known names, or why the import path does not resolve
    (module or file not found, attribute missing, not callable). Spec validators report
    it with the key. Whether the callable returns an ``nn.Module`` is known only once it
    is built (:func:`build_model`)."""
    _load_builtin()
    if name in _BUILDERS:
        return name
    prefix, sep, member = name.partition(FAMILY_SEPARATOR)
    if sep and prefix in _FAMILIES:
        if not member:
            raise ValueError(str(_unknown(name)))
        return name
    if not sep:
        raise ValueError(str(_unknown(name)))
    from transferlens.models.user_models import resolve_callable

    try:
        resolve_callable(name)
    except UserInputError as error:
        raise ValueError(str(error)) from None
    return name


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with a head of ``num_classes`` outputs.

    ``name`` is a registered name, ``prefix:<member>`` of a family, or a user's
    callable by import path (:func:`~transferlens.models.user_models.build_user_model`;
    families take precedence). Raises :class:`UserInputError` for an unknown name
    (listing the known ones), an import path that does not resolve, an unknown keyword
    argument (naming it) or a bad value.
    """
    _load_builtin()
    num_classes = _check_num_classes(num_classes)
    if not isinstance(name, str) or not name:
        raise UserInputError(f"model name must be a non-empty string (got {name!r})")
    if FAMILY_SEPARATOR in name:
        prefix, _, member = name.partition(FAMILY_SEPARATOR)
        family = _FAMILIES.get(prefix)
        if family is None:
            from transferlens.models.user_models import build_user_model

            return build_user_model(name, num_classes, **kwargs)
        if not member:
            raise _unknown(name)
        _check_kwargs(name, family, kwargs)
        return family(member, num_classes, **kwargs)
    builder = _BUILDERS.get(name)
    if builder is None:
        raise _unknown(name)
    _check_kwargs(name, builder, kwargs)
    return builder(num_classes, **kwargs)
