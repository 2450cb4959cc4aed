"""The HTML report of a study and the paper's findings decided from its numbers.

``build_report(study_dir)`` reads ``<study>/results/*.csv`` (DESIGN.md's tables),
``<study>/runs/<run_id>/{metrics.jsonl,spec.json}`` and ``<study>/study.json`` and
writes ``<study>/report/index.html`` with its PNG figures (atomically, as one
folder). ``compute_findings(results_dir)`` and ``findings_table(findings)`` give the
findings without the page (``transferlens demo`` prints the table).

Besides DESIGN.md's tables the report reads three more, all optional (a section
without its table says "not run"); their columns are :data:`EXTRA_TABLES`:

``cka_matrix.csv``
    target, pair, layer_a, layer_b, cka -- CKA between layer ``layer_a`` of the
    pair's first model and ``layer_b`` of its second (every combination of the
    layers of cka.csv), for the layer-by-layer heatmaps.
``criticality_path.csv``
    target, init, path, distance, sigma, metric -- conv1 only (paper Fig. 6):
    ``path`` is ``direct`` (theta0 + alpha (thetaf - theta0)) or ``checkpoints``
    (conv1 set to its value at each training checkpoint); ``distance`` the l2
    distance of that conv1 from its initial value theta0; ``sigma`` the std of the
    Gaussian noise added to conv1; ``metric`` the mean test metric over the noise
    samples (a fraction), every other module final.
``mistakes_examples.csv``
    target, pair, cell, index, label, pred_first, pred_second -- example test images
    of each cell of the 2 x 2 mistakes table: ``cell`` is ``only_first_wrong``,
    ``only_second_wrong`` or ``both_wrong``; ``index`` the position in the target's
    test split (what :func:`load_test_images` receives); ``label`` the true class,
    ``pred_first``/``pred_second`` the two models' predicted classes. For ``PT-RIT``,
    ``only_first_wrong`` is "P-T wrong, RI-T right". At most 12 per cell are shown.

Conventions read from other files: targets are ordered closest to the source first
by ``study.json`` ``targets`` (a list of names, or of mappings with ``name`` and an
optional ``closeness`` rank, 1 = closest; else the order of runs.csv); a target's
task (``multiclass`` -> accuracy in percent, ``multilabel`` -> ROC-AUC) is read from
a ``task`` key of that entry or of a run's ``spec.json`` (top level, ``data`` or
``train``). Train time in the provenance is the sum of ``seconds`` over a run's
metrics.jsonl records (the seconds each epoch took).
"""

from __future__ import annotations

import importlib
from typing import Any

from transferlens.report.tables import TABLE_COLUMNS

EXTRA_TABLES: dict[str, tuple[str, ...]] = {
    name: TABLE_COLUMNS[name] for name in ("cka_matrix", "criticality_path", "mistakes_examples")
}

_EXPORTS = {
    "build_report": "page",
    "Finding": "findings",
    "compute_findings": "findings",
    "findings_table": "findings",
    "load_test_images": "gallery",
    "ImagesUnavailable": "gallery",
    "load_results": "tables",
}

__all__ = sorted([*_EXPORTS, "EXTRA_TABLES", "TABLE_COLUMNS"])


def __getattr__(name: str) -> Any:
    # Lazy, so that ``transferlens demo`` can print findings without importing matplotlib.
    if name in _EXPORTS:
        module = importlib.import_module(f"transferlens.report.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'transferlens.report' has no attribute {name!r}")
