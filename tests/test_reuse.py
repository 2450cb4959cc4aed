"""Feature reuse and pre-training checkpoint tables from a hand-made runs table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from transferlens.analysis.pretraining import pretrain_checkpoints
from transferlens.analysis.reuse import feature_reuse
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
    table = feature_reuse(runs_table())
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
    table = feature_reuse(runs)
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
    table = pretrain_checkpoints(runs_table())
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
