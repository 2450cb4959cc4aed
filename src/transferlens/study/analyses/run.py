"""``run_analyses(plan, store)``: every requested analysis of a finished study -> its tables.

Called by the runner once every training run is complete. The global RNG is seeded
once, then the requested analyses run in the registry's order (:data:`ANALYSES`),
each writing its tables atomically under ``<study>/results/``. Before them,
``module_map.csv`` records the study's module map (the units every analysis reports,
:attr:`StudyContext.module_map`) once a main run is complete; the test images the
mistakes gallery shows are exported last, after ``findings.csv`` (the findings decided
from the tables). An analysis whose inputs (its settings
and the complete runs it reads) have not changed since its tables were written is skipped
(``results/analyses_manifest.json``; the runs an analysis of models reads are P and the
main runs), so a re-run is cheap.

Progress: ``progress(line)`` hears each analysis start and end (``[analysis 7/7]
criticality ...``); ``step(line)`` hears where a long one is (``[analysis 7/7]
criticality: real PT module 3/6 conv1``), from adapters that take a ``progress``
keyword (the others run without one). Progress never changes what is computed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from transferlens.io import atomic_write_json, atomic_write_text
from transferlens.results import RESULTS_DIR, table_path
from transferlens.study.analyses.context import StudyContext
from transferlens.study.analyses.registry import ANALYSES
from transferlens.study.analyses.settings import AnalysisSettings

if TYPE_CHECKING:  # the study's modules import the analyses registry: no cycle at run time
    from transferlens.study.plan import Plan
    from transferlens.study.store import StudyStore

MANIFEST = "analyses_manifest.json"

# Leading columns of each table (a prefix of results.TABLE_COLUMNS); the other columns
# follow in the order the analysis produced them.
LEADING = {
    "reuse": ("target", "block_size"),
    "pretrain_checkpoints": ("target", "pretrain_epoch"),
    "mistakes": ("target", "pair"),
    "mistakes_examples": ("target", "pair", "cell"),
    "cka": ("target", "pair", "layer"),
    "cka_matrix": ("target", "pair", "layer_a", "layer_b"),
    "distance": ("target", "pair", "module"),
    "distance_stages": ("target", "pair", "stage"),
    "interpolation": ("target", "pair", "lam"),
    "barriers": ("target", "pair"),
    "criticality": ("target", "init", "module"),
    "criticality_path": ("target", "init", "path"),
    "rewinding": ("target", "init", "seed", "module"),
    "mistakes_pairs": ("target", "pair", "first_seed", "second_seed"),
    "cka_pairs": ("target", "pair", "first_seed", "second_seed", "layer"),
    "distance_pairs": ("target", "pair", "first_seed", "second_seed", "module"),
    "barriers_pairs": ("target", "pair", "align", "repair", "first_seed", "second_seed"),
}


def ordered(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with table ``name``'s leading columns first."""
    leading = [column for column in LEADING.get(name, ()) if column in frame.columns]
    return frame[leading + [column for column in frame.columns if column not in leading]]


def settings_payload(settings: AnalysisSettings) -> dict[str, Any]:
    """The settings as the manifest hashes them: every field, defaults included."""
    return settings.model_dump(mode="json")


def fingerprint(context: StudyContext, name: str, settings: AnalysisSettings) -> str:
    """Hash of what an analysis reads: its settings and the finished runs it reads.

    An analysis of ``runs.csv`` reads every complete run; one that loads models reads P
    and the main runs only (:meth:`StudyContext.model_runs`), so a sweep run finishing
    later (block shuffling, pre-training checkpoints) does not recompute it.
    """
    if ANALYSES[name].reads_runs_table:
        runs = sorted(run.run_id for run in context.plan if context.store.is_complete(run.run_id))
    else:
        runs = context.model_runs()
    payload = json.dumps(
        {"name": name, "settings": settings_payload(settings), "runs": runs}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def requested_analyses(plan: Plan) -> list[tuple[str, AnalysisSettings]]:
    """The study's analyses with their settings, in the registry's (run) order."""
    given = plan.study.analyses
    return [(name, given[name]) for name in ANALYSES if name in given]


def write_module_map(context: StudyContext, results_dir: Path) -> None:
    """``results/module_map.csv`` (unit, stage, depth, lower, members) when a main run is
    complete; the report reads the units and the "lower" ones from it."""
    if context.module_map is None:
        return
    frame = context.module_map.to_frame()
    atomic_write_text(table_path(results_dir, "module_map"), frame.to_csv(index=False))


def run_analyses(
    plan: Plan,
    store: StudyStore,
    progress: Callable[[str], None] | None = None,
    step: Callable[[str], None] | None = None,
) -> None:
    """Write every requested analysis's tables under ``<study>/results/`` (module docstring).

    ``step`` defaults to ``progress``.
    """
    from transferlens.study.progress import prefixed
    from transferlens.study.results_files import write_gallery_images
    from transferlens.study.runs_table import write_runs_table

    step = step or progress
    requested = requested_analyses(plan)
    write_runs_table(plan, store)
    context = StudyContext(plan, store)
    results_dir = Path(store.results_dir)
    manifest_path = results_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    write_module_map(context, results_dir)
    torch.manual_seed(0)  # analyses draw their own seeded noise; this fixes anything else
    for number, (name, settings) in enumerate(requested, 1):
        stamp = fingerprint(context, name, settings)
        done = manifest.get(name, {})
        # What it wrote last time, and every table this version writes (an older version
        # may have written fewer: then it is recomputed once).
        expected = set(done.get("tables", [])) | set(ANALYSES[name].tables)
        written = [table_path(results_dir, table) for table in sorted(expected)]
        if done.get("fingerprint") == stamp and all(path.exists() for path in written):
            continue
        prefix = f"[analysis {number}/{len(requested)}] {name}"
        if progress:
            progress(f"{prefix} ...")
        started = time.perf_counter()
        adapter = ANALYSES[name].adapter
        steps = prefixed(step, f"{prefix}: ") if step is not None else None
        tables = adapter(context, settings, progress=steps)
        for table, frame in tables.items():
            atomic_write_text(
                table_path(results_dir, table), ordered(table, frame).to_csv(index=False)
            )
        manifest[name] = {"fingerprint": stamp, "tables": sorted(tables)}
        atomic_write_json(manifest_path, manifest)
        if progress:
            seconds = time.perf_counter() - started
            progress(f"{prefix} done in {seconds:.0f} s")
    write_findings(store.root)
    write_gallery_images(plan, store)


def write_findings(study_dir: Path) -> None:
    """``results/findings.csv``: the paper's findings decided from the tables just
    written (:func:`transferlens.report.findings.findings_frame`, one row per tested
    part), so that the verdicts and their numbers are results like any other."""
    from transferlens.report.findings import compute_findings, findings_frame
    from transferlens.report.tables import load_results

    results = load_results(study_dir)
    if not results.tables:
        return
    frame = findings_frame(compute_findings(study_dir))
    atomic_write_text(
        table_path(Path(study_dir) / RESULTS_DIR, "findings"), frame.to_csv(index=False)
    )
