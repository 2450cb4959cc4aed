"""Analysis 7: which pre-training checkpoint to fine-tune from, from the table of runs.

For each target and each epoch k of P that P-T runs started from (``pretrain_epoch``),
over seeds: the mean final test metric and the mean optimisation speed, with their
standard deviations (ddof 1) and the number of runs, then the 95% t-interval of each
mean across seeds, the unit of replication (``final_test_metric_seeds_low`` / ``_high``,
``optimization_speed_seeds_low`` / ``_high``:
:func:`~transferlens.analysis.seed_stats.seed_estimate`; NaN for a single seed). Only unshuffled P-T runs count
(block-shuffled ones answer analysis 1); in a study's ``runs.csv`` (with its
``groups`` column), only those of the checkpoint sweep (``pretrain_checkpoints``).

(The module is not named after its function: a submodule `pretrain_checkpoints` would
shadow the function `transferlens.analysis.pretrain_checkpoints` once imported.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from transferlens.analysis.reuse import check_runs, finished_target_runs, seed_intervals
from transferlens.results import PRETRAIN_CHECKPOINTS_GROUP, has_groups, runs_in_group

REQUIRED = (
    "kind",
    "init",
    "target",
    "seed",
    "pretrain_epoch",
    "final_test_metric",
    "optimization_speed",
)


@dataclass(frozen=True)
class PretrainCheckpointsResult:
    """The table of the module docstring; ``settings["group"]``: the runs.csv group
    analysed (``pretrain_checkpoints``; None for a table without groups)."""

    table: pd.DataFrame
    settings: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """Columns ``target, pretrain_epoch, final_test_metric, optimization_speed,
        final_test_metric_std, optimization_speed_std, n, final_test_metric_seeds_low,
        final_test_metric_seeds_high, optimization_speed_seeds_low,
        optimization_speed_seeds_high``, sorted by target and epoch."""
        return self.table.copy()


def pretrain_checkpoints(runs: pd.DataFrame) -> PretrainCheckpointsResult:
    """Final test metric and optimisation speed per pre-training epoch (module docstring)."""
    runs = check_runs(runs, REQUIRED)
    group = PRETRAIN_CHECKPOINTS_GROUP if has_groups(runs) else None
    if group is not None:
        runs = runs_in_group(runs, group)
    pt = finished_target_runs(runs, "PT")
    if "block_size" in pt.columns:
        block = pt["block_size"]
        pt = pt[block.isna() | (block.astype(str).str.strip() == "")]
    epoch = pd.to_numeric(pt["pretrain_epoch"], errors="coerce")
    pt = pt.assign(
        pretrain_epoch=epoch,
        final_test_metric=pd.to_numeric(pt["final_test_metric"], errors="coerce"),
        optimization_speed=pd.to_numeric(pt["optimization_speed"], errors="coerce"),
    )[epoch.notna()]
    grouped = pt.groupby(["target", "pretrain_epoch"])
    table = pd.DataFrame(
        {
            "final_test_metric": grouped["final_test_metric"].mean(),
            "optimization_speed": grouped["optimization_speed"].mean(),
            "final_test_metric_std": grouped["final_test_metric"].std(ddof=1),
            "optimization_speed_std": grouped["optimization_speed"].std(ddof=1),
            "n": grouped["final_test_metric"].size(),
        }
    )
    metrics = {name: name for name in ("final_test_metric", "optimization_speed")}
    table = table.join(seed_intervals(pt, ["target", "pretrain_epoch"], metrics)).reset_index()
    table["pretrain_epoch"] = table["pretrain_epoch"].astype("int64")
    table = table.sort_values(["target", "pretrain_epoch"], kind="stable").reset_index(drop=True)
    return PretrainCheckpointsResult(table, {"group": group})
