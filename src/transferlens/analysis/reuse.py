"""Analysis 1: feature reuse by block shuffling, from the table of finished runs.

For each target and block size, over the seeds of each arm (P-T and RI-T)::

    metric_pt, metric_rit = mean final test metric;  speed_pt, speed_rit = mean
    optimisation speed (the mean train metric in evaluation mode over all epochs)
    relative_gap = 100 (metric_pt - metric_rit) / metric_pt

with the standard deviation over seeds (``*_std``, ddof 1: NaN for a single seed)
and the number of runs (``n_pt``, ``n_rit``). ``block_size`` is empty (NA) for
unshuffled images and 0 for the pixel shuffle; rows are ordered pixel shuffle,
then increasing block size, then unshuffled (the paper's ``*, 1, 2, ..., 224``).

Which runs count: in a study's ``runs.csv`` (with its ``groups`` column), the runs of
the block-shuffle sweep (``block_shuffle``), so that the unshuffled reference is
trained exactly like the shuffled ones, or the main runs
(:func:`transferlens.results.main_runs`) of a study without a sweep. In a table
without groups, every target run, P-T runs only from the final pre-training
checkpoint (those from earlier ones answer analysis 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from transferlens.errors import UserInputError
from transferlens.results import (
    BLOCK_SHUFFLE_GROUP,
    MAIN_GROUP,
    has_groups,
    main_runs,
    runs_in_group,
)

REQUIRED = (
    "kind",
    "init",
    "target",
    "seed",
    "block_size",
    "final_test_metric",
    "optimization_speed",
)
UNSHUFFLED = -1  # stands for an empty block size while grouping (groupby drops NA keys)


@dataclass(frozen=True)
class ReuseResult:
    """The reuse table (see the module docstring); ``settings["group"]``: the runs.csv
    group analysed (``block_shuffle`` or ``main``; None for a table without groups)."""

    table: pd.DataFrame
    settings: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """Columns ``target, block_size, metric_pt, metric_rit, relative_gap, speed_pt,
        speed_rit``, then ``metric_pt_std, metric_rit_std, speed_pt_std, speed_rit_std,
        n_pt, n_rit``."""
        return self.table.copy()


def check_runs(runs: pd.DataFrame, required: tuple[str, ...] = REQUIRED) -> pd.DataFrame:
    """The runs table with the columns the analyses need; UserInputError naming a missing one."""
    if not isinstance(runs, pd.DataFrame):
        raise UserInputError(f"runs must be a pandas DataFrame (got {type(runs).__name__})")
    for column in required:
        if column not in runs.columns:
            raise UserInputError(f"runs table: missing column {column!r}")
    return runs


def finished_target_runs(runs: pd.DataFrame, init: str) -> pd.DataFrame:
    """Target runs of ``init`` (``PT`` or ``RIT``) that have a final test metric."""
    chosen = runs[(runs["kind"] == "target") & (runs["init"] == init)]
    return chosen[pd.to_numeric(chosen["final_test_metric"], errors="coerce").notna()]


def _latest_pretraining(pt_runs: pd.DataFrame) -> pd.DataFrame:
    """P-T runs from the final P: without a pretrain epoch or at the target's largest one.

    Runs fine-tuned from earlier checkpoints of P belong to analysis 7, not here.
    """
    if "pretrain_epoch" not in pt_runs.columns:
        return pt_runs
    epoch = pd.to_numeric(pt_runs["pretrain_epoch"], errors="coerce")
    latest = epoch.groupby(pt_runs["target"]).transform("max")
    return pt_runs[epoch.isna() | (epoch == latest)]


def _summarise(frame: pd.DataFrame, keys: list[str], suffix: str) -> pd.DataFrame:
    values = frame.assign(
        metric=pd.to_numeric(frame["final_test_metric"], errors="coerce"),
        speed=pd.to_numeric(frame["optimization_speed"], errors="coerce"),
    )
    grouped = values.groupby(keys)
    return pd.DataFrame(
        {
            f"metric_{suffix}": grouped["metric"].mean(),
            f"metric_{suffix}_std": grouped["metric"].std(ddof=1),
            f"speed_{suffix}": grouped["speed"].mean(),
            f"speed_{suffix}_std": grouped["speed"].std(ddof=1),
            f"n_{suffix}": grouped["metric"].size(),
        }
    )


def block_size_key(column: pd.Series) -> pd.Series:
    """Block sizes as integers with :data:`UNSHUFFLED` for empty ones (UserInputError if bad)."""
    numbers = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & (column.astype(str).str.strip() != "") & numbers.isna()
    bad |= numbers.notna() & ((numbers < 0) | (numbers != numbers.round()))
    if bad.any():
        raise UserInputError(
            f"runs table: block_size {column[bad].iloc[0]!r} is not an integer >= 0"
        )
    return numbers.fillna(UNSHUFFLED).astype("int64")


def _reuse_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The runs that answer analysis 1 and the group they came from (module docstring)."""
    if not has_groups(runs):
        return runs, None
    sweep = runs_in_group(runs, BLOCK_SHUFFLE_GROUP)
    if not sweep.empty:
        return sweep, BLOCK_SHUFFLE_GROUP
    return main_runs(runs), MAIN_GROUP


def feature_reuse(runs: pd.DataFrame) -> ReuseResult:
    """The reuse table (see the module docstring) from a runs table (DESIGN.md ``runs.csv``).

    Runs without a final test metric (unfinished) are left out; a block size seen in
    only one arm gets NaN for the other.
    """
    runs, group = _reuse_runs(check_runs(runs))
    keyed = runs.assign(block_key=block_size_key(runs["block_size"]))
    pt = _summarise(
        _latest_pretraining(finished_target_runs(keyed, "PT")), ["target", "block_key"], "pt"
    )
    rit = _summarise(finished_target_runs(keyed, "RIT"), ["target", "block_key"], "rit")
    table = pt.join(rit, how="outer").reset_index()
    table["relative_gap"] = 100.0 * (table["metric_pt"] - table["metric_rit"]) / table["metric_pt"]
    # Pixel shuffle (0), then increasing block sizes, then unshuffled.
    order = table["block_key"].where(table["block_key"] != UNSHUFFLED, float("inf"))
    table = table.assign(order=order).sort_values(["target", "order"], kind="stable")
    table["block_size"] = table["block_key"].where(table["block_key"] != UNSHUFFLED).astype("Int64")
    for column in ("n_pt", "n_rit"):
        table[column] = table[column].fillna(0).astype("int64")
    columns = [
        "target", "block_size", "metric_pt", "metric_rit", "relative_gap", "speed_pt", "speed_rit",
        "metric_pt_std", "metric_rit_std", "speed_pt_std", "speed_rit_std", "n_pt", "n_rit",
    ]  # fmt: skip
    return ReuseResult(table[columns].reset_index(drop=True), {"group": group})
