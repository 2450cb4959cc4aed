"""The ``<study>/results/`` folder: the one contract between the study layer and the report.

The study layer (:mod:`transferlens.study`) is the only writer of this folder; the
report (:mod:`transferlens.report`) is its only reader besides the user, and it needs
nothing else: a study folder whose ``runs/`` has been deleted still renders. What is
in it:

``<table>.csv``
    one tidy table per analysis (DESIGN.md), with at least the columns of
    :data:`TABLE_COLUMNS`; analyses may add columns after these.
``runs.csv``
    one row per planned run (:data:`TABLE_COLUMNS` ``["runs"]``) and, after those,
    ``shuffle_seed, augment, groups, error``; ``groups`` is ``;``-joined group names
    (``source``, ``main``, ``block_shuffle``, ``pretrain_checkpoints``). Then
    ``final_test_metric_low/high`` (bootstrap over the final evaluation's test examples)
    and ``optimization_speed_low/high`` (over the train-eval subset, the same resample
    of its examples in every epoch), empty for runs trained before they were kept;
    ``best_test_metric`` has none (:mod:`transferlens.train.intervals` says why).
``epochs.csv``
    run_id, epoch, test_metric, test_loss, train_metric, train_loss, seconds: one row
    per epoch record of every run (the learning curves).
``provenance.csv``
    run_id, epochs_logged, train_seconds (the sum of the per-epoch seconds),
    spec_sha256 (the first 12 hex digits of the run's spec file), complete: one row
    per run folder, including folders the current plan no longer names.
``targets.csv``
    target, task (``multiclass`` -> accuracy, ``multilabel`` -> mean ROC-AUC), in the
    study's order of targets.
``module_map.csv``
    unit, stage, depth, lower, members: the study architecture's module map
    (:mod:`transferlens.models.module_map`), one row per unit from input to output;
    ``lower`` marks the paper's "lower modules" (depth below :data:`LOWER_DEPTH`).
``cka_layers.csv``
    layer, stage, depth, shape, reduction, features: what each compared CKA layer is
    (its unit's stage and depth, its per-example output shape, how that output became
    features, e.g. ``tokens=all``, and how many).
``cka.csv`` / ``cka_pairs.csv``
    ``cka.csv`` adds, after its columns, ``cka_p`` (permutation p-value of the mean over
    seed pairs, rows permuted within each batch; NaN with ``n_permutations: 0``),
    ``cka_seeds_low, cka_seeds_high`` (across seed pairs) and ``n_pairs``.
    ``cka_pairs.csv``: each seed pair's CKA with its bootstrap interval over batches and
    its ``cka_p`` (an empty seed is the source model P).
``cka_matrix.csv`` / ``cka_matrix_pairs.csv``
    ``cka_matrix.csv``: every layer (``layer_a``) of the pair's first models against
    every layer (``layer_b``) of its second, the mean over seed pairs with
    ``cka_low, cka_high`` (bootstrap over batches) and, after its columns,
    ``cka_seeds_low, cka_seeds_high`` (across seed pairs) and ``n_pairs``.
    ``cka_matrix_pairs.csv``: each seed pair's matrix with its bootstrap interval.
``mistakes.csv`` / ``mistakes_pairs.csv``
    ``mistakes.csv`` adds, after its columns, ``kappa_max`` (the largest kappa the two
    accuracies allow, Geirhos et al. 2020), ``kappa_ratio`` (kappa / kappa_max),
    ``kappa_ratio_low/high`` (test-set bootstrap), ``kappa_seeds_low/high``,
    ``kappa_ratio_seeds_low/high`` (across seed pairs) and ``n_pairs``; its values are
    the mean over seed pairs. ``mistakes_pairs.csv``: each seed pair's counts,
    accuracies, kappa, kappa_max and kappa_ratio with their test-set intervals.
``rewinding.csv``
    target, init, seed, module, rewind_metric, rewind_metric_low, rewind_metric_high:
    the test metric with one unit rewound to its initial value, for every seed of every
    main P-T and RI-T run, with its bootstrap interval over the test set
    (``criticality.csv`` holds the first seed's, beside its criticality).
``criticality.csv`` / ``criticality_path.csv``
    ``criticality.csv``: after ``resolved, rewind_metric_low, rewind_metric_high,
    epsilon, seed``, ``criticality_low, criticality_high``: the bootstrap interval over
    the training examples searched, the noise draws fixed (``inf``: resamples with no
    resolved minimiser on the small-sigma side; the network row from the summed
    resamples); one block of rows per seed searched. ``criticality_path.csv`` adds
    ``loss_low, loss_high, metric_low, metric_high`` (over the test examples) after
    its columns.
``distance_stages.csv``
    target, pair, stage, l2: the distance of each stage, ``sqrt`` of the sum of its
    units' squared l2 in ``distance.csv``.
``distance_pairs.csv``
    target, pair, first_seed, second_seed, module, l2: ``distance.csv`` for each seed
    pair (a NaN seed is the source model P); ``distance.csv`` and
    ``distance_stages.csv`` add ``l2_seeds_low, l2_seeds_high, n_pairs`` (the interval
    across seed pairs) after their columns.
``barriers.csv`` / ``barriers_pairs.csv``
    ``barriers.csv``: after its columns, ``align`` (none, weights, activations),
    ``repair`` (bool), ``loss_barrier_low/high``, ``metric_barrier_low/high`` (the test-set
    bootstrap of the mean barrier), ``loss_barrier_seeds_low/high``,
    ``metric_barrier_seeds_low/high`` (across seed pairs), ``n_pairs``; its barriers are
    the mean over seed pairs. ``barriers_pairs.csv``: each seed pair's barriers with
    their test-set interval. ``interpolation.csv`` adds ``align, repair`` after its
    columns (the curve of each pair kind's first seed pair), then ``loss_low, loss_high,
    metric_low, metric_high`` (the test-set bootstrap of each point, the barriers'
    resamples). ``interpolation_pairs.csv``: every seed pair's curve with those intervals.
``findings.csv``
    finding, statement, verdict, part, part_verdict, statistic, unit, runs, effect, low,
    high, se, df, seeds_to_decide, rule: the paper's findings decided from the other
    tables (:mod:`transferlens.report.findings`), one row per tested part, written after
    the analyses.
``study.json``
    the study as planned (what ``<study>/study.json`` holds).
``images/<target>/<index>.png``
    the un-normalised, unshuffled test image ``index`` of ``target`` for every row of
    ``mistakes_examples.csv`` (the report's galleries).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pandas as pd

RESULTS_DIR = "results"
STUDY_JSON = "study.json"
IMAGES_DIR = "images"

PAIRS = ("PT-PT", "PT-RIT", "RIT-RIT", "PT-P", "RIT-P")
SOURCE = "P"  # the source model's place in a pair name

Member = TypeVar("Member")
# The groups of runs.csv's ``groups`` column (a run may belong to several).
SOURCE_GROUP, MAIN_GROUP = "source", "main"
BLOCK_SHUFFLE_GROUP, PRETRAIN_CHECKPOINTS_GROUP = "block_shuffle", "pretrain_checkpoints"
INITS = ("PT", "RIT")

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
    "mistakes_pairs": (
        "target", "pair", "first_seed", "second_seed", "n", "both_right", "both_wrong",
        "only_first_wrong", "only_second_wrong", "accuracy_first", "accuracy_second", "kappa",
        "kappa_low", "kappa_high", "kappa_max", "kappa_ratio", "kappa_ratio_low",
        "kappa_ratio_high",
    ),
    "cka": ("target", "pair", "layer", "cka", "cka_low", "cka_high"),
    "cka_pairs": (
        "target", "pair", "first_seed", "second_seed", "layer", "cka", "cka_low", "cka_high",
        "cka_p",
    ),
    "cka_matrix": ("target", "pair", "layer_a", "layer_b", "cka"),
    "cka_matrix_pairs": (
        "target", "pair", "first_seed", "second_seed", "layer_a", "layer_b", "cka", "cka_low",
        "cka_high",
    ),
    "cka_layers": ("layer", "stage", "depth", "shape", "reduction", "features"),
    "distance": ("target", "pair", "module", "l2"),
    "distance_pairs": ("target", "pair", "first_seed", "second_seed", "module", "l2"),
    "distance_stages": ("target", "pair", "stage", "l2"),
    "interpolation": ("target", "pair", "lam", "loss", "metric"),
    "interpolation_pairs": (
        "target", "pair", "align", "repair", "first_seed", "second_seed", "lam", "loss",
        "metric", "loss_low", "loss_high", "metric_low", "metric_high",
    ),
    "barriers": ("target", "pair", "loss_barrier", "metric_barrier"),
    "barriers_pairs": (
        "target", "pair", "align", "repair", "first_seed", "second_seed", "loss_barrier",
        "metric_barrier", "loss_barrier_low", "loss_barrier_high", "metric_barrier_low",
        "metric_barrier_high",
    ),
    "criticality": ("target", "init", "module", "rewind_metric", "criticality", "alpha", "sigma"),
    "criticality_path": ("target", "init", "path", "distance", "sigma", "metric"),
    "rewinding": (
        "target", "init", "seed", "module", "rewind_metric", "rewind_metric_low",
        "rewind_metric_high",
    ),
    "pretrain_checkpoints": ("target", "pretrain_epoch", "final_test_metric", "optimization_speed"),
    "epochs": (
        "run_id", "epoch", "test_metric", "test_loss", "train_metric", "train_loss", "seconds",
    ),
    "provenance": ("run_id", "epochs_logged", "train_seconds", "spec_sha256", "complete"),
    "targets": ("target", "task"),
    "module_map": ("unit", "stage", "depth", "lower", "members"),
    "findings": ("finding", "statement", "verdict", "part", "part_verdict"),
}  # fmt: skip
# The paper's "lower modules": the units of depth below this, depth of unit i of n
# being i / (n - 1) (see :func:`unit_depths`).
LOWER_DEPTH = 1 / 3


def unit_depths(count: int) -> list[float]:
    """``i / (count - 1)`` for each of ``count`` units from input to output (one unit: 0)."""
    return [i / (count - 1) if count > 1 else 0.0 for i in range(count)]


def lower_units(units: Sequence[str]) -> list[str]:
    """The units of depth below :data:`LOWER_DEPTH`, for a list of units in model order
    (what ``module_map.csv``'s ``lower`` column says, for tables written without it)."""
    return [unit for unit, depth in zip(units, unit_depths(len(units))) if depth < LOWER_DEPTH]


def table_path(results_dir: str | Path, name: str) -> Path:
    """``<results_dir>/<name>.csv`` for a table of :data:`TABLE_COLUMNS`."""
    if name not in TABLE_COLUMNS:
        raise KeyError(f"unknown results table {name!r}")
    return Path(results_dir) / f"{name}.csv"


def image_path(results_dir: str | Path, target: str, index: int) -> Path:
    """Where the test image ``index`` of ``target`` is kept for the galleries."""
    return Path(results_dir) / IMAGES_DIR / target / f"{int(index)}.png"


def has_groups(runs: pd.DataFrame) -> bool:
    """Does the runs table carry the study runner's ``groups`` column (with any value)?"""
    return "groups" in runs.columns and bool(runs["groups"].notna().any())


def runs_in_group(runs: pd.DataFrame, group: str) -> pd.DataFrame:
    """Rows of runs.csv that belong to ``group`` (its ``groups`` column is ``;``-joined)."""
    groups = runs["groups"].fillna("").astype(str).str.split(";")
    return runs[groups.apply(lambda names: group in names)]


def main_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The P-T and RI-T runs of the headline comparison (paper Fig. 2), from runs.csv.

    The study runner's ``main`` group decides (target runs, P-T started from P's final
    checkpoint, one per seed), less any run whose target's own data is block-shuffled. A runs table without a ``groups``
    column (written by hand) falls back to the same rule read from its columns:
    unshuffled target runs and, for P-T, those started from the latest pre-training
    checkpoint of their target (or with none recorded), so that the runs of the
    checkpoint sweep (Fig. 7) do not blur the comparison.
    """
    if has_groups(runs):
        main = runs_in_group(runs, MAIN_GROUP)
        return main[
            (main["kind"] == "target") & main["init"].isin(INITS) & main["block_size"].isna()
        ]
    frame = runs[(runs["kind"] == "target") & runs["block_size"].isna()]
    frame = frame[frame["init"].isin(INITS)]
    keep = []
    for (_target, init), group in frame.groupby(["target", "init"], sort=False):
        if init == "PT" and group["pretrain_epoch"].notna().any():
            last = group["pretrain_epoch"].max()
            group = group[group["pretrain_epoch"].isna() | (group["pretrain_epoch"] == last)]
        keep.append(group)
    return pd.concat(keep) if keep else frame.iloc[0:0]


def seed_pairs(pair: str, members: Mapping[str, Sequence[Member]]) -> list[tuple[Member, Member]]:
    """The (first, second) models a pair compares, in the order the analyses use them.

    ``members`` maps ``PT``, ``RIT`` (each arm's models, sorted by seed) and ``P`` (the
    source alone) to models; ``pair`` is a name of :data:`PAIRS`. Within one arm every
    two different seeds, the lower first (``PT-PT``); across arms every first with every
    second (``PT-RIT``, ``PT-P``). Tables hold the mean over these; the first is the
    one the galleries show.
    """
    first, _, second = pair.partition("-")
    firsts, seconds = members.get(first, ()), members.get(second, ())
    if first == second:
        return list(itertools.combinations(firsts, 2))
    return [(a, b) for a in firsts for b in seconds]
