"""Where the numbers come from: the study spec, library versions, and every run with its
hash, status and timing.

The runs are read from ``results/runs.csv`` (what each run is) and
``results/provenance.csv`` (what its folder held: epochs logged, summed per-epoch
seconds, spec digest, completion), both written by the study layer.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import pandas as pd

from transferlens.report.formatting import block_label, is_missing

LIBRARIES = ("transferlens", "torch", "torchvision", "numpy", "pandas", "matplotlib", "jinja2")
RUN_COLUMNS = [
    "run id", "kind", "init", "target", "seed", "block size", "pre-training epoch", "status",
    "epochs logged", "train time", "spec sha256",
]  # fmt: skip


@dataclass
class Provenance:
    generated: str
    python: str
    platform: str
    versions: dict[str, str]
    study_spec: str | None
    runs: list[list[str]] = field(default_factory=list)
    total_seconds: float = 0.0


def library_versions() -> dict[str, str]:
    """Installed version of each library of :data:`LIBRARIES` (without importing them)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


@dataclass(frozen=True)
class _FolderFacts:
    """One row of provenance.csv: what a run's folder held."""

    epochs_logged: int = 0
    train_seconds: float = 0.0
    spec_sha256: str = "n/a"
    complete: bool = False


def _folder_facts(provenance: pd.DataFrame | None) -> dict[str, _FolderFacts]:
    """provenance.csv by run id (empty values read as "none logged")."""
    if provenance is None:
        return {}
    facts = {}
    for row in provenance.to_dict("records"):
        facts[str(row["run_id"])] = _FolderFacts(
            epochs_logged=0 if is_missing(row["epochs_logged"]) else int(row["epochs_logged"]),
            train_seconds=0.0 if is_missing(row["train_seconds"]) else float(row["train_seconds"]),
            spec_sha256=_text(row["spec_sha256"]) or "n/a",
            complete=bool(row["complete"]),
        )
    return facts


def _text(value: Any) -> str:
    if is_missing(value):
        return ""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def run_rows(
    runs: pd.DataFrame | None, provenance: pd.DataFrame | None
) -> tuple[list[list[str]], float]:
    """One row per run (runs.csv first, then run folders it does not list) and the total time.

    Train time is provenance.csv's ``train_seconds`` (the sum of the run's per-epoch
    seconds); a run it does not list shows no epochs and no time.
    """
    facts = _folder_facts(provenance)
    rows, total = [], 0.0
    for run in [] if runs is None else runs.to_dict("records"):
        run_id = str(run["run_id"])
        folder = facts.pop(run_id, _FolderFacts())
        total += folder.train_seconds
        status = _text(run.get("status")) or ("complete" if folder.complete else "unknown")
        block = "" if run.get("kind") == "source" else block_label(run.get("block_size"))
        described = [_text(run.get(key)) for key in ("kind", "init", "target", "seed")]
        pretrain_epoch = _text(run.get("pretrain_epoch"))
        rows.append([run_id, *described, block, pretrain_epoch, status, *_folder_cells(folder)])
    for run_id, folder in sorted(facts.items()):  # folders the plan no longer names
        total += folder.train_seconds
        status = "complete" if folder.complete else "incomplete (not in runs.csv)"
        kind = run_id.split("-", 1)[0]
        rows.append([run_id, kind, "", "", "", "", "", status, *_folder_cells(folder)])
    return rows, total


def _folder_cells(folder: _FolderFacts) -> list[str]:
    return [str(folder.epochs_logged), _duration(folder.train_seconds), folder.spec_sha256]


def collect_provenance(
    study: dict[str, Any] | None, runs: pd.DataFrame | None, provenance: pd.DataFrame | None
) -> Provenance:
    """The page's provenance from results/study.json, runs.csv and provenance.csv."""
    rows, total = run_rows(runs, provenance)
    return Provenance(
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        python=sys.version.split()[0],
        platform=platform.platform(),
        versions=library_versions(),
        study_spec=None
        if study is None
        else json.dumps(study, indent=2, sort_keys=False, default=str),
        runs=rows,
        total_seconds=total,
    )


def total_time(provenance: Provenance) -> str:
    return _duration(provenance.total_seconds)
