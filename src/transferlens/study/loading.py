"""Loading a study file: validation, the data folder, and the paths it needs.

:func:`load_study` runs every check before any work starts (pydantic's types and
unknown keys, then :func:`~transferlens.study.spec.check_study`, then the data folders
and the weights file, which must also load and fit the model). Relative paths
(``source.weights``, ``data_root``) are resolved against the current folder; a data
set's relative ``root`` joins the data folder (``--data-root``, else the study's
``data_root``, else ``$TRANSFERLENS_DATA``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transferlens.data.spec import DataSpec
from transferlens.errors import UserInputError
from transferlens.study.spec import DATA_ROOT_ENV, GENERATED_DATASETS, StudySpec, check_study
from transferlens.validation import read_yaml, validate


def resolve_data_root(study: StudySpec, data_root: str | os.PathLike | None) -> str | None:
    """The data folder: ``--data-root``, else the study's ``data_root``, else $TRANSFERLENS_DATA."""
    chosen = data_root or study.data_root or os.environ.get(DATA_ROOT_ENV)
    return str(Path(chosen).expanduser().resolve()) if chosen else None


def _with_data_root(data: DataSpec, root: str | None) -> DataSpec:
    if data.name in GENERATED_DATASETS:
        return data
    if data.root is None:
        return data.model_copy(update={"root": root}) if root else data
    path = Path(data.root).expanduser()
    if not path.is_absolute() and root:
        path = Path(root) / path
    return data.model_copy(update={"root": str(path.resolve())})


def apply_data_root(study: StudySpec, data_root: str | os.PathLike | None) -> StudySpec:
    """Fill ``root`` of every real data set from the data folder (relative roots join it)."""
    root = resolve_data_root(study, data_root)
    source = study.source
    if source.data is not None:
        source = source.model_copy(update={"data": _with_data_root(source.data, root)})
    targets = [
        target.model_copy(update={"data": _with_data_root(target.data, root)})
        for target in study.targets
    ]
    return study.model_copy(update={"source": source, "targets": targets, "data_root": root})


def data_entries(study: StudySpec) -> list[tuple[str, DataSpec]]:
    """Every data set of the study with its key path (``source.data``, ``targets.0.data``)."""
    entries = [("source.data", study.source.data)] if study.source.data is not None else []
    entries += [(f"targets.{i}.data", t.data) for i, t in enumerate(study.targets)]
    return entries


def path_problems(study: StudySpec, source: str) -> list[str]:
    """One message per missing data folder or weights file (empty when all exist)."""
    problems = []
    for key, data in data_entries(study):
        if data.name in GENERATED_DATASETS:
            continue
        if data.root is None:
            problems.append(
                f"{source}: {key}.root: data set {data.name!r} needs a data folder; set "
                f"data_root in the study, --data-root or ${DATA_ROOT_ENV}"
            )
        elif not Path(data.root).is_dir():
            hint = (
                ""
                if study.data_root
                else f" (relative roots join data_root, --data-root or ${DATA_ROOT_ENV})"
            )
            problems.append(f"{source}: {key}.root: data folder {data.root} not found{hint}")
    weights = study.source.weights
    if weights is not None and not Path(weights).is_file():
        problems.append(f"{source}: source.weights: file {weights} not found")
    return problems


def check_weights_source(study: StudySpec, source: str) -> None:
    """A weights file named as the source (``source.weights``), when it exists, must load
    (``weights_only=True``) and fit the study's model: checked before any run trains,
    not when the first P-T run starts."""
    from transferlens.models.weights import check_weights_file

    weights = study.source.weights
    if weights is None or not Path(weights).is_file():
        return  # absent: a path problem (path_problems)
    try:
        check_weights_file(weights, study.model.name, study.model.kwargs, study.model.modules)
    except UserInputError as error:
        raise UserInputError(f"{source}: source.weights: {error}") from None


def check_paths(study: StudySpec, source: str) -> None:
    """Raise for the first missing data folder or weights file, or a weights file that
    does not fit the model."""
    problems = path_problems(study, source)
    if problems:
        raise UserInputError(problems[0])
    check_weights_source(study, source)


def parse_study(
    data: dict[str, Any],
    source: str,
    *,
    data_root: str | os.PathLike | None = None,
    require_paths: bool = True,
) -> StudySpec:
    """Validate a study mapping completely (see :func:`load_study`)."""
    study = validate(StudySpec, data, source)
    check_study(study, source)
    if study.source.weights is not None:
        weights = str(Path(study.source.weights).expanduser().resolve())
        study = study.model_copy(
            update={"source": study.source.model_copy(update={"weights": weights})}
        )
    study = apply_data_root(study, data_root)
    if require_paths:
        check_paths(study, source)
    return study


def load_study(
    path: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    require_paths: bool = True,
) -> StudySpec:
    """Read and validate a study YAML file before any work starts.

    Relative paths (``source.weights``, ``data_root``) are resolved against the
    current folder; a data set's relative ``root`` joins the data folder. With
    ``require_paths=False`` (planning) missing data folders are not errors.
    """
    return parse_study(read_yaml(path), str(path), data_root=data_root, require_paths=require_paths)


def default_output(study: StudySpec) -> Path:
    """Where the study's folder goes unless ``--out`` says otherwise."""
    return Path(study.output) if study.output else Path("runs") / study.name
