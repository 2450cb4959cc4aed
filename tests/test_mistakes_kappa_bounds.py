"""kappa_max / kappa_min (Geirhos et al. 2020) and kappa / kappa_max with its interval."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from transferlens.analysis.kappa_bounds import (
    kappa_bounds,
    kappa_max_from_counts,
    kappa_min_from_counts,
)
from transferlens.analysis.model_mistakes import (
    kappa_from_counts,
    kappa_ratio_from_counts,
    mistakes,
)
from transferlens.analysis.stats import resample_indices


def reference_bounds(counts: tuple[int, int, int, int]) -> tuple[float, float, float]:
    """(kappa, kappa_min, kappa_max) in float64 fractions, straight from the paper's formulas."""
    both_right, both_wrong, only_first_wrong, only_second_wrong = (float(c) for c in counts)
    n = both_right + both_wrong + only_first_wrong + only_second_wrong
    p1 = (both_right + only_second_wrong) / n
    p2 = (both_right + only_first_wrong) / n
    c_obs = (both_right + both_wrong) / n
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    c_max = 1 - abs(p1 - p2)
    c_min = abs(p1 + p2 - 1)
    return (
        (c_obs - c_exp) / (1 - c_exp),
        (c_min - c_exp) / (1 - c_exp),
        (c_max - c_exp) / (1 - c_exp),
    )


def all_tables(n: int) -> np.ndarray:
    """Every 2x2 table of ``n`` examples (counts in CELLS order)."""
    tables = [
        (a, b, c, n - a - b - c)
        for a, b, c in itertools.product(range(n + 1), repeat=3)
        if a + b + c <= n
    ]
    return np.array(tables)


def test_bounds_match_a_float64_reference_on_every_table_of_12_examples():
    tables = all_tables(12)
    kappas, lows = kappa_from_counts(tables), kappa_min_from_counts(tables)
    highs = kappa_max_from_counts(tables)
    checked = 0
    for table, kappa, low, high in zip(tables, kappas, lows, highs):
        right_a, right_b = table[0] + table[3], table[0] + table[2]
        if (right_a, right_b) in ((12, 12), (0, 0)):
            assert kappa == low == high == 1.0  # c_exp = 1: the degenerate rule
            continue
        expected = reference_bounds(tuple(table))
        assert (kappa, low, high) == pytest.approx(expected, abs=1e-12)
        checked += 1
    assert checked > 400


def test_kappa_lies_between_its_bounds_exactly_and_reaches_them():
    tables = all_tables(15)
    kappas = kappa_from_counts(tables)
    assert np.all(kappa_min_from_counts(tables) <= kappas)
    assert np.all(kappas <= kappa_max_from_counts(tables))  # exact, no tolerance
    ratios = kappa_ratio_from_counts(tables)
    defined = np.isfinite(ratios)
    assert np.all(ratios[defined] <= 1.0)
    # Below 0 the ratio is not bounded by -1: its floor is kappa_min / kappa_max.
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = kappa_min_from_counts(tables) / kappa_max_from_counts(tables)
    assert np.all(ratios[defined] >= floor[defined] - 1e-12)
    assert ratios[defined].min() < -1.0
    # The largest overlap of mistakes (both_right = min(R_a, R_b)) attains kappa_max.
    a, b = 9, 6  # right counts of 15
    attained = np.array([b, 15 - a, a - b, 0])  # first right wherever the second is
    assert kappa_from_counts(attained) == kappa_max_from_counts(attained)
    assert kappa_ratio_from_counts(attained) == 1.0


def test_equal_accuracies_allow_kappa_one_and_a_perfect_model_allows_none():
    tables = all_tables(10)
    right_a, right_b = tables[:, 0] + tables[:, 3], tables[:, 0] + tables[:, 2]
    equal = right_a == right_b
    np.testing.assert_array_equal(kappa_max_from_counts(tables[equal]), 1.0)
    assert np.all(kappa_max_from_counts(tables[~equal]) < 1.0)
    # One model always right: every agreement is chance, kappa = kappa_max = 0, ratio NaN.
    perfect = np.array([7, 0, 0, 3])  # first right on all 10, second on 7
    assert kappa_from_counts(perfect) == 0.0 and kappa_max_from_counts(perfect) == 0.0
    assert np.isnan(kappa_ratio_from_counts(perfect))
    # Both right everywhere: the degenerate rule makes kappa, its bounds and the ratio 1.
    assert kappa_ratio_from_counts(np.array([10, 0, 0, 0])) == 1.0


def test_bounds_from_accuracies_and_the_papers_example_numbers():
    low, high = kappa_bounds(0.87, 0.75)
    c_exp = 0.87 * 0.75 + 0.13 * 0.25
    assert high == pytest.approx((1 - 0.12 - c_exp) / (1 - c_exp), abs=1e-15)
    assert low == pytest.approx((0.62 - c_exp) / (1 - c_exp), abs=1e-15)
    assert float(high) == pytest.approx(0.619047619, abs=1e-9)
    lows, highs = kappa_bounds([0.5, 0.9, 1.0, 0.0], [0.5, 0.9, 1.0, 1.0])
    np.testing.assert_allclose(highs, [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(lows, [-1.0, (0.8 - 0.82) / 0.18, 1.0, 0.0])
    # The counts and the fractions give the same bounds.
    counts = np.array([50, 10, 25, 15])  # p1 = 0.65, p2 = 0.75
    assert kappa_max_from_counts(counts) == pytest.approx(float(kappa_bounds(0.65, 0.75)[1]))
    assert kappa_min_from_counts(counts) == pytest.approx(float(kappa_bounds(0.65, 0.75)[0]))


def vectors_with_accuracies(rng: np.random.Generator, n: int, keep: float) -> tuple:
    a = rng.random(n) < 0.85
    b = np.where(rng.random(n) < keep, a, rng.random(n) < 0.6)
    return a, b


def test_ratio_and_its_interval_come_from_the_same_resamples_as_kappa():
    rng = np.random.default_rng(3)
    a, b = vectors_with_accuracies(rng, 250, 0.6)
    result = mistakes({"a": a, "b": b}, n_bootstrap=300, seed=7)
    combo = result.combinations[0]
    counts = combo.counts
    kappa, _, kappa_max = reference_bounds(tuple(counts))
    assert combo.kappa_max == pytest.approx(kappa_max, abs=1e-12)
    assert combo.kappa_ratio == pytest.approx(kappa / kappa_max, abs=1e-12)
    assert combo.accuracy_first == pytest.approx(a.mean())
    assert combo.accuracy_second == pytest.approx(b.mean())
    kappas, ratios = [], []
    for idx in resample_indices(250, 300, seed=7):
        k = cohen_kappa_score(a[idx], b[idx])
        p1, p2 = a[idx].mean(), b[idx].mean()
        c_exp = p1 * p2 + (1 - p1) * (1 - p2)
        kappas.append(k)
        ratios.append(k / ((1 - abs(p1 - p2) - c_exp) / (1 - c_exp)))
    expected = np.quantile(ratios, [0.025, 0.975])
    assert (combo.kappa_ratio_low, combo.kappa_ratio_high) == pytest.approx(
        tuple(expected), abs=1e-9
    )
    assert (combo.kappa_low, combo.kappa_high) == pytest.approx(
        tuple(np.quantile(kappas, [0.025, 0.975])), abs=1e-12
    )
    row = result.to_frame().iloc[0]
    assert row["kappa_max"] == combo.kappa_max and row["kappa_ratio"] == combo.kappa_ratio
    assert row["kappa_ratio_low"] == combo.kappa_ratio_low


def test_pair_names_average_kappa_max_and_the_ratio_over_seed_pairs():
    rng = np.random.default_rng(4)
    vectors = {}
    for key, keep in (("PT0", 0.9), ("PT1", 0.8), ("RIT0", 0.3), ("RIT1", 0.2)):
        vectors[key] = np.where(
            rng.random(200) < keep, rng.random(200) < 0.9, rng.random(200) < 0.7
        )
    pairs = [("PT-RIT", p, r) for p in ("PT0", "PT1") for r in ("RIT0", "RIT1")]
    result = mistakes(vectors, pairs, n_bootstrap=200, seed=1)
    combos = result.to_frame(combine=False)
    row = result.to_frame().iloc[0]
    assert row["kappa_max"] == pytest.approx(combos["kappa_max"].mean(), abs=1e-14)
    assert row["kappa_ratio"] == pytest.approx(combos["kappa_ratio"].mean(), abs=1e-14)
    assert row["kappa_ratio_low"] <= row["kappa_ratio"] <= row["kappa_ratio_high"]
    assert list(combos.columns[-6:]) == [
        "kappa_max", "kappa_ratio", "kappa_ratio_low", "kappa_ratio_high",
        "accuracy_first", "accuracy_second",
    ]  # fmt: skip
    # Adding the ratio did not move kappa's own interval (same resamples, same columns).
    alone = mistakes(vectors, pairs[:1], n_bootstrap=200, seed=1).combinations[0]
    assert (alone.kappa_low, alone.kappa_high) == (
        result.combinations[0].kappa_low,
        result.combinations[0].kappa_high,
    )


def test_an_undefined_ratio_is_left_out_of_the_mean_over_seed_pairs():
    perfect = np.ones(20, bool)
    other = np.arange(20) % 3 > 0
    third = np.arange(20) % 4 > 0
    pairs = [("X", "p", "o"), ("X", "t", "o")]
    result = mistakes({"p": perfect, "o": other, "t": third}, pairs, n_bootstrap=0)
    first, second = result.combinations
    assert np.isnan(first.kappa_ratio) and np.isfinite(second.kappa_ratio)
    assert result.to_frame().iloc[0]["kappa_ratio"] == second.kappa_ratio
