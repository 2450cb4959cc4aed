"""The per-seed and per-seed-pair numbers the findings test, read from the results tables.

Single-model statistics come from ``runs.csv`` (one final metric or optimisation speed
per run, i.e. per seed); pair statistics from the ``<table>_pairs.csv`` tables (one row
per seed pair). A study folder written before those tables existed still gives each
pair kind's mean (from ``<table>.csv``), without a spread: such a part is inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from transferlens.analysis.seed_stats import (
    SeedEstimate,
    difference,
    jackknife,
    pair_estimate,
    pair_values,
    seed_estimate,
)
from transferlens.report.findings_core import relative_gap
from transferlens.report.seed_pairs import MODEL_NAMES, pair_inits
from transferlens.results import main_runs


def _numbers(frame: pd.DataFrame, column: str) -> list[float]:
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    return [float(value) for value in values]


def main_values(
    runs: pd.DataFrame | None, target: str, init: str, column: str = "final_test_metric"
) -> list[float]:
    """``column`` of every complete main run of ``target`` and ``init``, one per seed."""
    if runs is None:
        return []
    main = main_runs(runs)
    if "status" in main.columns:
        main = main[main["status"] == "complete"]
    return _numbers(main[(main["target"] == target) & (main["init"] == init)], column)


def arm_difference(first: Sequence[float], second: Sequence[float]) -> SeedEstimate:
    """mean(first) - mean(second) over two arms' seeds (Welch)."""
    return difference(seed_estimate(first), seed_estimate(second))


def gap_estimate(pt: Sequence[float], rit: Sequence[float]) -> SeedEstimate:
    """The relative gap ``100 (mean_PT - mean_RIT) / mean_PT`` and its delete-one-run
    jackknife over the runs of both arms."""

    def gap(arms: Mapping[str, list]) -> float:
        if not arms["PT"] or not arms["RIT"]:
            return math.nan
        return relative_gap(float(np.mean(arms["PT"])), float(np.mean(arms["RIT"])))

    return jackknife(gap, {"PT": list(pt), "RIT": list(rit)})


def seeds_text(**arms: int) -> str:
    """``P-T 2, RI-T 3 seeds`` from ``PT=2, RIT=3``."""
    return ", ".join(f"{MODEL_NAMES.get(arm, arm)} {count}" for arm, count in arms.items()) + (
        " seeds"
    )


def pair_kind(
    pairs: pd.DataFrame | None,
    summary: pd.DataFrame | None,
    target: str,
    kind: str,
    value: str,
    where: Mapping[str, object] | None = None,
) -> SeedEstimate | None:
    """The mean of ``value`` over the seed pairs of ``kind`` on ``target`` (rows matching
    ``where``, e.g. ``{"layer": "conv1"}``) with its jackknife spread, from the
    per-pair table; from the summary table's mean without a spread when the per-pair
    table is absent; None when neither has the rows."""
    for frame, per_pair in ((pairs, True), (summary, False)):
        if frame is None or value not in frame.columns:
            continue
        rows = frame[(frame["target"] == target) & (frame["pair"] == kind)]
        for column, wanted in (where or {}).items():
            rows = rows[rows[column].astype(str) == str(wanted)]
        if rows.empty:
            continue
        if per_pair:
            return pair_estimate(pair_values(rows, value))
        return SeedEstimate(float(pd.to_numeric(rows[value]).mean()), math.nan, 0, 0)
    return None


def pair_seeds(pairs: pd.DataFrame | None, target: str, kinds: Sequence[str]) -> str:
    """``P-T 2, RI-T 2 seeds`` counted from the per-pair rows of ``kinds`` on ``target``."""
    if pairs is None:
        return "seeds unknown (no per-pair table)"
    counts: dict[str, set] = {}
    rows = pairs[(pairs["target"] == target) & pairs["pair"].isin(kinds)]
    for pair, first, second in zip(rows["pair"], rows["first_seed"], rows["second_seed"]):
        for init, seed in zip(pair_inits(str(pair)), (first, second)):
            if not pd.isna(seed):
                counts.setdefault(init, set()).add(int(seed))
    return seeds_text(**{init: len(seeds) for init, seeds in counts.items()})
