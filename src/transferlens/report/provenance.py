"""Where the numbers come from: the study spec, library versions, and every run with its
hash, status and timing."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from transferlens.io import read_jsonl
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


def _run_folder_facts(run_dir: Path) -> tuple[int, float, str, bool]:
    """(epochs logged, summed per-epoch seconds, spec sha256 prefix, complete marker present)."""
    records = read_jsonl(run_dir / "metrics.jsonl") if run_dir.is_dir() else []
    seconds = sum(float(r.get("seconds") or 0.0) for r in records if isinstance(r, dict))
    spec = run_dir / "spec.json"
    digest = hashlib.sha256(spec.read_bytes()).hexdigest()[:12] if spec.is_file() else "n/a"
    return len(records), seconds, digest, (run_dir / "complete.json").is_file()


def _text(value: Any) -> str:
    if is_missing(value):
        return ""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def run_rows(study_dir: Path, runs: pd.DataFrame | None) -> tuple[list[list[str]], float]:
    """One row per run (runs.csv first, then run folders it does not list) and the total time.

    Train time is the sum of the per-epoch ``seconds`` of the run's metrics.jsonl.
    """
    rows, total = [], 0.0
    listed: set[str] = set()
    if runs is not None:
        for run in runs.to_dict("records"):
            run_id = str(run["run_id"])
            listed.add(run_id)
            epochs, seconds, digest, complete = _run_folder_facts(study_dir / "runs" / run_id)
            total += seconds
            status = _text(run.get("status")) or ("complete" if complete else "unknown")
            rows.append(
                [
                    run_id,
                    _text(run.get("kind")),
                    _text(run.get("init")),
                    _text(run.get("target")),
                    _text(run.get("seed")),
                    "" if run.get("kind") == "source" else block_label(run.get("block_size")),
                    _text(run.get("pretrain_epoch")),
                    status,
                    str(epochs),
                    _duration(seconds),
                    digest,
                ]
            )
    runs_dir = study_dir / "runs"
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    for folder in folders:
        if folder.name in listed:
            continue
        epochs, seconds, digest, complete = _run_folder_facts(folder)
        total += seconds
        status = "complete" if complete else "incomplete (not in runs.csv)"
        kind = folder.name.split("-", 1)[0]
        rows.append(
            [folder.name, kind, "", "", "", "", "", status, str(epochs), _duration(seconds), digest]
        )
    return rows, total


def collect_provenance(
    study_dir: Path, study: dict[str, Any] | None, runs: pd.DataFrame | None
) -> Provenance:
    rows, total = run_rows(study_dir, runs)
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
