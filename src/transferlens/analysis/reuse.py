"""Analysis 1: feature reuse by block shuffling, from the table of finished runs.

For each target and block size, over the seeds of each arm (P-T and RI-T)::

    metric_pt, metric_rit = mean final test metric;  speed_pt, speed_rit = mean
    optimisation speed (the mean train metric in evaluation mode over all epochs)
    relative_gap = 100 (metric_pt - metric_rit) / metric_pt

with the standard deviation over seeds (``*_std``, ddof 1: NaN for a single seed)
and the number of runs (``n_pt``, ``n_rit``). Then the 95% intervals across seeds, the
unit of replication (:mod:`transferlens.analysis.seed_stats`): ``metric_pt_seeds_low``
/ ``_high`` and the same for ``metric_rit``, ``speed_pt``, ``speed_rit`` (the
t-interval of each arm's mean, :func:`~transferlens.analysis.seed_stats.seed_estimate`),
and ``relative_gap_seeds_low`` / ``_high``: the delete-one-run jackknife of the
relative gap over the runs of both arms
(:func:`~transferlens.analysis.seed_stats.jackknife`, ``df`` = seeds of the smaller arm
- 1). An interval is NaN where its runs measure no spread (one seed in an arm). ``block_size`` is empty (NA) for
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

from transferlens.analysis.seed_stats import jackknife, seed_estimate
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
# The 95% intervals across seeds, after the table's other columns (module docstring).
SEED_INTERVAL_COLUMNS = (
    "metric_pt_seeds_low", "metric_pt_seeds_high", "metric_rit_seeds_low",
    "metric_rit_seeds_high", "speed_pt_seeds_low", "speed_pt_seeds_high",
    "speed_rit_seeds_low", "speed_rit_seeds_high", "relative_gap_seeds_low",
    "relative_gap_seeds_high",
)  # fmt: skip


@dataclass(frozen=True)
class ReuseResult:
    """The reuse table (see the module docstring); ``settings["group"]``: the runs.csv
    group analysed (``block_shuffle`` or ``main``; None for a table without groups)."""

    table: pd.DataFrame
    settings: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """Columns ``target, block_size, metric_pt, metric_rit, relative_gap, speed_pt,
        speed_rit``, then ``metric_pt_std, metric_rit_std, speed_pt_std, speed_rit_std,
        n_pt, n_rit``, then the seed intervals :data:`SEED_INTERVAL_COLUMNS`."""
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


def seed_intervals(frame: pd.DataFrame, keys: list[str], columns: dict[str, str]) -> pd.DataFrame:
    """Per group of ``keys`` (the index): ``<name>_seeds_low`` / ``<name>_seeds_high`` for
    each ``name: column`` of ``columns``, the t-interval across runs (one value per seed)
    of the mean of ``column``."""
    rows = []
    for key, group in frame.groupby(keys):
        row = dict(zip(keys, key))
        for name, column in columns.items():
            values = pd.to_numeric(group[column], errors="coerce")
            row[f"{name}_seeds_low"], row[f"{name}_seeds_high"] = seed_estimate(values).interval()
        rows.append(row)
    names = [f"{name}_seeds_{side}" for name in columns for side in ("low", "high")]
    return pd.DataFrame(rows, columns=[*keys, *names]).set_index(keys)


def relative_gap_of(arms: dict[str, list[float]]) -> float:
    """``100 (mean_PT - mean_RIT) / mean_PT`` of the runs' final metrics (NaN without a run
    in either arm)."""
    if not arms["PT"] or not arms["RIT"]:
        return float("nan")
    pt, rit = sum(arms["PT"]) / len(arms["PT"]), sum(arms["RIT"]) / len(arms["RIT"])
    return 100.0 * (pt - rit) / pt


def _gap_intervals(pt: pd.DataFrame, rit: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``relative_gap_seeds_low`` / ``_high`` per group of ``keys``: the delete-one-run
    jackknife of :func:`relative_gap_of` over the runs of both arms."""

    def finals(frame: pd.DataFrame) -> dict[tuple, list[float]]:
        metric = pd.to_numeric(frame["final_test_metric"], errors="coerce")
        return {key: group.tolist() for key, group in metric.groupby([frame[k] for k in keys])}

    by_pt, by_rit = finals(pt), finals(rit)
    rows = []
    for key in set(by_pt) | set(by_rit):
        arms = {"PT": by_pt.get(key, []), "RIT": by_rit.get(key, [])}
        low, high = jackknife(relative_gap_of, arms).interval()
        rows.append({**dict(zip(keys, key)), "relative_gap_seeds_low": low,
                     "relative_gap_seeds_high": high})  # fmt: skip
    columns = [*keys, "relative_gap_seeds_low", "relative_gap_seeds_high"]
    return pd.DataFrame(rows, columns=columns).set_index(keys)


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


def _reuse_intervals(keyed: pd.DataFrame) -> pd.DataFrame:
    """:data:`SEED_INTERVAL_COLUMNS` per (target, block_key), from the same runs as the means."""
    keys = ["target", "block_key"]
    pt = _latest_pretraining(finished_target_runs(keyed, "PT"))
    rit = finished_target_runs(keyed, "RIT")
    arms = [
        seed_intervals(
            frame,
            keys,
            {f"metric_{arm}": "final_test_metric", f"speed_{arm}": "optimization_speed"},
        )
        for frame, arm in ((pt, "pt"), (rit, "rit"))
    ]
    joined = arms[0].join(arms[1], how="outer").join(_gap_intervals(pt, rit, keys), how="outer")
    return joined.reindex(columns=list(SEED_INTERVAL_COLUMNS))


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
    intervals = _reuse_intervals(keyed)
    table = table.join(intervals, on=["target", "block_key"])
    # Pixel shuffle (0), then increasing block sizes, then unshuffled.
    order = table["block_key"].where(table["block_key"] != UNSHUFFLED, float("inf"))
    table = table.assign(order=order).sort_values(["target", "order"], kind="stable")
    table["block_size"] = table["block_key"].where(table["block_key"] != UNSHUFFLED).astype("Int64")
    for column in ("n_pt", "n_rit"):
        table[column] = table[column].fillna(0).astype("int64")
    columns = [
        "target", "block_size", "metric_pt", "metric_rit", "relative_gap", "speed_pt", "speed_rit",
        "metric_pt_std", "metric_rit_std", "speed_pt_std", "speed_rit_std", "n_pt", "n_rit",
        *SEED_INTERVAL_COLUMNS,
    ]  # fmt: skip
    return ReuseResult(table[columns].reset_index(drop=True), {"group": group})


def reuse_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs :func:`feature_reuse` summarises, one row per run, with
    ``block_key`` (the block size, :data:`UNSHUFFLED` for unshuffled images): what the
    findings resample over seeds."""
    runs, _ = _reuse_runs(check_runs(runs))
    keyed = runs.assign(block_key=block_size_key(runs["block_size"]))
    pt = _latest_pretraining(finished_target_runs(keyed, "PT"))
    return pd.concat([pt, finished_target_runs(keyed, "RIT")])
