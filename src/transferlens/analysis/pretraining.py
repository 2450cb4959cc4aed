"""Analysis 7: which pre-training checkpoint to fine-tune from, from the table of runs.

For each target and each epoch k of P that P-T runs started from (``pretrain_epoch``),
over seeds: the mean final test metric and the mean optimisation speed, with their
standard deviations (ddof 1) and the number of runs. Only unshuffled P-T runs count
(block-shuffled ones answer analysis 1).

(The module is not named after its function: a submodule `pretrain_checkpoints` would
shadow the function `transferlens.analysis.pretrain_checkpoints` once imported.)
"""

from __future__ import annotations

import pandas as pd

from transferlens.analysis.reuse import check_runs, finished_target_runs

REQUIRED = (
    "kind",
    "init",
    "target",
    "seed",
    "pretrain_epoch",
    "final_test_metric",
    "optimization_speed",
)


def pretrain_checkpoints(runs: pd.DataFrame) -> pd.DataFrame:
    """Columns ``target, pretrain_epoch, final_test_metric, optimization_speed,
    final_test_metric_std, optimization_speed_std, n``, sorted by target and epoch.
    """
    runs = check_runs(runs, REQUIRED)
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
    ).reset_index()
    table["pretrain_epoch"] = table["pretrain_epoch"].astype("int64")
    return table.sort_values(["target", "pretrain_epoch"], kind="stable").reset_index(drop=True)
