"""The study's mistakes tables: per seed pair (mistakes_pairs) and the spread across seed pairs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from transferlens.analysis.model_mistakes import mistakes
from transferlens.results import TABLE_COLUMNS
from transferlens.study.analyses.mistakes import _pairs_frame, _with_seed_intervals


def run(arm: str, seed: int) -> SimpleNamespace:
    return SimpleNamespace(run_id=f"{arm}{seed}", meta=SimpleNamespace(seed=seed))


def test_pairs_table_and_the_seed_intervals_of_the_combined_table():
    rng = np.random.default_rng(0)
    pt = [run("PT", seed) for seed in range(3)]
    rit = [run("RIT", seed) for seed in range(3)]
    truth = rng.random(400) < 0.8
    vectors = {}
    for member, keep in zip(pt + rit, (0.9, 0.85, 0.8, 0.4, 0.35, 0.3)):
        vectors[member.run_id] = np.where(rng.random(400) < keep, truth, rng.random(400) < 0.6)
    pairs = {
        "PT-PT": [(pt[0], pt[1]), (pt[0], pt[2]), (pt[1], pt[2])],
        "PT-RIT": [(a, b) for a in pt for b in rit],
    }
    named = [(name, a.run_id, b.run_id) for name, combos in pairs.items() for a, b in combos]
    result = mistakes(vectors, named, n_bootstrap=50)
    per_pair = _pairs_frame("real", result.to_frame(combine=False), pairs)
    assert tuple(per_pair.columns) == TABLE_COLUMNS["mistakes_pairs"]
    assert per_pair["first_seed"].tolist()[:3] == [0, 0, 1]
    assert per_pair["second_seed"].tolist()[:3] == [1, 2, 2]
    first = per_pair.iloc[0]
    accuracy = vectors["PT0"].mean()
    assert first["accuracy_first"] == pytest.approx(accuracy)
    assert first["kappa_ratio"] == pytest.approx(first["kappa"] / first["kappa_max"])

    table = _with_seed_intervals(result.to_frame().assign(target="real"), per_pair)
    added = [column for column in table.columns if column != "target"]
    assert added[added.index("kappa_high") + 1 :] == [
        "kappa_max", "kappa_ratio", "kappa_ratio_low", "kappa_ratio_high",
        "kappa_seeds_low", "kappa_seeds_high", "kappa_ratio_seeds_low", "kappa_ratio_seeds_high",
        "n_pairs",
    ]  # fmt: skip
    row = table.set_index("pair").loc["PT-PT"]
    assert row["n_pairs"] == 3
    # PT-PT over seeds {0, 1, 2}: leave one run out -> one pair left; jackknife by hand.
    values = per_pair["kappa"].to_numpy()[:3]  # pairs (0,1), (0,2), (1,2)
    thetas = np.array([values[2], values[1], values[0]])  # without run 0, 1, 2
    se = math.sqrt(2 / 3 * np.sum((thetas - thetas.mean()) ** 2))
    half = stats.t.ppf(0.975, 2) * se
    assert row["kappa"] == pytest.approx(values.mean(), abs=1e-14)
    assert row["kappa_seeds_low"] == pytest.approx(values.mean() - half, abs=1e-12)
    assert row["kappa_seeds_high"] == pytest.approx(values.mean() + half, abs=1e-12)
    assert row["kappa_ratio_seeds_low"] < row["kappa_ratio"] < row["kappa_ratio_seeds_high"]
    assert table.set_index("pair").loc["PT-RIT", "n_pairs"] == 9
