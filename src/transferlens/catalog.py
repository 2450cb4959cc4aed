"""What can be named in a spec: registered models, data sets and analyses, one line each.

Read from the registries themselves (``transferlens list`` and the reference page), so a
newly registered model or data set is listed without more code. A description is the
first paragraph of the builder's docstring; for a data set whose module registers it
alone, the module docstring's (it describes the data set, where the builder's describes
the building), without a leading ``name:``.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from transferlens.docstrings import summary

Kind = Literal["models", "datasets", "analyses"]
KINDS: tuple[Kind, ...] = ("models", "datasets", "analyses")
PACKAGE = "transferlens."


@dataclass(frozen=True)
class Entry:
    """One registered name, what it is, and the object registered under it."""

    name: str
    description: str
    target: Any  # the builder (models, data sets) or the Analysis (analyses)

    @property
    def builtin(self) -> bool:
        """Registered by transferlens itself (not by a user's or a test's module)."""
        module = getattr(self.target, "__module__", "") or ""
        return module.startswith(PACKAGE)


def _model_builders() -> dict[str, Callable[..., Any]]:
    """Every model name (families by their pattern, ``hf:<model-id-or-folder>``) -> its
    builder."""
    from transferlens.models import list_models, registry

    list_models()  # loads the built-in models
    # The registry keeps its builders private; this read-only view is all we need.
    builders = dict(sorted(registry._BUILDERS.items()))
    for prefix, builder in sorted(registry._FAMILIES.items()):
        builders[registry.family_pattern(prefix)] = builder
    return builders


def models(builtin_only: bool = False) -> list[Entry]:
    """Registered models, names sorted, then the families (``timm:<name>``), then a
    user's own callable by import path (``module.path:Callable``)."""
    from transferlens.models import user_models

    entries = [Entry(name, summary(b), b) for name, b in _model_builders().items()]
    own = Entry(user_models.PATTERN, user_models.DESCRIPTION, user_models.build_user_model)
    return [entry for entry in [*entries, own] if entry.builtin or not builtin_only]


def _dataset_builders() -> dict[str, Callable[..., Any]]:
    from transferlens.data import dataset_names, registry

    return {name: registry._BUILDERS[name] for name in dataset_names()}


def _without_name(name: str, text: str) -> str:
    """``text`` without a leading ``name:`` (module docstrings start so)."""
    prefix = f"{name}:"
    if not text.startswith(prefix):
        return text
    rest = text[len(prefix) :].strip()
    return rest[:1].upper() + rest[1:]


def dataset_module(builder: Callable[..., Any]) -> Any:
    """The module that defines a data set's builder."""
    return sys.modules[builder.__module__]


def datasets(builtin_only: bool = False) -> list[Entry]:
    """Registered data sets, names sorted."""
    builders = _dataset_builders()
    modules = [builder.__module__ for builder in builders.values()]
    entries = []
    for name, builder in builders.items():
        alone = modules.count(builder.__module__) == 1
        text = summary(dataset_module(builder)) if alone else ""
        entries.append(Entry(name, _without_name(name, text or summary(builder)), builder))
    return [entry for entry in entries if entry.builtin or not builtin_only]


def analyses() -> list[Entry]:
    """The analyses a study can run, in the order it runs them (study YAML names)."""
    from transferlens.study.analyses.registry import ANALYSES

    return [Entry(name, analysis.title, analysis.settings) for name, analysis in ANALYSES.items()]


def entries(kind: Kind) -> list[Entry]:
    """The entries of ``kind`` (one of :data:`KINDS`)."""
    listing: dict[str, Callable[[], list[Entry]]] = {
        "models": models,
        "datasets": datasets,
        "analyses": analyses,
    }
    return listing[kind]()


def model_keywords(builder: Callable[..., Any]) -> list[str]:
    """A model builder's keyword arguments as ``name=default`` (``**kwargs`` as is)."""
    shown = []
    for key, parameter in inspect.signature(builder).parameters.items():
        if key in ("num_classes", "model_name"):
            continue
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            shown.append(f"**{key}")
        elif parameter.default is inspect.Parameter.empty:
            shown.append(key)
        else:
            shown.append(f"{key}={parameter.default!r}")
    return shown
