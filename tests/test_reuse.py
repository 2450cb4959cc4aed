"""Feature reuse and pre-training checkpoint tables from a hand-made runs table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from transferlens.analysis import feature_reuse, pretrain_checkpoints
from transferlens.errors import UserInputError

NA = float("nan")


def runs_table() -> pd.DataFrame:
    rows = [
        # kind, init, target, seed, block_size, pretrain_epoch, final_test_metric, optimization_speed
        ("source", "", "", 0, NA, NA, 0.9, 0.8),
        ("target", "PT", "real", 0, NA, 6, 0.80, 0.70),
        ("target", "PT", "real", 1, NA, 6, 0.90, 0.60),
        ("target", "RIT", "real", 0, NA, NA, 0.60, 0.40),
        ("target", "RIT", "real", 1, NA, NA, 0.70, 0.50),
        ("target", "PT", "real", 0, 4, 6, 0.50, 0.45),
        ("target", "RIT", "real", 0, 4, NA, 0.40, 0.30),
        ("target", "PT", "real", 0, 0, 6, 0.30, 0.25),
        ("target", "RIT", "real", 0, 0, NA, 0.30, 0.20),
        ("target", "RIT", "real", 1, 0, NA, NA, NA),  # unfinished: left out
        ("target", "PT", "real", 0, NA, 1, 0.75, 0.65),  # from an early checkpoint of P
        ("target", "PT", "real", 1, NA, 1, 0.65, 0.55),
        ("target", "PT", "sketch", 0, NA, 6, 0.50, 0.50),
        ("target", "RIT", "sketch", 0, NA, NA, 0.25, 0.20),
    ]
    columns = [
        "kind", "init", "target", "seed", "block_size", "pretrain_epoch",
        "final_test_metric", "optimization_speed",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def test_reuse_table_from_hand_values():
    result = feature_reuse(runs_table())
    assert result.settings == {"group": None}  # a table without groups: all of it
    table = result.to_frame()
    assert list(table.columns[:7]) == [
        "target", "block_size", "metric_pt", "metric_rit", "relative_gap", "speed_pt", "speed_rit",
    ]  # fmt: skip
    real = table[table["target"] == "real"]
    # Pixel shuffle (0) first, then block sizes, then unshuffled (empty).
    assert real["block_size"].tolist()[:2] == [0, 4] and pd.isna(real["block_size"].iloc[2])
    unshuffled = real.iloc[2]
    assert unshuffled["metric_pt"] == pytest.approx(0.85)  # the epoch-1 P-T runs are left out
    assert unshuffled["metric_rit"] == pytest.approx(0.65)
    assert unshuffled["relative_gap"] == pytest.approx(100 * (0.85 - 0.65) / 0.85)
    assert unshuffled["speed_pt"] == pytest.approx(0.65)
    assert unshuffled["speed_rit"] == pytest.approx(0.45)
    assert unshuffled["metric_pt_std"] == pytest.approx(math.sqrt(0.005))
    assert (unshuffled["n_pt"], unshuffled["n_rit"]) == (2, 2)
    pixel = real.iloc[0]
    assert pixel["relative_gap"] == pytest.approx(0.0) and pixel["n_rit"] == 1
    assert math.isnan(pixel["metric_rit_std"])
    assert real.iloc[1]["relative_gap"] == pytest.approx(100 * (0.5 - 0.4) / 0.5)
    sketch = table[table["target"] == "sketch"].iloc[0]
    assert sketch["relative_gap"] == pytest.approx(50.0)


def test_reuse_without_pretrain_epoch_column_and_with_text_block_sizes():
    runs = runs_table().drop(columns="pretrain_epoch")
    runs = runs[runs["optimization_speed"] != 0.55]  # keep one arm symmetric
    runs["block_size"] = runs["block_size"].map(lambda b: "" if pd.isna(b) else str(int(b)))
    table = feature_reuse(runs).to_frame()
    unshuffled = table[(table["target"] == "real") & table["block_size"].isna()].iloc[0]
    assert unshuffled["metric_pt"] == pytest.approx((0.80 + 0.90 + 0.75) / 3)


def test_missing_column_and_bad_block_size_are_user_errors():
    with pytest.raises(UserInputError, match="optimization_speed"):
        feature_reuse(runs_table().drop(columns="optimization_speed"))
    runs = runs_table()
    runs["block_size"] = runs["block_size"].astype(object)
    runs.loc[1, "block_size"] = "big"
    with pytest.raises(UserInputError, match="big"):
        feature_reuse(runs)


def test_pretrain_checkpoints_table():
    table = pretrain_checkpoints(runs_table()).to_frame()
    assert list(table.columns[:4]) == [
        "target",
        "pretrain_epoch",
        "final_test_metric",
        "optimization_speed",
    ]
    real = table[table["target"] == "real"].set_index("pretrain_epoch")
    assert real.index.tolist() == [1, 6]
    assert real.loc[1, "final_test_metric"] == pytest.approx(0.70)
    assert real.loc[6, "final_test_metric"] == pytest.approx(0.85)  # shuffled runs left out
    assert real.loc[6, "optimization_speed"] == pytest.approx(0.65)
    assert real.loc[6, "n"] == 2
    with pytest.raises(UserInputError, match="pretrain_epoch"):
        pretrain_checkpoints(runs_table().drop(columns="pretrain_epoch"))


def with_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """The runner's groups: seed-0 unshuffled runs from the final P are ``main``, the
    shuffled runs and their unshuffled reference (seed 1) the sweep, epoch-1 and epoch-6
    P-T runs the checkpoint sweep."""
    groups = []
    for run in runs.itertuples():
        names = []
        unshuffled = pd.isna(run.block_size)
        if run.kind == "target" and unshuffled and run.seed == 0 and run.pretrain_epoch != 1:
            names.append("main")
        if run.kind == "target" and (not unshuffled or run.seed == 1) and run.pretrain_epoch != 1:
            names.append("block_shuffle")
        if run.init == "PT" and unshuffled:
            names.append("pretrain_checkpoints")
        groups.append(";".join(names) or "source")
    return runs.assign(groups=groups)


def test_a_study_runs_table_is_read_through_its_groups():
    runs = with_groups(runs_table())
    result = feature_reuse(runs)
    assert result.settings == {"group": "block_shuffle"}
    sweep = runs[runs["groups"].str.contains("block_shuffle")].drop(columns="groups")
    assert result.to_frame().equals(feature_reuse(sweep).to_frame())
    # Without a sweep: the main runs (transferlens.results.main_runs).
    no_sweep = runs.assign(groups=runs["groups"].str.replace("block_shuffle", "other"))
    main = feature_reuse(no_sweep)
    assert main.settings == {"group": "main"}
    unshuffled = main.to_frame().set_index("target").loc["real"]
    assert (unshuffled["metric_pt"], unshuffled["n_pt"]) == (pytest.approx(0.80), 1)
    # The checkpoint table reads its own sweep.
    checkpoints = pretrain_checkpoints(runs)
    assert checkpoints.settings == {"group": "pretrain_checkpoints"}
    assert checkpoints.to_frame().equals(pretrain_checkpoints(runs_table()).to_frame())
