"""One registry of data sets, built by name from a :class:`DataSpec`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transferlens.data.spec import DataSpec, DataSplits

Builder = Callable[["DataSpec"], "DataSplits"]
_BUILDERS: dict[str, Builder] = {}


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder(spec) -> DataSplits`` available as ``DataSpec(name=name)``."""

    def decorate(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        return builder

    return decorate


def _load_builtin() -> None:
    # Importing the modules registers their builders.
    import transferlens.data.builtin  # noqa: F401


def dataset_names() -> list[str]:
    _load_builtin()
    return sorted(_BUILDERS)


def build_data(spec: DataSpec) -> DataSplits:
    """Build the splits of ``spec`` (raises UserInputError for missing files or bad options)."""
    _load_builtin()
    return _BUILDERS[spec.name](spec)
