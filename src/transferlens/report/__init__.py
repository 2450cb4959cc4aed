"""The HTML report of a study and the paper's findings decided from its numbers.

The report reads ``<study>/results/`` and nothing else (its contract is
:mod:`transferlens.results`: the analysis tables, ``runs.csv``, ``epochs.csv``,
``provenance.csv``, ``targets.csv``, ``study.json`` and ``images/``), so a study whose
run folders are gone still renders. ``build_report(study_dir)`` writes
``<study>/report/index.html`` with its PNG figures (atomically, as one folder);
``compute_findings(results_dir)`` and ``findings_table(findings)`` give the findings
without the page (``transferlens demo`` prints the table).

How the report reads what the contract leaves open:

- Targets are ordered closest to the source first by ``study.json`` ``targets`` (a
  list of names, or of mappings with ``name`` or ``label`` and an optional
  ``closeness`` rank, 1 = closest), else by their first appearance in the tables
  (runs.csv first).
- A target's metric is printed as accuracy in percent (``multiclass``) or as mean
  ROC-AUC (``multilabel``), from ``targets.csv``; a target it does not list is
  ``multiclass``.
- ``criticality_path.csv`` (one unit, paper Fig. 6): ``path`` is ``direct``
  (theta0 + alpha (thetaf - theta0)) or ``checkpoints`` (the unit at each training
  checkpoint); ``distance`` is the l2 distance of that unit from theta0, ``sigma`` the
  std of the Gaussian noise added to it, ``metric`` the mean test metric over the noise
  samples (a fraction), every other unit final. The unit is the table's ``module``
  column if it has one, else ``study.json``'s ``analyses.criticality.path_module``,
  else the first unit of ``module_map.csv``, else ``conv1`` (studies written before the
  map, all ResNets).
- ``module_map.csv`` orders the units of the per-unit figures and tables, names their
  stages, and decides the "lower modules" of the rewinding finding (its ``lower``
  column: depth below 1/3); without it the units are the modules of ``criticality.csv``
  (else ``distance.csv``) in their order and the same rule picks the lower ones
  (:mod:`transferlens.report.units`). The page states the rule and its result.
- ``cka_layers.csv`` orders CKA's layers by depth, labels them with their stage and
  states how each output became features (``tokens=all``: ``[T, D]`` flattened);
  ``distance_stages.csv`` adds the per-stage distances. Without them the layers keep
  ``cka.csv``'s order and the per-stage view is left out.
- ``cka_matrix.csv``: CKA between layer ``layer_a`` of the pair's first model and
  ``layer_b`` of its second, for the layer-by-layer heatmaps.
- ``mistakes_examples.csv``: ``cell`` is ``only_first_wrong``, ``only_second_wrong``
  or ``both_wrong`` (for ``PT-RIT``, ``only_first_wrong`` is "P-T wrong, RI-T
  right"); ``index`` the position in the target's test split, whose image is
  ``images/<target>/<index>.png``. At most 12 per cell are shown, in a gallery that
  the page shows collapsed. The examples are the first seed pair's: the report names
  its runs from runs.csv's complete main runs, the lowest seeds
  (:mod:`transferlens.report.seed_pairs`).
- ``criticality.csv``'s ``network`` row (summed criticality, no rewound metric) is
  listed in the table and the criticality plot, not in the rewinding heatmap.
"""

from __future__ import annotations

from transferlens.report.findings import (
    Finding,
    compute_findings,
    findings_from_results,
    findings_table,
)
from transferlens.report.gallery import ImageLoader, ImagesUnavailable, load_test_images
from transferlens.report.page import build_report
from transferlens.report.tables import StudyResults, load_results

__all__ = [
    "Finding",
    "ImageLoader",
    "ImagesUnavailable",
    "StudyResults",
    "build_report",
    "compute_findings",
    "findings_from_results",
    "findings_table",
    "load_results",
    "load_test_images",
]
