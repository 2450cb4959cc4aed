"""Reading ``<study>/results/`` for the report: columns checked, missing tables tolerated.

The folder's contract (table names, their columns, ``study.json``) is
:mod:`transferlens.results`; this module only reads it, with dtypes: names stay text
even when they look like numbers, integer columns that may be empty are ``Int64``,
``complete`` is boolean. A table that is absent is an analysis that was not run: its
section says so. A table that is present but malformed (not CSV, a needed column
missing) is bad input and raises :class:`UserInputError` naming the file and column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from transferlens.errors import UserInputError
from transferlens.results import RESULTS_DIR, STUDY_JSON, TABLE_COLUMNS, table_path

# Columns holding names (kept as text even when they look like numbers: a spec digest
# can be all digits).
_TEXT_COLUMNS = (
    "run_id", "kind", "init", "target", "pair", "layer", "layer_a", "layer_b", "module",
    "status", "path", "cell", "label", "pred_first", "pred_second", "spec_sha256", "task",
    "unit", "stage", "members", "shape", "reduction", "align", "finding", "statement",
    "verdict", "part", "part_verdict", "statistic", "runs", "rule",
)  # fmt: skip
# Integer columns that may be empty (block_size empty = unshuffled, 0 = pixel shuffle).
_NULLABLE_INT_COLUMNS = (
    "block_size", "pretrain_epoch", "seed", "epochs", "index", "n", "epoch", "epochs_logged",
    "features",
)  # fmt: skip
_BOOLEAN_COLUMNS = ("complete", "lower", "repair")
_BOOLEAN_TEXT = {"true": True, "1": True, "false": False, "0": False}
TASKS = ("multiclass", "multilabel")


@dataclass
class StudyResults:
    """The tables of one study (name -> frame) and the names of those that are absent."""

    study_dir: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    study: dict[str, Any] | None = None

    def get(self, name: str) -> pd.DataFrame | None:
        """The table ``name`` or ``None`` when it was not run (absent or without rows)."""
        return self.tables.get(name)

    @property
    def results_dir(self) -> Path:
        return self.study_dir / RESULTS_DIR


def read_table(path: Path, name: str) -> pd.DataFrame | None:
    """Read ``results/<name>.csv``; ``None`` if absent, empty or header-only; UserInputError
    if malformed."""
    if not path.is_file():
        return None
    needed = TABLE_COLUMNS[name]
    try:
        header = pd.read_csv(path, nrows=0)
        dtypes = {column: "string" for column in _TEXT_COLUMNS if column in header.columns}
        frame = pd.read_csv(path, dtype=dtypes, keep_default_na=True)
    except pd.errors.EmptyDataError:
        return None  # an analysis with nothing to report writes an empty file
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise UserInputError(f"{path}: not a readable CSV table ({first_line})") from None
    absent = [column for column in needed if column not in frame.columns]
    if absent:
        raise UserInputError(f"{path}: missing column(s) {', '.join(absent)}")
    if frame.empty:
        return None
    for column in _NULLABLE_INT_COLUMNS:
        if column in needed:
            try:
                frame[column] = pd.to_numeric(frame[column]).astype("Int64")
            except (ValueError, TypeError):
                raise UserInputError(f"{path}: column {column} must hold integers") from None
    for column in needed:  # extra columns (e.g. the runner's groups, error) are kept as read
        if column in _BOOLEAN_COLUMNS:
            frame[column] = _booleans(frame[column], path, column)
        elif column in _TEXT_COLUMNS:
            frame[column] = frame[column].astype("string")
        elif column not in _NULLABLE_INT_COLUMNS:
            try:
                frame[column] = pd.to_numeric(frame[column])
            except (ValueError, TypeError):
                raise UserInputError(f"{path}: column {column} must hold numbers") from None
    return frame


def _booleans(values: pd.Series, path: Path, column: str) -> pd.Series:
    """``True``/``False`` (or 1/0, any case) as a boolean column; UserInputError otherwise."""
    if values.dtype == bool:
        return values
    mapped = values.astype("string").str.strip().str.lower().map(_BOOLEAN_TEXT)
    if mapped.isna().any():
        raise UserInputError(f"{path}: column {column} must hold true or false")
    return mapped.astype(bool)


def read_study_json(results_dir: Path) -> dict[str, Any] | None:
    """``results/study.json`` as a mapping, or ``None`` when absent; UserInputError if not JSON."""
    path = results_dir / STUDY_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserInputError(f"{path}: not valid JSON") from None
    return data if isinstance(data, dict) else {"study": data}


def load_results(study_dir: str | Path) -> StudyResults:
    """Load ``study.json`` and every table of ``<study_dir>/results/`` (absent ones listed in
    ``missing``); nothing outside ``results/`` is read."""
    root = Path(study_dir)
    results = StudyResults(study_dir=root)
    results.study = read_study_json(results.results_dir)
    for name in TABLE_COLUMNS:
        frame = read_table(table_path(results.results_dir, name), name)
        if frame is None:
            results.missing.append(name)
        else:
            results.tables[name] = frame
    return results


_NAME_KEYS = ("label", "name", "target")


def study_targets(study: dict[str, Any] | None) -> Any:
    """The ``targets`` of study.json, whether the spec is its top level or under ``study``."""
    if not isinstance(study, dict):
        return None
    inner = study.get("study")
    if isinstance(inner, dict) and "targets" in inner:
        return inner["targets"]
    return study.get("targets")


def _target_entries(study: dict[str, Any] | None) -> list[tuple[str, float | None]]:
    """(name, closeness rank) of each target listed in the study spec, in listed order."""
    targets = study_targets(study)
    entries: list[tuple[str, float | None]] = []
    if isinstance(targets, dict):
        targets = [
            {"name": key, **(value if isinstance(value, dict) else {})}
            for key, value in targets.items()
        ]
    if not isinstance(targets, list):
        return []
    for item in targets:
        if isinstance(item, str):
            entries.append((item, None))
        elif isinstance(item, dict):
            name = next((item[key] for key in _NAME_KEYS if key in item), None)
            if name is not None:
                rank = item.get("closeness")
                entries.append((str(name), float(rank) if isinstance(rank, int | float) else None))
    return entries


def target_order(study: dict[str, Any] | None, frames: Iterable[pd.DataFrame | None]) -> list[str]:
    """Targets from the closest to the source to the farthest.

    The study spec decides: its ``targets`` (top level or under ``study``, as the study
    runner writes study.json; a list of names or of mappings with a ``label`` or
    ``name``) in listed order, re-sorted by ``closeness`` (1 = closest) when every
    entry has one. Targets found only in the tables follow in order of first
    appearance (``runs.csv`` first). No domain name is special.
    """
    entries = _target_entries(study)
    if entries and all(rank is not None for _, rank in entries):
        entries = sorted(entries, key=lambda entry: entry[1])
    order = [name for name, _ in entries]
    seen_in_tables: list[str] = []
    for frame in frames:
        if frame is None or "target" not in frame.columns:
            continue
        if "kind" in frame.columns:  # runs.csv: the source run's "target" is no target
            frame = frame[frame["kind"] != "source"]
        for name in frame["target"].dropna():
            if name not in seen_in_tables:
                seen_in_tables.append(str(name))
    present = [name for name in order if name in seen_in_tables]
    return present + [name for name in seen_in_tables if name not in present]


def ordered_targets(results: StudyResults) -> list[str]:
    """:func:`target_order` over every loaded table, runs.csv first."""
    names = ["runs", *[name for name in results.tables if name != "runs"]]
    return target_order(results.study, [results.get(name) for name in names])


def target_tasks(results: StudyResults, targets: list[str]) -> dict[str, str]:
    """``multiclass`` (accuracy) or ``multilabel`` (mean ROC-AUC) per target, from
    ``targets.csv``; ``multiclass`` for a target it does not list or whose task is empty
    (no run of it finished yet), and when the table is absent."""
    tasks = {target: "multiclass" for target in targets}
    table = results.get("targets")
    for target, task in [] if table is None else zip(table["target"], table["task"]):
        if pd.isna(task):
            continue
        if task not in TASKS:
            path = table_path(results.results_dir, "targets")
            raise UserInputError(f"{path}: task {task!r} of {target} is not one of {TASKS}")
        if target in tasks:
            tasks[str(target)] = str(task)
    return tasks
