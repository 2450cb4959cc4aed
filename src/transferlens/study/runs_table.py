"""``results/runs.csv``: one row per planned run, its place in the study and its results.

Columns (DESIGN.md): run_id, kind (``source`` | ``target``), init (empty for the
source, ``PT`` or ``RIT``), target, seed, block_size (integer, ``0`` = pixel shuffle,
empty = unshuffled), pretrain_epoch (the epoch of P a P-T run started from; empty
otherwise), epochs, final_test_metric, best_test_metric, optimization_speed (mean
train metric in evaluation mode over the trained epochs, from complete.json), status
(complete | running | pending | failed); then extra columns: shuffle_seed, augment,
groups (``;``-joined: main, block_shuffle, pretrain_checkpoints, source), error; then
final_test_metric_low, final_test_metric_high (95% bootstrap over the test examples of
the final evaluation) and optimization_speed_low, optimization_speed_high (the same over
the train-eval subset, one resample of its examples for every epoch), from complete.json
(:mod:`transferlens.train.intervals`; empty for a run trained before they were kept, and
none for best_test_metric, a maximum over epochs chosen on the same test examples).
Written atomically and regenerated from the run folders whenever runs finish, together
with the other per-run files of ``results/`` (:mod:`transferlens.study.results_files`).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from transferlens.io import atomic_write_text
from transferlens.results import TABLE_COLUMNS, table_path
from transferlens.study.plan import Plan
from transferlens.study.results_files import write_run_tables
from transferlens.study.store import StudyStore
from transferlens.train.intervals import INTERVAL_FIELDS

COLUMNS = TABLE_COLUMNS["runs"]
EXTRA_COLUMNS = ("shuffle_seed", "augment", "groups", "error")
INTERVAL_COLUMNS = INTERVAL_FIELDS  # after the others: the table convention adds at the end


def _blank(value: Any) -> Any:
    return "" if value is None else value


def run_rows(plan: Plan, store: StudyStore) -> list[dict[str, Any]]:
    """The rows of runs.csv, in plan order."""
    rows = []
    for run in plan:
        meta = run.meta
        summary = store.summary(run.run_id) or {}
        state = store.state(run.run_id)
        failure = store.failure(run.run_id) if state == "failed" else None
        rows.append(
            {
                "run_id": run.run_id,
                "kind": meta.kind,
                "init": meta.init,
                "target": meta.target,
                "seed": meta.seed,
                "block_size": _blank(meta.block_size),
                "pretrain_epoch": _blank(meta.pretrain_epoch),
                "epochs": run.epochs,
                "final_test_metric": _blank(summary.get("final_test_metric")),
                "best_test_metric": _blank(summary.get("best_test_metric")),
                "optimization_speed": _blank(summary.get("optimization_speed")),
                "status": state,
                "shuffle_seed": _blank(meta.shuffle_seed),
                "augment": str(meta.augment).lower(),
                "groups": ";".join(meta.groups),
                "error": (failure or {}).get("error", ""),
                **{column: _blank(summary.get(column)) for column in INTERVAL_COLUMNS},
            }
        )
    return rows


def write_runs_table(plan: Plan, store: StudyStore) -> str:
    """Write ``<study>/results/runs.csv`` atomically, then epochs.csv, provenance.csv,
    targets.csv and study.json (:func:`write_run_tables`); returns runs.csv's path."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=COLUMNS + EXTRA_COLUMNS + INTERVAL_COLUMNS, lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(run_rows(plan, store))
    path = table_path(store.results_dir, "runs")
    atomic_write_text(path, buffer.getvalue())
    write_run_tables(plan, store)
    return str(path)
