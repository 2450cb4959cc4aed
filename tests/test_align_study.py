"""The interpolation analysis with alignment and REPAIR in a tiny study (two seeds, a
Fixup ResNet as the demo): every seed pair's barrier, the tables' columns, the
identities at the ends of an aligned curve, the report; and the distance's seed-pair
table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TINY_STUDY
from transferlens.analysis import barrier
from transferlens.cli import main
from transferlens.results import TABLE_COLUMNS

SETTINGS = [("none", False), ("weights", False), ("activations", False),
            ("weights", True), ("activations", True)]  # fmt: skip


def table(study: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(study / "results" / f"{name}.csv")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("align_study")
    study = {
        **TINY_STUDY,
        "seeds": [0, 1],
        "analyses": {
            "distance": {},
            "interpolation": {
                "points": 3,
                "align": ["none", "weights", "activations"],
                "repair": True,
                "n_bootstrap": 50,
            },
        },
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    out = folder / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return out


def test_barriers_hold_every_setting_and_the_mean_over_seed_pairs(finished):
    barriers, pairs = table(finished, "barriers"), table(finished, "barriers_pairs")
    columns = list(TABLE_COLUMNS["barriers"]) + ["align", "repair"]
    columns += [f"{v}_barrier_{s}" for v in ("loss", "metric") for s in ("low", "high")]
    columns += [f"{v}_barrier_seeds_{s}" for v in ("loss", "metric") for s in ("low", "high")]
    assert list(barriers.columns) == columns + ["n_pairs"]
    assert tuple(pairs.columns) == TABLE_COLUMNS["barriers_pairs"]
    assert set(zip(barriers["align"], barriers["repair"])) == set(SETTINGS)
    assert len(barriers) == 3 * len(SETTINGS)
    expected_pairs = {"PT-PT": 1, "PT-RIT": 4, "RIT-RIT": 1}
    for row in barriers.itertuples():
        assert row.n_pairs == expected_pairs[row.pair]
        chosen = pairs[
            (pairs["pair"] == row.pair) & (pairs["align"] == row.align)
            & (pairs["repair"] == row.repair)
        ]  # fmt: skip
        assert len(chosen) == row.n_pairs
        assert row.loss_barrier == pytest.approx(chosen["loss_barrier"].mean(), abs=1e-12)
        assert row.metric_barrier == pytest.approx(chosen["metric_barrier"].mean(), abs=1e-12)
        assert row.loss_barrier_low <= row.loss_barrier_high
    # PT-RIT: 2 x 2 seeds, so the jackknife across seed pairs has a spread.
    pt_rit = barriers[barriers["pair"] == "PT-RIT"]
    assert pt_rit["loss_barrier_seeds_low"].notna().all()
    assert barriers[barriers["pair"] == "PT-PT"]["loss_barrier_seeds_low"].isna().all()
    seeds = pairs[pairs["pair"] == "PT-RIT"][["first_seed", "second_seed"]].drop_duplicates()
    assert len(seeds) == 4


def test_curves_of_the_first_pair_agree_at_the_ends_and_give_their_barriers(finished):
    curves, pairs = table(finished, "interpolation"), table(finished, "barriers_pairs")
    intervals = ["loss_low", "loss_high", "metric_low", "metric_high"]
    assert list(curves.columns) == [*TABLE_COLUMNS["interpolation"], "align", "repair", *intervals]
    assert len(curves) == 3 * len(SETTINGS) * 3
    for pair, group in curves.groupby("pair"):
        # lam 0 is the first model whatever the setting; lam 1 the second, permuted
        # (the same function) and never repaired at the ends.
        ends = group[group["lam"].isin([0.0, 1.0])].pivot_table(
            index=["align", "repair"], columns="lam", values="loss"
        )
        np.testing.assert_allclose(ends[0.0], ends[0.0].iloc[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(ends[1.0], ends[1.0].iloc[0], rtol=0, atol=1e-4)
        first = pairs[(pairs["pair"] == pair)].groupby(["align", "repair"]).head(1)
        for row in first.itertuples():
            curve = group[(group["align"] == row.align) & (group["repair"] == row.repair)]
            assert barrier(curve) == pytest.approx((row.loss_barrier, row.metric_barrier))


def test_distance_keeps_its_columns_and_adds_the_seed_pair_interval(finished):
    distance, pairs = table(finished, "distance"), table(finished, "distance_pairs")
    stages = table(finished, "distance_stages")
    added = ["l2_seeds_low", "l2_seeds_high", "n_pairs"]
    assert list(distance.columns) == list(TABLE_COLUMNS["distance"]) + added
    assert list(stages.columns) == list(TABLE_COLUMNS["distance_stages"]) + added
    assert tuple(pairs.columns) == TABLE_COLUMNS["distance_pairs"]
    mean = pairs.groupby(["target", "pair", "module"], sort=False)["l2"].mean()
    merged = distance.set_index(["target", "pair", "module"])
    np.testing.assert_allclose(merged.loc[mean.index, "l2"], mean, rtol=1e-12)
    assert pairs[pairs["pair"] == "PT-P"]["second_seed"].isna().all()
    counts = distance.groupby("pair")["n_pairs"].first().to_dict()
    assert counts == {"PT-PT": 1, "RIT-RIT": 1, "PT-P": 2, "RIT-P": 2}


def test_the_report_draws_the_aligned_curves(finished):
    page = (finished / "report" / "index.html").read_text(encoding="utf-8")
    assert "weights" in page and "activations" in page and "REPAIR" in page
