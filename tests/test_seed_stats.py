"""Inference across seeds (:mod:`transferlens.analysis.seed_stats`) against references
written out from the formulas in float64: the per-arm mean, the delete-one-run jackknife
over seed pairs (P fixed), the jackknife of the relative gap, Welch's difference, the
t-intervals, the verdict and the power estimate."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from transferlens.analysis.seed_stats import (
    CONTRADICTED,
    INCONCLUSIVE,
    MAX_SEEDS,
    REPRODUCED,
    SeedEstimate,
    decide,
    difference,
    jackknife,
    pair_estimate,
    pair_summary,
    seed_estimate,
    seeds_to_decide,
)


def jackknife_se(thetas: list[float]) -> float:
    """``sqrt((m - 1) / m * sum (theta_i - mean theta)^2)``, written out."""
    m = len(thetas)
    mean = sum(thetas) / m
    return math.sqrt((m - 1) / m * sum((theta - mean) ** 2 for theta in thetas))


def pair_value(first: int | None, second: int | None) -> float:
    """A pair statistic that depends on both runs (not additive, so no shortcut applies)."""
    a = 0.0 if first is None else first
    b = 0.0 if second is None else second
    return 0.5 + 0.07 * a - 0.02 * b**2 + 0.01 * a * b


# --- one value per seed -------------------------------------------------------------------------


def test_seed_estimate_is_the_mean_and_its_standard_error() -> None:
    values = [0.71, 0.74, 0.80, 0.69]
    estimate = seed_estimate(values)
    mean = sum(values) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    assert estimate.value == pytest.approx(mean, abs=1e-15)
    assert estimate.se == pytest.approx(sd / 2.0, abs=1e-15)
    assert (estimate.df, estimate.arms) == (3, 4)
    assert estimate.has_spread


def test_seed_estimate_without_spread() -> None:
    one = seed_estimate([0.7, float("nan")])  # a NaN (unfinished run) is not a seed
    assert (one.value, one.df, one.arms) == (0.7, 0, 1)
    assert math.isnan(one.se) and not one.has_spread
    assert all(math.isnan(bound) for bound in one.interval())
    empty = seed_estimate([])
    assert math.isnan(empty.value) and empty.arms == 0


@pytest.mark.parametrize("confidence", [0.95, 0.99, 1 - 0.05 / 7])
def test_interval_is_the_t_interval(confidence: float) -> None:
    estimate = seed_estimate([1.0, 2.5, 2.0])
    expected = stats.t.interval(confidence, 2, loc=estimate.value, scale=estimate.se)
    np.testing.assert_allclose(estimate.interval(confidence), expected, rtol=0, atol=1e-12)
    welch = SeedEstimate(0.3, 0.1, 4.7, 3)  # fractional Welch degrees of freedom
    expected = stats.t.interval(confidence, 4.7, loc=0.3, scale=0.1)
    np.testing.assert_allclose(welch.interval(confidence), expected, rtol=0, atol=1e-12)


def test_shift_and_scale() -> None:
    estimate = SeedEstimate(0.25, 0.05, 3, 4)
    assert estimate.shifted(0.5) == SeedEstimate(0.75, 0.05, 3, 4)
    assert estimate.scaled(-2.0) == SeedEstimate(-0.5, 0.1, 3, 4)


# --- pairs of runs: the delete-one-run jackknife ------------------------------------------------


@pytest.mark.parametrize("seeds", [3, 4])
def test_same_arm_pairs_by_hand(seeds: int) -> None:
    pairs = list(itertools.combinations(range(seeds), 2))
    values = {(("PT", a), ("PT", b)): pair_value(a, b) for a, b in pairs}
    estimate = pair_estimate(values)
    thetas = []
    for left_out in range(seeds):
        kept = [pair_value(a, b) for a, b in pairs if left_out not in (a, b)]
        thetas.append(sum(kept) / len(kept))
    assert estimate.value == pytest.approx(
        sum(pair_value(a, b) for a, b in pairs) / len(pairs), abs=1e-15
    )
    assert estimate.se == pytest.approx(jackknife_se(thetas), rel=1e-12)
    assert (estimate.df, estimate.arms) == (seeds - 1, seeds)


def test_cross_arm_pairs_leave_out_each_run_of_either_arm() -> None:
    pt_seeds, rit_seeds = (0, 1, 2), (0, 1, 2, 3)
    values = {(("PT", a), ("RIT", b)): pair_value(a, b) for a in pt_seeds for b in rit_seeds}
    estimate = pair_estimate(values)
    thetas = []
    for arm, seeds in (("PT", pt_seeds), ("RIT", rit_seeds)):
        for left_out in seeds:
            kept = [
                pair_value(a, b)
                for a in pt_seeds
                for b in rit_seeds
                if (a if arm == "PT" else b) != left_out
            ]
            thetas.append(sum(kept) / len(kept))
    assert len(thetas) == 7
    assert estimate.se == pytest.approx(jackknife_se(thetas), rel=1e-12)
    assert (estimate.df, estimate.arms) == (2, 3)  # the smaller arm's seeds - 1


def test_the_source_model_is_fixed() -> None:
    """PT-P: only the P-T runs are left out (P is one model, not a sample)."""
    values = {(("PT", s), ("P", None)): pair_value(s, None) for s in range(3)}
    estimate = pair_estimate(values)
    thetas = [
        sum(pair_value(s, None) for s in range(3) if s != left_out) / 2 for left_out in range(3)
    ]
    assert estimate.se == pytest.approx(jackknife_se(thetas), rel=1e-12)
    assert (estimate.df, estimate.arms) == (2, 3)


def test_one_pair_of_an_arm_has_no_spread() -> None:
    """Two seeds give one PT-PT pair: leaving a run out leaves no pair."""
    estimate = pair_estimate({(("PT", 0), ("PT", 1)): 0.8})
    assert estimate.value == 0.8 and not estimate.has_spread
    assert decide(estimate) == INCONCLUSIVE and seeds_to_decide(estimate) is None
    two_p = pair_estimate({(("PT", 0), ("P", None)): 0.2, (("PT", 1), ("P", None)): 0.4})
    assert two_p.has_spread and two_p.df == 1  # PT-P with two seeds does have one
    assert math.isnan(pair_estimate({}).value)


def test_jackknife_of_the_relative_gap_brute_force() -> None:
    pt, rit = [0.80, 0.78, 0.83], [0.55, 0.61, 0.52, 0.58]

    def gap(arms: dict[str, list[float]]) -> float:
        if not arms["PT"] or not arms["RIT"]:
            return math.nan  # what the findings' gap does without a run in an arm
        return 100.0 * (np.mean(arms["PT"]) - np.mean(arms["RIT"])) / np.mean(arms["PT"])

    estimate = jackknife(gap, {"PT": pt, "RIT": rit})
    thetas = [gap({"PT": pt[:i] + pt[i + 1 :], "RIT": rit}) for i in range(3)]
    thetas += [gap({"PT": pt, "RIT": rit[:i] + rit[i + 1 :]}) for i in range(4)]
    assert estimate.value == pytest.approx(gap({"PT": pt, "RIT": rit}), abs=1e-12)
    assert estimate.se == pytest.approx(jackknife_se(thetas), rel=1e-12)
    assert (estimate.df, estimate.arms) == (2, 3)
    lonely = jackknife(gap, {"PT": pt, "RIT": [0.5]})  # one RI-T run: no spread
    assert not lonely.has_spread and lonely.arms == 1


# --- two arms -----------------------------------------------------------------------------------


def test_difference_is_welch() -> None:
    a, b = seed_estimate([0.80, 0.82, 0.79]), seed_estimate([0.55, 0.61, 0.50, 0.58, 0.57])
    effect = difference(a, b)
    va = np.var([0.80, 0.82, 0.79], ddof=1) / 3
    vb = np.var([0.55, 0.61, 0.50, 0.58, 0.57], ddof=1) / 5
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 4)
    assert effect.value == pytest.approx(a.value - b.value, abs=1e-15)
    assert effect.se == pytest.approx(math.sqrt(va + vb), rel=1e-12)
    assert effect.df == pytest.approx(df, rel=1e-12)
    assert effect.arms == 3
    # scipy's Welch test gives the same t statistic and degrees of freedom.
    welch = stats.ttest_ind([0.80, 0.82, 0.79], [0.55, 0.61, 0.50, 0.58, 0.57], equal_var=False)
    assert effect.value / effect.se == pytest.approx(welch.statistic, rel=1e-12)
    assert effect.df == pytest.approx(welch.df, rel=1e-12)


def test_difference_without_spread_in_one_arm() -> None:
    effect = difference(seed_estimate([0.8, 0.9]), seed_estimate([0.5]))
    assert effect.value == pytest.approx(0.35) and not effect.has_spread


def test_difference_against_an_arm_of_equal_values_keeps_the_other_arms_df() -> None:
    """Three P-T seeds with a criticality of exactly 0 and two RI-T seeds (PACS' art_painting):
    the Welch df is the RI-T arm's, 1 -- in float arithmetic it came out 0.9999999999999998,
    which read as "no spread" and left the part without an interval."""
    rit, pt = seed_estimate([1.725751126005038, 1.717425344004854]), seed_estimate([0.0] * 3)
    effect = difference(rit, pt)
    assert effect.df == 1 and effect.se == rit.se and effect.has_spread
    low, high = effect.interval()
    half = stats.t.ppf(0.975, 1) * rit.se
    assert (low, high) == pytest.approx((rit.value - half, rit.value + half), rel=1e-12)
    # The clamp never moves a df that is in range (scipy's Welch df above).
    a, b = seed_estimate([0.80, 0.82, 0.79]), seed_estimate([0.55, 0.61, 0.50, 0.58, 0.57])
    welch = stats.ttest_ind([0.80, 0.82, 0.79], [0.55, 0.61, 0.50, 0.58, 0.57], equal_var=False)
    assert difference(a, b).df == pytest.approx(welch.df, rel=1e-12)


# --- the verdict and the power estimate ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.0, REPRODUCED), (-1.0, CONTRADICTED), (0.2, INCONCLUSIVE), (-0.2, INCONCLUSIVE)],
)
def test_decide_on_constructed_effects(value: float, expected: str) -> None:
    effect = SeedEstimate(value, 0.1, 4, 3)  # half width t_{0.975,4} * 0.1 = 0.278
    assert decide(effect) == expected


def test_decide_uses_the_confidence_given() -> None:
    effect = SeedEstimate(0.3, 0.1, 4, 3)  # above 0 at 95%, not at 99%
    assert decide(effect) == REPRODUCED and decide(effect, 0.99) == INCONCLUSIVE


def brute_force_seeds(effect: SeedEstimate) -> int | None:
    k = effect.arms
    for n in range(k, MAX_SEEDS + 1):
        half = stats.t.ppf(0.975, effect.df + n - k) * effect.se * math.sqrt(k / n)
        if half < abs(effect.value):
            return n
    return None


def test_seeds_to_decide_is_the_smallest_n() -> None:
    effect = SeedEstimate(0.1, 0.08, 4, 3)
    n = seeds_to_decide(effect)
    assert n == brute_force_seeds(effect) and n is not None and n > 3
    shrunk = effect.se * math.sqrt(3 / n)
    assert stats.t.ppf(0.975, 4 + n - 3) * shrunk < 0.1
    before = effect.se * math.sqrt(3 / (n - 1))
    assert stats.t.ppf(0.975, 4 + n - 4) * before >= 0.1


def test_seeds_to_decide_is_monotone_in_the_effect() -> None:
    counts = [seeds_to_decide(SeedEstimate(value, 0.1, 4, 3)) for value in (0.05, 0.1, 0.2, 0.4)]
    assert all(count is not None for count in counts)
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert seeds_to_decide(SeedEstimate(-0.1, 0.1, 4, 3)) == counts[1]  # the sign does not matter


def test_seeds_to_decide_edges() -> None:
    assert seeds_to_decide(SeedEstimate(1.0, 0.1, 4, 3)) == 3  # decided: the seeds it had
    assert seeds_to_decide(SeedEstimate(0.5, math.nan, 0, 2)) is None  # no spread
    assert seeds_to_decide(SeedEstimate(0.0, 0.1, 4, 3)) is None  # nothing to detect
    assert seeds_to_decide(SeedEstimate(1e-4, 0.1, 4, 3)) is None  # beyond MAX_SEEDS


# --- the per-group summary of a per-seed-pair table ---------------------------------------------


def test_pair_summary_columns_and_values() -> None:
    rows = []
    for target in ("near", "far"):
        for a, b in itertools.combinations(range(3), 2):
            rows.append(dict(target=target, pair="PT-PT", first_seed=a, second_seed=b,
                             kappa=pair_value(a, b) + (target == "far")))  # fmt: skip
        for a in range(3):
            rows.append(dict(target=target, pair="PT-P", first_seed=a, second_seed=np.nan,
                             kappa=pair_value(a, None)))  # fmt: skip
    frame = pd.DataFrame(rows)
    summary = pair_summary(frame, "kappa", by=["target", "pair"])
    assert list(summary.columns) == [
        "target", "pair", "kappa", "kappa_seeds_low", "kappa_seeds_high", "n_pairs"
    ]  # fmt: skip
    assert list(zip(summary["target"], summary["pair"])) == [
        ("near", "PT-PT"), ("near", "PT-P"), ("far", "PT-PT"), ("far", "PT-P")
    ]  # fmt: skip
    assert list(summary["n_pairs"]) == [3, 3, 3, 3]
    pairs = list(itertools.combinations(range(3), 2))
    expected = pair_estimate({(("PT", a), ("PT", b)): pair_value(a, b) + 1 for a, b in pairs})
    row = summary[(summary["target"] == "far") & (summary["pair"] == "PT-PT")].iloc[0]
    assert row["kappa"] == pytest.approx(expected.value, abs=1e-15)
    low, high = expected.interval()
    assert (row["kappa_seeds_low"], row["kappa_seeds_high"]) == pytest.approx((low, high))
    assert row["kappa_seeds_low"] < row["kappa"] < row["kappa_seeds_high"]
