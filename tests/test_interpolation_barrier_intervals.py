"""The barrier's interval over the evaluation set: resampled per-example terms against a
brute-force recomputation, the per-example evaluation against evaluate_batches, the
ordered-loader check and the interpolation settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import barrier, interpolation_curve
from transferlens.analysis.barrier_stats import (
    barrier_interval,
    barrier_replicates,
    mean_barrier_interval,
)
from transferlens.analysis.evalcache import evaluate_batches, prepare_batches
from transferlens.analysis.interpolation import InterpolationResult, evaluate_examples
from transferlens.analysis.stats import percentile_interval, resample_indices
from transferlens.errors import UserInputError
from transferlens.study.analyses.settings import InterpolationSettings


def _curve(seed: int, n: int = 40, lams: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)):
    rng = np.random.default_rng(seed)
    loss = rng.exponential(1.0, size=(len(lams), n))
    correct = (rng.random((len(lams), n)) < 0.6).astype(np.float64)
    return InterpolationResult(
        lams,
        tuple(loss.mean(axis=1)),
        tuple(correct.mean(axis=1)),
        "interpolate",
        {},
        example_loss=loss,
        example_correct=correct,
    )


def _brute_force(curve: InterpolationResult, idx: np.ndarray) -> tuple[float, float]:
    """The barriers of the curve recomputed from the drawn examples, in float64."""
    frame = pd.DataFrame(
        {
            "lam": curve.lams,
            "loss": curve.example_loss[:, idx].mean(axis=1),
            "metric": curve.example_correct[:, idx].mean(axis=1),
        }
    )
    return barrier(frame)


def test_resampled_barriers_match_a_brute_force_recomputation():
    curve = _curve(0)
    indices = resample_indices(40, 5, seed=3)
    replicates = barrier_replicates(curve, indices)
    for row, idx in zip(replicates, indices):
        np.testing.assert_allclose(row, _brute_force(curve, idx), rtol=0, atol=1e-12)


def test_unsorted_lambdas_give_the_same_replicates():
    curve = _curve(1)
    order = [4, 0, 2, 1, 3]
    shuffled = InterpolationResult(
        tuple(curve.lams[i] for i in order),
        tuple(curve.loss[i] for i in order),
        tuple(curve.metric[i] for i in order),
        "interpolate",
        {},
        example_loss=curve.example_loss[order],
        example_correct=curve.example_correct[order],
    )
    indices = resample_indices(40, 4, seed=0)
    np.testing.assert_array_equal(
        barrier_replicates(curve, indices), barrier_replicates(shuffled, indices)
    )


def test_the_interval_is_the_percentile_interval_of_the_replicates():
    curve = _curve(2)
    replicates = barrier_replicates(curve, resample_indices(40, 300, seed=0))
    (loss_low, loss_high), (metric_low, metric_high) = barrier_interval(curve, 300)
    low, high = percentile_interval(replicates)
    assert (loss_low, metric_low) == (low[0], low[1])
    assert (loss_high, metric_high) == (high[0], high[1])
    assert loss_low <= loss_high and metric_low <= metric_high
    assert all(np.isnan(v) for bounds in barrier_interval(curve, 0) for v in bounds)


def test_the_mean_interval_averages_the_replicates_of_the_same_resamples():
    curves = [_curve(4), _curve(5)]
    indices = resample_indices(40, 200, seed=0)
    mean = (barrier_replicates(curves[0], indices) + barrier_replicates(curves[1], indices)) / 2
    low, high = percentile_interval(mean)
    (loss_low, loss_high), (metric_low, metric_high) = mean_barrier_interval(curves, 200)
    np.testing.assert_allclose([loss_low, metric_low, loss_high, metric_high],
                               [low[0], low[1], high[0], high[1]], rtol=0, atol=1e-15)  # fmt: skip


def _tiny_problem():
    torch.manual_seed(0)
    inputs, labels = torch.randn(24, 5), torch.randint(0, 3, (24,))
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=7)
    a = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    b = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    return a, b, loader


def test_per_example_terms_give_exactly_what_evaluate_batches_gives():
    a, _, loader = _tiny_problem()
    batches = prepare_batches(loader)
    terms = evaluate_examples(a, batches, "multiclass")
    expected = evaluate_batches(a, batches, "multiclass")
    assert (terms.result.loss, terms.result.metric) == (expected.loss, expected.metric)
    assert terms.loss.shape == (24,) and terms.correct.shape == (24,)
    assert terms.correct.mean() == expected.metric


def test_the_curve_keeps_its_terms_and_reproduces_its_point_estimates():
    a, b, loader = _tiny_problem()
    curve = interpolation_curve(a, b, loader, "multiclass", lams=[0.0, 0.5, 1.0])
    assert curve.example_loss.shape == (3, 24)
    np.testing.assert_allclose(curve.example_loss.mean(axis=1), curve.loss, rtol=1e-12)
    np.testing.assert_array_equal(curve.example_correct.mean(axis=1), curve.metric)
    # All examples drawn once each: the resampled barrier is the barrier.
    np.testing.assert_allclose(
        barrier_replicates(curve, np.arange(24)[None, :])[0], barrier(curve), atol=1e-12
    )


def test_a_shuffling_loader_is_refused_in_one_line():
    a, b, loader = _tiny_problem()
    shuffled = DataLoader(loader.dataset, batch_size=7, shuffle=True)
    with pytest.raises(UserInputError, match="^interpolation: the loader draws"):
        interpolation_curve(a, b, shuffled, "multiclass", lams=[0.0, 1.0])
    with pytest.raises(UserInputError, match="training batches"):
        interpolation_curve(a, b, loader, "multiclass", lams=[0.0, 1.0], train_loader=shuffled)


def test_settings_refuse_repair_without_alignment_and_repeated_methods():
    assert InterpolationSettings().align == ["none"] and not InterpolationSettings().repair
    InterpolationSettings(align=["none", "weights"], repair=True)
    with pytest.raises(ValueError, match="repair: true needs an align method"):
        InterpolationSettings(repair=True)
    with pytest.raises(ValueError, match="lists a method twice"):
        InterpolationSettings(align=["weights", "weights"])
    with pytest.raises(ValueError):
        InterpolationSettings(align=["rebasin"])
