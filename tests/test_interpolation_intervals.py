"""The interpolation curve's interval at each lambda, over the evaluation set, from the
per-example terms the barriers' bootstrap keeps (``interpolation.csv``'s ``loss_low`` ...
and ``interpolation_pairs.csv``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import interpolation_curve
from transferlens.analysis.barrier_stats import barrier_replicates, curve_replicates
from transferlens.analysis.interpolation import InterpolationResult
from transferlens.analysis.stats import resample_indices
from transferlens.errors import UserInputError
from transferlens.results import TABLE_COLUMNS
from transferlens.study.analyses.context import TargetModels
from transferlens.study.analyses.interpolation import (
    CURVE_INTERVALS,
    CURVE_PAIRS_COLUMNS,
    analyse_interpolation,
    with_curve_intervals,
)
from transferlens.study.analyses.run import ordered
from transferlens.study.analyses.settings import InterpolationSettings


def synthetic_curve(
    seed: int = 0, n: int = 50, lams=(0.0, 0.5, 0.25, 1.0, 0.75), multilabel: bool = False
) -> InterpolationResult:
    """A curve with seeded per-example terms, lambdas deliberately out of order."""
    rng = np.random.default_rng(seed)
    loss = rng.exponential(1.0, size=(len(lams), n))
    correct = (rng.random((len(lams), n)) < 0.7).astype(np.float64)
    metric = tuple(correct.mean(axis=1)) if not multilabel else (0.8,) * len(lams)
    return InterpolationResult(
        tuple(lams), tuple(loss.mean(axis=1)), metric, "interpolate", {},
        example_loss=loss, example_correct=None if multilabel else correct,
    )  # fmt: skip


def test_resampled_curves_equal_a_brute_force_float64_recomputation():
    curve = synthetic_curve()
    indices = resample_indices(50, 40, seed=4)
    replicates = curve_replicates(curve, indices)
    assert replicates.shape == (40, 5, 2)
    for row, idx in zip(replicates, indices):
        # The drawn examples' mean at each lambda, in the curve's own (unsorted) order.
        np.testing.assert_allclose(row[:, 0], curve.example_loss[:, idx].mean(axis=1), atol=1e-12)
        np.testing.assert_allclose(
            row[:, 1], curve.example_correct[:, idx].mean(axis=1), atol=1e-12
        )


def test_the_interval_is_the_percentile_interval_of_the_brute_force_replicates():
    curve = synthetic_curve(1)
    indices = resample_indices(50, 300, seed=0)
    frame = with_curve_intervals(curve, indices)
    assert list(frame.columns) == ["lam", "loss", "metric", *CURVE_INTERVALS]
    brute = np.stack([curve.example_loss[:, idx].mean(axis=1) for idx in indices])
    low, high = np.quantile(brute, [0.025, 0.975], axis=0)
    np.testing.assert_allclose(frame["loss_low"], low, atol=1e-12)
    np.testing.assert_allclose(frame["loss_high"], high, atol=1e-12)
    brute = np.stack([curve.example_correct[:, idx].mean(axis=1) for idx in indices])
    low, high = np.quantile(brute, [0.025, 0.975], axis=0)
    np.testing.assert_allclose(frame["metric_low"], low, atol=1e-12)
    np.testing.assert_allclose(frame["metric_high"], high, atol=1e-12)
    assert (frame["loss_low"] < frame["loss"]).all() and (frame["loss"] < frame["loss_high"]).all()
    assert (frame["metric_low"] < frame["metric"]).all()
    assert (frame["metric"] < frame["metric_high"]).all()


def test_the_same_resamples_give_the_barriers_of_the_resampled_curves():
    curve = synthetic_curve(2, lams=(0.0, 0.25, 0.5, 0.75, 1.0))
    indices = resample_indices(50, 20, seed=1)
    curves = curve_replicates(curve, indices)
    lam = np.asarray(curve.lams)
    line = curves[:, :1, 0] + lam * (curves[:, -1:, 0] - curves[:, :1, 0])
    expected = np.max(curves[:, :, 0] - line, axis=1)
    np.testing.assert_allclose(barrier_replicates(curve, indices)[:, 0], expected, atol=1e-12)


def tiny_problem():
    torch.manual_seed(0)
    inputs, labels = torch.randn(30, 5), torch.randint(0, 3, (30,))
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=8)
    a = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    b = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    return a, b, loader


def test_the_identity_resample_reproduces_the_curve_and_the_interval_contains_it():
    a, b, loader = tiny_problem()
    curve = interpolation_curve(a, b, loader, "multiclass", lams=[1.0, 0.0, 0.5])
    identity = curve_replicates(curve, np.arange(30)[None, :])[0]
    np.testing.assert_allclose(identity[:, 0], curve.loss, rtol=1e-12)
    np.testing.assert_allclose(identity[:, 1], curve.metric, rtol=1e-12)
    frame = with_curve_intervals(curve, resample_indices(30, 200, seed=0))
    assert list(frame["lam"]) == [1.0, 0.0, 0.5]
    assert (frame["loss_low"] <= frame["loss"]).all() and (
        frame["loss"] <= frame["loss_high"]
    ).all()
    assert (frame["metric_low"] <= frame["metric"]).all()
    assert (frame["metric"] <= frame["metric_high"]).all()


def test_a_multilabel_metric_and_no_resamples_give_nan_bounds():
    curve = synthetic_curve(3, multilabel=True)
    frame = with_curve_intervals(curve, resample_indices(50, 30, seed=0))
    assert frame["metric_low"].isna().all() and frame["metric_high"].isna().all()
    assert frame["loss_low"].notna().all()
    empty = with_curve_intervals(synthetic_curve(), np.zeros((0, 50), dtype=np.int64))
    assert empty[list(CURVE_INTERVALS)].isna().all().all()


def test_resamples_of_the_wrong_size_are_refused_in_one_line():
    with pytest.raises(UserInputError, match=r"^curve resamples must be \[r, 50\] indices"):
        curve_replicates(synthetic_curve(), np.zeros((2, 49), dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class Meta:
    seed: int


@dataclasses.dataclass(frozen=True)
class Run:
    run_id: str
    meta: Meta


class StubContext:
    """What analyse_interpolation reads of a StudyContext: targets, models, loaders, task."""

    def __init__(self) -> None:
        torch.manual_seed(1)
        self.models = {f"{arm}{s}": tiny_problem()[0] for arm in ("pt", "rit") for s in (0, 1)}
        for model in self.models.values():  # different models: reset each one's weights
            for layer in model:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        runs = {key: Run(key, Meta(int(key[-1]))) for key in self.models}
        self.targets = {
            "t": TargetModels("t", pt={0: runs["pt0"], 1: runs["pt1"]},
                              rit={0: runs["rit0"], 1: runs["rit1"]})
        }  # fmt: skip

    def model(self, member: Run) -> nn.Module:
        return self.models[member.run_id]

    def test_loader(self, target: str, max_examples: int | None = None) -> DataLoader:
        return tiny_problem()[2]

    def train_eval_loader(self, target: str) -> DataLoader:
        return tiny_problem()[2]

    def task(self, target: str) -> str:
        return "multiclass"


def test_the_study_writes_every_seed_pair_curve_and_the_first_in_interpolation():
    settings = InterpolationSettings(points=3, n_bootstrap=50, align=["none"])
    tables = analyse_interpolation(StubContext(), settings)
    curves = ordered("interpolation", tables["interpolation"])  # as the study writes it
    pairs = ordered("interpolation_pairs", tables["interpolation_pairs"])
    assert list(curves.columns) == [
        *TABLE_COLUMNS["interpolation"], "align", "repair", *CURVE_INTERVALS,
    ]  # fmt: skip
    assert (
        list(pairs.columns)
        == list(CURVE_PAIRS_COLUMNS)
        == list(TABLE_COLUMNS["interpolation_pairs"])
    )
    # Seeds 0 and 1: PT-PT and RIT-RIT one seed pair each, PT-RIT four; 3 points each.
    assert len(pairs) == (1 + 4 + 1) * 3 and len(curves) == 3 * 3
    first = pairs.groupby(["pair", "lam"], sort=False).head(1).reset_index(drop=True)
    for column in ("lam", "loss", "metric", *CURVE_INTERVALS):
        np.testing.assert_array_equal(curves[column], first[column])
    assert (pairs["loss_low"] <= pairs["loss"]).all() and (
        pairs["loss"] <= pairs["loss_high"]
    ).all()
    # The barriers' table comes from the same curves: each seed pair's barrier is the
    # rise of its curve in interpolation_pairs above the line between its ends.
    barriers = tables["barriers_pairs"]
    for (pair, first_seed, second_seed), curve in pairs.groupby(
        ["pair", "first_seed", "second_seed"], sort=False
    ):
        row = barriers[(barriers["pair"] == pair) & (barriers["first_seed"] == first_seed)
                       & (barriers["second_seed"] == second_seed)]  # fmt: skip
        loss = curve.sort_values("lam")["loss"].to_numpy()
        rise = max(loss[1] - (loss[0] + loss[2]) / 2, 0.0)
        assert math.isclose(float(row["loss_barrier"].iloc[0]), rise, rel_tol=1e-9, abs_tol=1e-12)


def test_the_figure_shades_the_points_interval_only_where_the_table_has_it():
    from matplotlib.collections import PolyCollection

    from transferlens.report.figures_interpolation import interpolation_caption, plot_interpolation

    tables = analyse_interpolation(StubContext(), InterpolationSettings(points=3, n_bootstrap=20))
    curves = ordered("interpolation", tables["interpolation"])
    old = curves.drop(columns=list(CURVE_INTERVALS))  # a table written before the intervals
    for frame, bands in ((curves, True), (old, False)):
        figure = plot_interpolation(frame, tables["barriers"], ["t"], {"t": "multiclass"})
        shaded = [
            artist
            for axes in figure.axes
            for artist in axes.collections
            if isinstance(artist, PolyCollection)
        ]
        assert bool(shaded) == bands
        assert ("Shaded: each point's 95% interval" in interpolation_caption(frame)) == bands
