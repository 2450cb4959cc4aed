"""The files of ``<study>/results/`` besides the analyses' tables (:mod:`transferlens.results`).

With runs.csv (:func:`~transferlens.study.runs_table.write_runs_table` calls
:func:`write_run_tables`): ``epochs.csv`` (every planned run's learning curve),
``provenance.csv`` (every run folder under ``runs/``), ``targets.csv`` (each target's
task) and a copy of ``study.json``, so that the report needs no run folder. After the
analyses: :func:`write_gallery_images`, the test images ``mistakes_examples.csv`` names.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from transferlens.io import atomic_write_bytes, atomic_write_text
from transferlens.results import TABLE_COLUMNS, image_path, table_path
from transferlens.study.plan import Plan, PlannedRun
from transferlens.study.store import StudyStore
from transferlens.train import run_dir as run_folder

SPEC_DIGITS = 12  # hex digits of a spec's SHA-256 shown in provenance


def write_table(store: StudyStore, name: str, rows: Iterable[dict[str, Any]]) -> Path:
    """``results/<name>.csv`` from ``rows`` with exactly the columns of TABLE_COLUMNS."""
    frame = pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS[name]))
    path = table_path(store.results_dir, name)
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def epoch_rows(plan: Plan, store: StudyStore) -> list[dict[str, Any]]:
    """One row per metrics record of every planned run (plan order, then epoch order)."""
    columns = TABLE_COLUMNS["epochs"][1:]
    return [
        {"run_id": run.run_id, **{column: record.get(column) for column in columns}}
        for run in plan
        for record in run_folder.read_metrics(store.run_dir(run.run_id))
    ]


def run_folders(plan: Plan, store: StudyStore) -> list[str]:
    """Every run folder under ``runs/``: the planned ones in plan order, then the rest sorted."""
    present = {path.name for path in store.runs_dir.iterdir() if path.is_dir()}
    planned = [run.run_id for run in plan if run.run_id in present]
    return planned + sorted(present - set(planned))


def provenance_rows(plan: Plan, store: StudyStore) -> list[dict[str, Any]]:
    """Where each run folder's numbers come from (results.py: ``provenance.csv``)."""
    if not store.runs_dir.is_dir():
        return []
    rows = []
    for run_id in run_folders(plan, store):
        folder = store.run_dir(run_id)
        records = run_folder.read_metrics(folder)
        digest = run_folder.spec_sha256(folder)
        rows.append(
            {
                "run_id": run_id,
                "epochs_logged": len(records),
                "train_seconds": sum(float(record.get("seconds") or 0.0) for record in records),
                "spec_sha256": digest[:SPEC_DIGITS] if digest else "",
                "complete": str(run_folder.is_complete(folder)).lower(),
            }
        )
    return rows


def target_rows(plan: Plan, store: StudyStore) -> list[dict[str, Any]]:
    """Each target's task, as its first complete run recorded it (empty: none complete yet)."""
    rows = []
    for target in plan.study.targets:
        task = ""
        for run in plan.select(kind="target", target=target.label):
            summary = store.summary(run.run_id)
            if summary and summary.get("task"):
                task = str(summary["task"])
                break
        rows.append({"target": target.label, "task": task})
    return rows


def copy_study_json(store: StudyStore) -> None:
    """``results/study.json``: the bytes of ``<study>/study.json`` (when it exists)."""
    if store.study_file.is_file():
        atomic_write_bytes(store.results_dir / store.study_file.name, store.study_file.read_bytes())


def write_run_tables(plan: Plan, store: StudyStore) -> None:
    """epochs.csv, provenance.csv, targets.csv and study.json under ``results/``."""
    write_table(store, "epochs", epoch_rows(plan, store))
    write_table(store, "provenance", provenance_rows(plan, store))
    write_table(store, "targets", target_rows(plan, store))
    copy_study_json(store)


def gallery_run(plan: Plan, target: str) -> PlannedRun | None:
    """The run whose data stands for ``target``'s test split (an unshuffled one first)."""
    runs = plan.select(kind="target", target=target)
    unshuffled = [run for run in runs if run.meta.block_size is None]
    return (unshuffled or runs or [None])[0]


def write_gallery_images(plan: Plan, store: StudyStore) -> int:
    """``results/images/<target>/<index>.png`` for every row of mistakes_examples.csv.

    Images already written are kept (a test image never changes); returns how many were
    written now. The pixels are the stored ones: un-normalised and unshuffled.
    """
    from PIL import Image

    from transferlens.data.raw_images import raw_test_images

    path = table_path(store.results_dir, "mistakes_examples")
    if not path.is_file():
        return 0
    try:
        examples = pd.read_csv(path, dtype={"target": str})
    except pd.errors.EmptyDataError:  # no single-label target: the analysis wrote no rows
        return 0
    written = 0
    for target, rows in examples.groupby("target", sort=False):
        wanted = sorted({int(index) for index in rows["index"]})
        missing = [i for i in wanted if not image_path(store.results_dir, target, i).is_file()]
        run = gallery_run(plan, target)
        if not missing or run is None:
            continue
        images = raw_test_images(run.spec.data, missing)
        for index, pixels in zip(missing, images):
            picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            atomic_write_bytes(image_path(store.results_dir, target, index), buffer.getvalue())
            written += 1
    return written
