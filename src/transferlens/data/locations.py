"""Where data lives: the data root (spec or ``TRANSFERLENS_DATA``) and the cache folder.

The cache folder (``TRANSFERLENS_CACHE``, default ``~/.cache/transferlens``) holds
extracted archives and decoded image tensors; it is never inside the source tree.
"""

from __future__ import annotations

import os
from pathlib import Path

from transferlens.errors import UserInputError

DATA_ENV = "TRANSFERLENS_DATA"
CACHE_ENV = "TRANSFERLENS_CACHE"


def cache_dir(*parts: str) -> Path:
    """``$TRANSFERLENS_CACHE/<parts...>`` (default ``~/.cache/transferlens``), created."""
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "transferlens")
    folder = Path(base).expanduser().joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def data_root(root: str | None, dataset: str) -> Path:
    """The folder holding the real data sets: ``root`` if given, else ``$TRANSFERLENS_DATA``."""
    chosen = root or os.environ.get(DATA_ENV)
    if not chosen:
        raise UserInputError(
            f"{dataset}: no data folder given; set data.root in the spec (or --data-root) "
            f"or the environment variable {DATA_ENV}"
        )
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise UserInputError(
            f"{dataset}: data folder {folder} not found; set data.root in the spec "
            f"(or --data-root) or the environment variable {DATA_ENV}"
        )
    return folder
