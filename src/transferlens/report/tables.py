"""Reading a study's results tables for the report: columns checked, missing tables tolerated.

Every table the report reads is listed in :data:`TABLE_COLUMNS` with the columns it
needs (DESIGN.md's tables plus the three extra tables the report proposes, see
:mod:`transferlens.report`). A table that is absent is an analysis that was not run:
its section says so. A table that is present but malformed (not CSV, a needed column
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

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": (
        "run_id", "kind", "init", "target", "seed", "block_size", "pretrain_epoch", "epochs",
        "final_test_metric", "best_test_metric", "optimization_speed", "status",
    ),
    "reuse": (
        "target", "block_size", "metric_pt", "metric_rit", "relative_gap", "speed_pt", "speed_rit",
    ),
    "mistakes": (
        "target", "pair", "n", "both_right", "both_wrong", "only_first_wrong",
        "only_second_wrong", "kappa", "kappa_low", "kappa_high",
    ),
    "mistakes_examples": (
        "target", "pair", "cell", "index", "label", "pred_first", "pred_second",
    ),
    "cka": ("target", "pair", "layer", "cka", "cka_low", "cka_high"),
    "cka_matrix": ("target", "pair", "layer_a", "layer_b", "cka"),
    "distance": ("target", "pair", "module", "l2"),
    "interpolation": ("target", "pair", "lam", "loss", "metric"),
    "barriers": ("target", "pair", "loss_barrier", "metric_barrier"),
    "criticality": ("target", "init", "module", "rewind_metric", "criticality", "alpha", "sigma"),
    "criticality_path": ("target", "init", "path", "distance", "sigma", "metric"),
    "pretrain_checkpoints": ("target", "pretrain_epoch", "final_test_metric", "optimization_speed"),
}  # fmt: skip

# Columns holding names (kept as text even when they look like numbers).
_TEXT_COLUMNS = (
    "run_id", "kind", "init", "target", "pair", "layer", "layer_a", "layer_b", "module",
    "status", "path", "cell", "label", "pred_first", "pred_second",
)  # fmt: skip
# Integer columns that may be empty (block_size empty = unshuffled, 0 = pixel shuffle).
_NULLABLE_INT_COLUMNS = ("block_size", "pretrain_epoch", "seed", "epochs", "index", "n")

PAIRS = ("PT-PT", "PT-RIT", "RIT-RIT", "PT-P", "RIT-P")
INITS = ("PT", "RIT")


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
        return self.study_dir / "results"


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
        if column in _TEXT_COLUMNS:
            frame[column] = frame[column].astype("string")
        elif column not in _NULLABLE_INT_COLUMNS:
            try:
                frame[column] = pd.to_numeric(frame[column])
            except (ValueError, TypeError):
                raise UserInputError(f"{path}: column {column} must hold numbers") from None
    return frame


def read_study_json(study_dir: Path) -> dict[str, Any] | None:
    """``study.json`` as a mapping, or ``None`` when absent; UserInputError if not JSON."""
    path = study_dir / "study.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserInputError(f"{path}: not valid JSON") from None
    return data if isinstance(data, dict) else {"study": data}


def load_results(study_dir: str | Path) -> StudyResults:
    """Load every known table of ``study_dir/results`` (absent ones listed in ``missing``)."""
    root = Path(study_dir)
    results = StudyResults(study_dir=root, study=read_study_json(root))
    for name in TABLE_COLUMNS:
        frame = read_table(root / "results" / f"{name}.csv", name)
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


def main_target_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The P-T and RI-T runs of the headline comparison (Fig. 2).

    Target runs on unshuffled images; for P-T only those started from the last
    pre-training checkpoint used for that target (or with no checkpoint recorded),
    so that runs of the checkpoint study (Fig. 7) do not blur the comparison. When
    runs.csv has the study runner's ``groups`` column, its ``main`` group decides.
    """
    if "groups" in runs.columns and runs["groups"].notna().any():
        in_main = runs["groups"].fillna("").astype(str).str.split(";").apply(lambda g: "main" in g)
        return runs[in_main & (runs["kind"] == "target") & runs["init"].isin(INITS)]
    frame = runs[(runs["kind"] == "target") & runs["block_size"].isna()]
    frame = frame[frame["init"].isin(INITS)]
    keep = []
    for (_target, init), group in frame.groupby(["target", "init"], sort=False):
        if init == "PT" and group["pretrain_epoch"].notna().any():
            last = group["pretrain_epoch"].max()
            group = group[group["pretrain_epoch"].isna() | (group["pretrain_epoch"] == last)]
        keep.append(group)
    return pd.concat(keep) if keep else frame.iloc[0:0]


def _task_of_spec(spec: dict[str, Any]) -> str | None:
    for holder in (spec, spec.get("data") or {}, spec.get("train") or {}):
        if isinstance(holder, dict) and holder.get("task") in ("multiclass", "multilabel"):
            return str(holder["task"])
    return None


def target_tasks(results: StudyResults, targets: list[str]) -> dict[str, str]:
    """``multiclass`` (accuracy) or ``multilabel`` (mean ROC-AUC) per target.

    Read from a ``task`` key of the target's entry in ``study.json`` or of one of its
    runs' ``complete.json`` or ``spec.json`` (top level, ``data`` or ``train``);
    ``multiclass`` otherwise.
    """
    tasks = {target: "multiclass" for target in targets}
    entries = study_targets(results.study)
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("task") in ("multiclass", "multilabel"):
            name = next((entry[k] for k in _NAME_KEYS if k in entry), None)
            if name in tasks:
                tasks[str(name)] = entry["task"]
    runs = results.get("runs")
    if runs is None:
        return tasks
    for target in targets:
        # A few runs suffice: every run of a target has the same task.
        for run_id in runs.loc[runs["target"] == target, "run_id"].dropna().head(5):
            task = None
            for name in ("complete.json", "spec.json"):
                path = results.study_dir / "runs" / str(run_id) / name
                try:
                    task = task or _task_of_spec(json.loads(path.read_text(encoding="utf-8")))
                except (OSError, json.JSONDecodeError, AttributeError):
                    continue
            if task:
                tasks[target] = task
                break
    return tasks
