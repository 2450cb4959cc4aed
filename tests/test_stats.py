"""The shared bootstrap: determinism, both calling styles, coverage, vectorised intervals."""

from __future__ import annotations

import numpy as np
import pytest

from transferlens.analysis.stats import (
    bootstrap_interval,
    check_n_bootstrap,
    index_counts,
    percentile_interval,
    resample_indices,
)
from transferlens.errors import UserInputError


def test_same_seed_same_interval_other_seed_differs():
    values = np.random.default_rng(1).normal(size=40)
    first = bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) == first
    assert bootstrap_interval(values, seed=4) != first


def test_values_mode_equals_statistic_mode_of_the_mean():
    values = np.random.default_rng(2).normal(size=30)
    by_values = bootstrap_interval(values, n_resamples=500, seed=7)
    by_statistic = bootstrap_interval(lambda idx: values[idx].mean(), 500, seed=7, n=values.size)
    np.testing.assert_allclose(by_values, by_statistic, rtol=0, atol=1e-12)


def test_interval_is_the_percentiles_of_the_resampled_statistic():
    values = np.arange(10.0) ** 2
    indices = resample_indices(values.size, 200, seed=5)
    replicates = np.median(values[indices], axis=1)
    expected = np.quantile(replicates, [0.05, 0.95])
    got = bootstrap_interval(lambda idx: np.median(values[idx]), 200, 0.90, 5, n=values.size)
    np.testing.assert_allclose(got, expected)


def test_per_seed_values_interval_lies_between_min_and_max():
    low, high = bootstrap_interval([0.71, 0.74, 0.69])
    assert 0.69 <= low <= high <= 0.74


def test_coverage_of_the_mean_is_near_nominal():
    # Percentile bootstrap of a normal mean, n = 50: coverage is a little under 95%.
    rng = np.random.default_rng(0)
    repetitions, n = 200, 50
    covered, widths = 0, []
    for repetition in range(repetitions):
        sample = rng.normal(loc=1.0, size=n)
        low, high = bootstrap_interval(sample, 1000, seed=repetition)
        covered += low <= 1.0 <= high
        widths.append(high - low)
    # Binomial sd of the coverage over 200 repetitions is ~1.5 points.
    assert 0.88 <= covered / repetitions <= 0.99
    # The normal-theory width is 2 * 1.96 / sqrt(n).
    assert np.mean(widths) == pytest.approx(2 * 1.96 / np.sqrt(n), rel=0.1)


def test_array_statistic_gets_one_interval_per_entry_from_shared_resamples():
    rng = np.random.default_rng(3)
    terms = rng.normal(size=(25, 3))

    def statistic(idx):
        return index_counts(idx, 25) @ terms

    low, high = bootstrap_interval(statistic, 300, seed=1, n=25, vectorized=True)
    assert low.shape == high.shape == (3,)
    for column in range(3):
        single = bootstrap_interval(lambda idx, c=column: terms[idx, c].sum(), 300, seed=1, n=25)
        np.testing.assert_allclose((low[column], high[column]), single, atol=1e-12)


def test_index_counts_counts_each_unit():
    indices = np.array([[0, 0, 2], [1, 2, 2]])
    np.testing.assert_array_equal(index_counts(indices, 3), [[2, 0, 1], [0, 1, 2]])


def test_chunked_draws_are_deterministic_for_large_n():
    n = 70_000  # more than one chunk of index rows
    indices = resample_indices(n, 61, seed=9)
    assert indices.shape == (61, n)
    np.testing.assert_array_equal(indices, resample_indices(n, 61, seed=9))
    assert not np.array_equal(indices[0], indices[-1])


def test_nan_replicates_are_ignored_and_all_nan_gives_nan():
    replicates = np.array([[1.0, np.nan], [2.0, np.nan], [np.nan, np.nan], [3.0, np.nan]])
    low, high = percentile_interval(replicates, 0.5)
    assert (low[0], high[0]) == (1.5, 2.5)
    assert np.isnan(low[1]) and np.isnan(high[1])


@pytest.mark.parametrize(
    "kwargs",
    [{"n_resamples": 0}, {"confidence": 1.0}, {"confidence": 0.0}],
)
def test_bad_settings_raise_user_input_error(kwargs):
    with pytest.raises(UserInputError):
        bootstrap_interval([1.0, 2.0], **kwargs)


def test_bad_inputs_raise_user_input_error():
    with pytest.raises(UserInputError, match="n"):
        bootstrap_interval(lambda idx: 0.0)
    with pytest.raises(UserInputError, match="1-D"):
        bootstrap_interval([])


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", None])
def test_the_analyses_number_of_resamples_is_an_integer_from_zero(bad):
    assert check_n_bootstrap(0) == 0 and check_n_bootstrap(200) == 200
    with pytest.raises(UserInputError, match=r"n_bootstrap must be an integer >= 0"):
        check_n_bootstrap(bad)
